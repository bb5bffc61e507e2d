"""Associative Recurrent Memory Transformer (Rodkin, Kuratov, Bulatov, Burtsev; arXiv 2407.04841).

A segment is read as ``[text | M]``: the same m learned memory embeddings after every segment's text
(no read slot). Under causal attention the text never attends to them; they act only through an
associative matrix per decoder layer l: A_l (D x d) and its normaliser z_l (D), D = 2 nu d_key, both fp32
and both zero before segment 0 (docs/methods.md, "ARMT"):

* read, at every position, before block l:  h <- h + phi(q) A_l / (z_l . phi(q) + eps),  q = W_q h
* write, after the segment, from block l's output m_j at the memory positions (all m at once)::

      k_j = phi(W_k m_j)    v_j = W_v m_j    beta_j = sigmoid(w_b . m_j + b)
      vbar_j = k_j A_l / (z_l . k_j + eps)                     (0 before the first write)
      gamma_j = clip(1 - (z_l . k_j + eps) / |k_j|^2, 0, 1)     (1 before the first write; no gradient)
      A_l <- A_l + sum_j beta_j k_j^T (v_j - vbar_j)           z_l <- z_l + sum_j gamma_j k_j

phi is DPFP (Schlag et al. 2021) with nu = 3, L2-normalised; one head; eps = 1e-5, absolute. The
value projection starts at zero, so an untrained ARMT writes nothing and scores exactly as plain on
its S = L - m text tokens. The read is the per-layer hook (``SegmentMethod.per_layer``); the write is
``next_state`` on the blocks' outputs the hooks kept, for every layer in one batched update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod, trained_field
from hmtbench.methods.hooks import repeated_blocks
from hmtbench.methods.memory import init_memory
from hmtbench.methods.record import Column

NU = 3  # DPFP's nu: D = 2 nu d_key features per key (the official code's fixed value)
EPS = 1e-5  # added to every normaliser, absolute (the official code's)


@dataclass
class ARMTConfig(MethodConfig):
    memory_tokens: int = trained_field(10, "m: memory tokens after each segment's text, written into every layer's "
                                           "associative matrix (official BABILong scripts: 10)")
    key_dim: int = trained_field(64, "d_key: width of each layer's associative keys and queries before the DPFP "
                                     "feature map (D = 6 d_key features; official: 64)")

    def __post_init__(self) -> None:
        if self.memory_tokens < 1:
            raise HmtbenchError(f"--memory-tokens must be at least 1 for armt, got {self.memory_tokens}")
        if self.key_dim < 1:
            raise HmtbenchError(f"--key-dim must be at least 1, got {self.key_dim}")


@dataclass(frozen=True)
class ARMTState(MemoryState):
    matrices: Tensor  # (B, n_layers, D, d) fp32: every layer's associative matrix A_l
    normalizers: Tensor  # (B, n_layers, D) fp32: every layer's z_l


def dpfp(x: Tensor, nu: int = NU) -> Tensor:
    """Deterministic parameter-free projection (..., n) -> (..., 2 nu n), L2-normalised.

    With r = [relu(x), relu(-x)], feature (j - 1) 2n + i is r_i r_{i - j} (indices mod 2n), j = 1..nu.
    """
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)
    features = torch.cat([r * r.roll(shifts=j, dims=-1) for j in range(1, nu + 1)], dim=-1)
    return F.normalize(features, dim=-1)


def associative_read(matrix: Tensor, normalizer: Tensor, features: Tensor) -> Tensor:
    """(B, T, d): phi(q) A / (z . phi(q) + eps) for (B, T, D) features, A (B, D, d) and z (B, D), in fp32."""
    return features @ matrix / (features @ normalizer[..., None] + EPS)


def associative_write(matrix: Tensor, normalizer: Tensor, keys: Tensor, values: Tensor, gates: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """The delta rule with its correction, for m keys at once, from the matrices before them.

    matrix (..., D, d), normalizer (..., D); keys (..., m, D) = phi(W_k m_j), values (..., m, d), gates (..., m).
    Returns the new (matrix, normalizer). Before any write (z = 0) vbar is 0 and gamma is 1.
    """
    scale = torch.einsum("...k,...mk->...m", normalizer, keys) + EPS  # z . k_j + eps
    recalled = torch.einsum("...mk,...kd->...md", keys, matrix) / scale[..., None]  # vbar_j
    empty = (normalizer == 0).all(-1, keepdim=True)  # nothing written yet
    correction = (1 - scale / keys.square().sum(-1)).clamp(0, 1)
    correction = torch.where(empty, torch.ones_like(correction), correction).detach()  # gamma_j
    # the gate scales each value before the outer products: a three-operand einsum would build the (..., m, D, d)
    # products first (1 GB at batch 4 on SmolLM2, kept for backward in training) and sum them afterwards
    matrix = matrix + keys.transpose(-1, -2) @ ((values - recalled) * gates[..., None])
    return matrix, normalizer + torch.einsum("...m,...mk->...k", correction, keys)


class ARMT(SegmentMethod):
    """RMT's memory tokens written into an associative matrix in every layer, read by every position."""

    name = "armt"
    label = "ARMT"
    compared_with = ("rmt",)  # the paper's comparison (BABILong, associative retrieval)
    config_class = ARMTConfig
    read_slot = False
    per_layer = True
    compiled_parts = ("layer_read", "memory_write")
    record_schema = (Column("key_dim", "Int64", "ARMT: d_key, width of the associative keys before DPFP "
                                                "(D = 6 d_key features per layer; null otherwise)"),)

    def __init__(self, backbone: nn.Module, config: ARMTConfig, segment_length: int) -> None:
        super().__init__(backbone, config, segment_length)
        # d: the blocks' width (the embeddings' may differ: OPT projects them in)
        layers, d, k = len(repeated_blocks(backbone)), backbone.config.hidden_size, config.key_dim
        self.features, self.width = 2 * NU * k, d  # D, d
        self.memory = init_memory(backbone, config.memory_tokens)
        # every layer's W_q, W_k (d -> d_key), W_v (d -> d) and gate (d -> 1, with a bias), stacked over layers
        self.query = self._drawn(layers, k, d)
        self.key = self._drawn(layers, k, d)
        self.value = nn.Parameter(torch.zeros(layers, d, d, dtype=self.dtype, device=self.device))
        self.gate = self._drawn(layers, d)
        self.gate_bias = self._drawn(layers)

    def _drawn(self, *shape: int) -> nn.Parameter:
        """Weights as nn.Linear(d, ...) draws its own (uniform in +-1/sqrt(d)), drawn on the CPU in fp32 (the same
        values on every device and dtype)."""
        bound = 1 / math.sqrt(self.width)
        values = torch.empty(*shape, dtype=torch.float32).uniform_(-bound, bound)
        return nn.Parameter(values.to(device=self.device, dtype=self.dtype))

    @property
    def memory_tokens(self) -> int:
        return self.config.memory_tokens

    def record_columns(self) -> dict[str, object]:
        return {**super().record_columns(), "key_dim": self.config.key_dim}

    def initial_state(self, batch_size: int) -> ARMTState:
        layers, d = self.value.shape[:2]
        return ARMTState(
            batch_size,
            matrices=torch.zeros(batch_size, layers, self.features, d, dtype=torch.float32, device=self.device),
            normalizers=torch.zeros(batch_size, layers, self.features, dtype=torch.float32, device=self.device),
        )

    def read_memory(self, state: ARMTState, summary: Tensor | None) -> tuple[Tensor, None]:
        """The learned memory embeddings, the same in every segment (they fill the write slot)."""
        return self.memory.expand(state.batch_size, -1, -1), None

    def read_layer(self, state: ARMTState, layer: int, hidden: Tensor) -> Tensor:
        """Block ``layer``'s input plus its associative read, at every position (B, T, d)."""
        return self.layer_read(hidden, self.query[layer], state.matrices[:, layer], state.normalizers[:, layer])

    @staticmethod
    def layer_read(hidden: Tensor, query: Tensor, matrix: Tensor, normalizer: Tensor) -> Tensor:
        """``hidden`` (B, T, d) plus its read of one layer's matrix (B, D, d) and normaliser (B, D), through that
        layer's W_q (d_key, d); the features and the read in the state's fp32."""
        exact = matrix.dtype
        features = dpfp(F.linear(hidden.to(query.dtype), query).to(exact))  # (B, T, D)
        return hidden + associative_read(matrix, normalizer, features).to(hidden.dtype)

    def next_state(
        self, state: ARMTState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> ARMTState:
        """Every layer's matrix after the delta-rule write of its block's output at the m memory positions."""
        matrices, normalizers = self.memory_write(state.matrices, state.normalizers, layers, self.key, self.value,
                                                  self.gate, self.gate_bias)
        return ARMTState(state.batch_size, matrices=matrices, normalizers=normalizers)

    @staticmethod
    def memory_write(matrices: Tensor, normalizers: Tensor, layers: Tensor, key: Tensor, value: Tensor, gate: Tensor,
                     gate_bias: Tensor) -> tuple[Tensor, Tensor]:
        """Every layer's (matrix, normaliser) after writing ``layers`` (B, n_layers, m, d), the blocks' outputs at
        the memory positions, through the stacked W_k, W_v and gates; keys, values and gates in the state's fp32."""
        outputs, exact = layers.to(key.dtype), matrices.dtype
        keys = dpfp(torch.einsum("blmd,lkd->blmk", outputs, key).to(exact))
        values = torch.einsum("blmd,led->blme", outputs, value).to(exact)
        gates = torch.sigmoid(torch.einsum("blmd,ld->blm", outputs, gate) + gate_bias[:, None]).to(exact)
        return associative_write(matrices, normalizers, keys, values, gates)
