"""Can the backbone read a memory that already holds the key? RMT's read slot filled by oracles, zero-shot.

    python scripts/memory_oracle.py --backbone smollm2-135m --segment-length 96 --samples 100

Two-segment passkey samples of answer training (``needles: earlier``: the key in segment 1, the question in
segment 2, the training layout). Segment 2 is read by an untrained RMT whose read memory (m vectors, taken at the m
positions of segment 1 that end with the key's last digit) is replaced by:
the learned initial memory (what an untrained writer gives: the floor), the needle's token embeddings (the key as
ordinary tokens: what a perfect writer of input-like vectors gives), the needle's last-layer hidden states after
the final norm (the kind of vector RMT writes, taken where the key is), those rescaled to the embeddings' RMS,
the states one position earlier (each predicts a needle token), their predictions as soft tokens, and the
needle's residual stream after a few layers (where a memory could be written instead). Exact = greedy decoding
reproduces the key. If the reader cannot use states that hold the key, training must teach reading and writing
together; if it can, the writer is what has to learn.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from hmtbench.backbones import load_backbone
from hmtbench.build import build_method
from hmtbench.config import method_config
from hmtbench.engine import IGNORE, segment_batch
from hmtbench.methods.hf_calls import causal_attention, last_hidden_states
from hmtbench.methods.rmt import RMTState
from hmtbench.stats import wilson_interval
from hmtbench.training.answers import AnswerSampler
from hmtbench.training.config import CurriculumSettings


def needle_positions(sampler: AnswerSampler, tokenizer, rows: int, size: int, m: int) -> torch.Tensor:
    """(rows, m) positions in segment 1 that end where each sample's key ends (the key and what precedes it)."""
    ends = []
    for row in range(rows):
        sample = sampler.sample(row, 2)
        upto_key = tokenizer("\nThe pass key is " + sample.meta["values"][0], add_special_tokens=False)["input_ids"]
        ends.append(min(sample.meta["needle_starts"][0] + len(upto_key), size))
    return torch.tensor([[end - m + j for j in range(m)] for end in ends]).clamp(min=0)


def soft_tokens(model, hidden: torch.Tensor) -> torch.Tensor:
    """The expected input embedding of each hidden state's next-token distribution (softmax of the head)."""
    probabilities = model.backbone.get_output_embeddings()(hidden).softmax(-1)
    return probabilities @ model.backbone.get_input_embeddings().weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--segment-length", type=int, default=96)
    parser.add_argument("--memory-tokens", type=int, default=16)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=3407)
    args = parser.parse_args()

    backbone = load_backbone(args.backbone, device="cpu", dtype="fp32")
    config = dataclasses.replace(method_config("rmt"), memory_tokens=args.memory_tokens)
    model = build_method(backbone, config, args.segment_length, seed=args.seed).eval()
    size, m = model.segment_tokens, args.memory_tokens
    sampler = AnswerSampler(CurriculumSettings(task="passkey", segments=[2], needles="earlier"), backbone.tokenizer,
                            size, args.seed)
    ids, lengths, scored, prompts, _ = sampler.batch(0, args.samples, 2)
    batch = segment_batch(ids, lengths, size, scored, prompts)
    at = needle_positions(sampler, backbone.tokenizer, args.samples, size, m)

    with torch.no_grad():
        first = batch.segments[:, 0]
        embeds = model.embed(first)
        hidden = last_hidden_states(backbone.model, embeds)  # (B, S, d) after the final norm
        rms = embeds.pow(2).mean(-1, keepdim=True).sqrt().mean()
        pick = at[..., None].expand(-1, -1, embeds.shape[-1])
        needle_hidden = hidden.gather(1, pick)
        earlier = hidden.gather(1, (pick - 1).clamp(min=0))
        oracles = {
            "learned initial memory (untrained writer)": model.memory.expand(args.samples, -1, -1),
            "needle token embeddings": embeds.gather(1, pick),
            "needle last hidden states (post-norm)": needle_hidden,
            "  the same, rescaled to the embeddings' RMS": needle_hidden * rms
            / needle_hidden.pow(2).mean(-1, keepdim=True).sqrt(),
            "  one position earlier (each predicts a needle token)": earlier,
            "  their predictions as soft tokens (softmax @ embeddings)": soft_tokens(model, earlier),
        }
        with causal_attention(backbone.model):
            layers = backbone.model.base_model(inputs_embeds=embeds, use_cache=False, output_hidden_states=True)
        depth = len(layers.hidden_states) - 1
        for layer in sorted({1, depth // 4, depth // 2, 3 * depth // 4}):
            state = layers.hidden_states[layer].gather(1, pick)
            oracles[f"needle residual stream after layer {layer} of {depth}"] = state
        targets = batch.targets[:, 1]
        wanted = targets != IGNORE
        print(f"{args.backbone}, RMT m {m}, {size} text tokens per segment, {args.samples} samples; "
              f"hidden RMS {needle_hidden.pow(2).mean().sqrt():.3f} vs embedding RMS {rms:.3f}")
        for name, memory in oracles.items():
            state = RMTState(args.samples, memory=memory)
            _, predicted, _ = model.predict(state, batch.segments[:, 1], batch.lengths[:, 1], targets)
            exact = int(((predicted == targets) | ~wanted).all(-1).sum())
            low, high = wilson_interval(exact, args.samples)
            print(f"{name:58s} exact {exact:3d}/{args.samples}  [{low:.2f}, {high:.2f}]")


if __name__ == "__main__":
    main()
