"""How often a training sample's key sits whole in HMT's sensory window, where the backbone reads it without memory.

    python scripts/sensory_window.py recipes/smollm2-135m-passkey-hmt-span.yaml --seeds 1,2,3,3407

HMT's sensory memory shows each segment the previous segment's last ``k`` tokens again. A key whose digits all fall
there is answered by attention alone, so a model whose memory learned nothing still answers that share of a
level's samples. The samples are the training sampler's own (``AnswerSampler``, the recipe's curriculum, split
train); the key's digits are the tokens of its fact that hold a digit (passkey and multi-fact answers are digits).
``--text-tokens`` is the method's text tokens per segment (HMT at L 256, m 16 with the span write, k 32: 192).
"""

from __future__ import annotations

import argparse
import functools

from hmtbench.config import from_dict, load_yaml
from hmtbench.lmeval.passkey import load_tokenizer
from hmtbench.training.answers import AnswerSampler, segments_back
from hmtbench.training.config import CurriculumSettings


def window_share(sampler: AnswerSampler, tokenizer, segments: int, samples: int, window: int) -> float:
    """The share of ``samples`` samples of ``segments`` segments whose first fact's digits all lie in the last
    ``window`` positions before the question's segment."""
    inside = 0
    for k in range(samples):
        sample = sampler.sample(k, segments)
        start, end = sample.meta["needle_starts"][0], sample.meta["needle_ends"][0]
        digits = [start + i for i, token in enumerate(sample.prompt_ids[start:end])
                  if any(c.isdigit() for c in tokenizer.decode([token]))]
        back = functools.partial(segments_back, len(sample.prompt_ids), segment_tokens=sampler.segment_tokens,
                                 layout=sampler.layout)  # segments before the question's, as training cut them
        # in the previous segment, and within `window` positions of the question's segment
        inside += bool(digits) and back(digits[-1]) == 1 and back(digits[0]) == 1 and back(digits[0] + window) == 0
    return inside / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--seeds", default="1,2,3,3407", help="training seeds (the sampler's streams)")
    parser.add_argument("--segments", type=int, default=2, help="the curriculum level's segments")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--text-tokens", type=int, default=192)
    parser.add_argument("--window", type=int, default=32, help="k: the sensory tokens")
    args = parser.parse_args()
    recipe = load_yaml(args.recipe)
    curriculum = from_dict(CurriculumSettings, recipe["curriculum"])
    tokenizer = load_tokenizer(recipe.get("backbone", "smollm2-135m"))
    for seed in (int(s) for s in args.seeds.split(",")):
        sampler = AnswerSampler(curriculum, tokenizer, args.text_tokens, seed, args.window)
        share = window_share(sampler, tokenizer, args.segments, args.samples, args.window)
        print(f"seed {seed}: {share:.3f} of {args.samples} samples of {args.segments} segments have the key's "
              f"digits in the last {args.window} tokens before the question's segment")


if __name__ == "__main__":
    main()
