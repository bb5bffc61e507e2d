"""A memory written in the backbone's input-embedding code: a span of the segment, chosen by attention.

RMT and HMT write a memory as last-layer hidden states, which the next segment reads as if they were
input embeddings. A pretrained backbone does not read that code: filled with the last-layer states at a
passkey, its read slot answers 0/100, filled with the key's own token embeddings 59/100
(``scripts/memory_oracle.py``, results/cpu-memory-oracle/). So training must teach the writer and the
reader a new code together, from a loss that stays at chance until both work.

The span write (a departure from both papers, docs/methods.md) writes in the code the backbone already
reads. One query from the last write slot's hidden state scores every text position t by
``wq(h_write) . wk(h_t) / sqrt(h)``; one more score, ``stay(h_write)``, stands for the memory read.
With ``a = softmax([stay, scores])``, slot j of the new memory is

    a_stay * read_j  +  sum_t a_t * E[t - (m - 1) + j]

the m input embeddings ending at t (a span may reach back into the sensory tokens; where it would
reach into the read memory it holds ``blank``, the mean input embedding), or the memory read kept.
Padding positions score -inf. The new memory is a convex combination of input embeddings and of
earlier memories, so it stays in the embedding code through any number of segments.
A method with this write starts from a blank memory (m copies of ``blank``), not a learned one: a
learned initial memory is a soft prompt that ``stay`` or a span reaching into the read slot passes
on, and a CPU pilot (SmolLM2, passkey) learned that shortcut instead of finding the key. (Not zeros:
an all-zero input row gave SmolLM2 NaN gradients in the first layer's backward.)

``choice: hard`` writes, outside training (no gradients), the candidate of the largest weight exactly
(stay or one span) instead of the mixture: the same trained writer, without the leak of a mixture that
compounds over thousands of segments.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hmtbench.methods.choice import chosen

KEY_DIM = 64  # width of the query/key projections that choose the span


class SpanWrite(nn.Module):
    """Chooses, from the last write slot's state, the span of input embeddings (or the memory read) to keep."""

    def __init__(self, embeddings: Tensor, *, dtype: torch.dtype, choice: str = "soft") -> None:
        """``embeddings``: the backbone's (V, d) input embedding matrix (``blank`` is its mean row)."""
        super().__init__()
        self.choice = choice
        hidden_size, device = embeddings.shape[1], embeddings.device
        self.register_buffer("blank", embeddings.detach().float().mean(0).to(dtype), persistent=False)
        self.wq = nn.Linear(hidden_size, KEY_DIM, bias=False, dtype=dtype, device=device)
        self.wk = nn.Linear(hidden_size, KEY_DIM, bias=False, dtype=dtype, device=device)
        self.stay = nn.Linear(hidden_size, 1, dtype=dtype, device=device)

    def weights(self, write_state: Tensor, text_states: Tensor, lengths: Tensor) -> Tensor:
        """(B, 1 + S) fp32 weights [stay, text positions] from the (B, d) write state and (B, S, d) text states."""
        query = self.wq(write_state.to(self.wq.weight.dtype))
        keys = self.wk(text_states.to(self.wk.weight.dtype))
        scores = torch.einsum("bh,bsh->bs", query, keys).float() / math.sqrt(KEY_DIM)
        padding = torch.arange(scores.shape[1], device=scores.device)[None] >= lengths[:, None]
        scores = scores.masked_fill(padding, float("-inf"))
        stay = self.stay(write_state.to(self.stay.weight.dtype)).float()
        return torch.cat([stay, scores], dim=1).softmax(dim=-1)

    def forward(self, embeds: Tensor, states: Tensor, memory: Tensor, text_start: int, lengths: Tensor) -> Tensor:
        """The (B, m, d) memory written by one segment.

        embeds: (B, P, d) the backbone's input, [read memory (m) | sensory (k) | text (S) | ...];
        states: (B, S + m, d) last hidden states from the text's first position on, the write slot's
        ``m`` positions right after each row's ``lengths`` (B,) real tokens; memory: (B, m, d) the memory read.
        """
        m = memory.shape[1]
        size = states.shape[1] - m
        write_state = states.gather(1, (lengths + m - 1)[:, None, None].expand(-1, 1, states.shape[-1]))[:, 0]
        weights = chosen(self.weights(write_state, states[:, :size], lengths), self.choice)  # (B, 1 + S)
        before = min(m - 1, text_start - m)  # sensory positions a span may reach back into
        window = embeds[:, text_start - before : text_start + size]
        blank = self.blank.to(embeds.dtype).expand(embeds.shape[0], m - 1 - before, -1)
        window = torch.cat([blank, window], dim=1)  # (B, S + m - 1, d): every span's positions
        spans = window.unfold(1, size, 1)  # (B, m, d, S): [b, j, :, t] = E[t - (m - 1) + j]
        copied = torch.einsum("bs,bjds->bjd", weights[:, 1:].to(embeds.dtype), spans)
        return weights[:, :1, None].to(embeds.dtype) * memory.to(embeds.dtype) + copied
