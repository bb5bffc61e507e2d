"""How far back the keys of a passkey training curriculum sit: segments between each key and the question's.

    python scripts/key_distance.py --text-tokens 224 --segments 2,3,4 --samples 400

A recurrent memory that only copies the segment it just read answers the keys one segment back (distance 1); every
larger distance needs it to keep a memory through segments without the key. The training samples are those of
``hmtbench train --task passkey`` with ``curriculum.needles: earlier`` (the seed is the recipe's train.seed); the
distance is counted in the answer layout, whose segments end ``ANSWER_ROOM`` positions after the prompt.
"""

from __future__ import annotations

import argparse
from collections import Counter

from hmtbench.backbones import load_backbone
from hmtbench.engine import ANSWER_ROOM
from hmtbench.training.answers import AnswerSampler
from hmtbench.training.config import CurriculumSettings, TrainSettings


def key_distances(sampler: AnswerSampler, tokenizer, segments: int, samples: int, text_tokens: int) -> Counter:
    """Counter of segments-before-the-question's over the first ``samples`` training samples of a level."""
    counts: Counter = Counter()
    for index in range(samples):
        sample = sampler.sample(index, segments)
        ids = list(sample.prompt_ids)
        key = tokenizer(sample.answers[0], add_special_tokens=False)["input_ids"]
        end = next(i for i in range(len(ids)) if ids[i : i + len(key)] == key) + len(key) - 1
        counts[(len(ids) + ANSWER_ROOM - 1 - end) // text_tokens] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--text-tokens", type=int, default=224, help="text tokens per segment (RMT m 16 at L 256)")
    parser.add_argument("--segments", default="2,3,4", help="curriculum levels to count")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    args = parser.parse_args()
    tokenizer = load_backbone(args.backbone, dtype="fp32", device="cpu").tokenizer
    levels = [int(n) for n in args.segments.split(",")]
    curriculum = CurriculumSettings(task="passkey", segments=levels, needles="earlier")
    sampler = AnswerSampler(curriculum, tokenizer, args.text_tokens, seed=args.seed)
    for segments in levels:
        counts = key_distances(sampler, tokenizer, segments, args.samples, args.text_tokens)
        shares = ", ".join(f"{d} back: {n}/{args.samples}" for d, n in sorted(counts.items()))
        print(f"{segments} segments: {shares}")


if __name__ == "__main__":
    main()
