"""Where the facts of an answer-training curriculum sit, counted in segments of the answer layout.

    python scripts/key_distance.py --text-tokens 224 --segments 2,3,4                  # RMT's passkey levels
    python scripts/key_distance.py --task multi-fact --text-tokens 192 --least 32 --segments 4,5,8 --needles apart

Passkey: segments between each key and the question's. A recurrent memory that only copies the segment it just read
answers the keys one segment back; every larger distance needs it to keep a memory through segments without the key.
Multi-fact: how many samples have each fact whole in a segment of its own (a span write holds one fact per segment).
The samples are those of ``hmtbench train --task ...`` (the seed is the recipes' train.seed; ``--least``: the
method's sensory tokens, as training passes them).
"""

from __future__ import annotations

import argparse
from collections import Counter

from hmtbench.backbones import load_backbone
from hmtbench.training.answers import AnswerSampler, facts_apart, segments_back
from hmtbench.training.config import CurriculumSettings, TrainSettings


def key_distance(sample, tokenizer, text_tokens: int) -> int:
    """Segments between a passkey sample's key (its last digit) and the question's segment."""
    ids = list(sample.prompt_ids)
    key = tokenizer(sample.answers[0], add_special_tokens=False)["input_ids"]
    end = next(i for i in range(len(ids)) if ids[i : i + len(key)] == key) + len(key) - 1
    return segments_back(len(ids), end, text_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--task", default="passkey", choices=["passkey", "multi-fact"])
    parser.add_argument("--needles", default="earlier", choices=["earlier", "apart"])
    parser.add_argument("--text-tokens", type=int, default=224, help="text tokens per segment (RMT m 16 at L 256)")
    parser.add_argument("--least", type=int, default=0, help="the method's sensory tokens (HMT k 32)")
    parser.add_argument("--segments", default="2,3,4", help="curriculum levels to count")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    args = parser.parse_args()
    tokenizer = load_backbone(args.backbone, dtype="fp32", device="cpu").tokenizer
    levels = [int(n) for n in args.segments.split(",")]
    curriculum = CurriculumSettings(task=args.task, segments=levels, needles=args.needles)
    sampler = AnswerSampler(curriculum, tokenizer, args.text_tokens, seed=args.seed, least=args.least)
    for segments in levels:
        samples = [sampler.sample(index, segments) for index in range(args.samples)]
        if args.task == "passkey":
            counts = Counter(key_distance(s, tokenizer, args.text_tokens) for s in samples)
            found = ", ".join(f"{d} back: {n}/{args.samples}" for d, n in sorted(counts.items()))
        else:
            found = f"facts apart: {sum(facts_apart(s, args.text_tokens) for s in samples)}/{args.samples}"
        print(f"{segments} segments: {found}")


if __name__ == "__main__":
    main()
