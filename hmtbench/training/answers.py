"""Training samples of a QA task whose context spans a given number of segments (answer training).

Generated tasks (passkey, multi-fact) draw each sample's length and needle depths from the sample's
index, in the ``train`` split's seeds (never an evaluation sample); a task read from data (BABILong,
a ``.jsonl``) is tokenized once and its samples grouped by the segments they span. The loss is on the
answer and its end (``Task.answer_ids``: a line break or EOS), so a trained model stops after the answer.
A micro-batch is a pure function of its index, so a resumed run reads what an uninterrupted run would.
Tasks ``held_out`` from training (the unseen passkey wordings) are refused.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import Tensor

from hmtbench.answer_layout import ANSWER_ROOM, answer_layout_segments
from hmtbench.errors import HmtbenchError
from hmtbench.qa.answers import qa_rows
from hmtbench.qa.runner import prepare_samples
from hmtbench.qa.tasks import TaskOptions, task_factory
from hmtbench.training.config import CurriculumSettings

APART_DRAWS = 32  # needles: apart draws a sample's depths at most this often


class AnswerSampler:
    """(ids, lengths, answer mask, prompt lengths) of micro-batches whose prompt + answer span N segments."""

    def __init__(self, curriculum: CurriculumSettings, tokenizer: Any, segment_tokens: int, seed: int,
                 least: int = 0) -> None:
        self.segment_tokens, self.seed, self.tokenizer, self.curriculum = segment_tokens, seed, tokenizer, curriculum
        self.least = max(least, 1)  # the method's sensory tokens: the answer layout's smallest first segment
        self.layout = curriculum.layout  # answer: prompts end ANSWER_ROOM before a segment ends | start (see sample)
        options = TaskOptions(tokenizer=tokenizer, seed=seed, filler=curriculum.filler, data=curriculum.data,
                              split="train")
        self.task = task_factory(curriculum.task)(options)
        self.name = self.task.name
        if self.task.held_out:
            raise HmtbenchError(f"--task {self.name} is held out of training: its wording tests whether a trained "
                                "memory retrieves beyond the templates it learned; train on passkey or multi-fact")
        self.by_segments: dict[int, list[tuple[Tensor, list[int]]]] = {}
        if not self.task.generates:
            self._group(curriculum.segments)
            return
        self.shortest = self.task.fixed_tokens() + 8  # a few filler tokens at least
        facts = self.task.facts_per_sample
        if curriculum.needles == "apart" and facts > 1 and curriculum.segments[0] <= facts:
            raise HmtbenchError(f"needles: apart puts each of {self.name}'s {facts} facts in a segment of its own "
                                f"before the question's: start the curriculum at {facts + 1} segments or more")
        room = curriculum.segments[0] * segment_tokens - ANSWER_ROOM
        if room < self.shortest:
            raise HmtbenchError(f"{self.name}'s shortest prompt takes {self.shortest} tokens, more than the "
                                f"{curriculum.segments[0]} segment(s) of {segment_tokens} text tokens of the first "
                                "curriculum level hold; start the curriculum at more segments or raise "
                                "--segment-length")

    def _group(self, levels: list[int]) -> None:
        prepared, _ = prepare_samples(self.task, self.task.load(), self.tokenizer, None)
        for item in prepared:
            answer = self.task.answer_ids(item.sample, self.tokenizer)
            total = len(item.prompt_ids) + len(answer)
            spans = (math.ceil(total / self.segment_tokens) if self.layout == "start" else
                     answer_layout_segments(len(item.prompt_ids), total, self.segment_tokens, self.least))
            self.by_segments.setdefault(spans, []).append((item.prompt_ids, answer))
        missing = [n for n in levels if not self.by_segments.get(n)]
        if missing:
            have = ", ".join(f"{n}: {len(v)}" for n, v in sorted(self.by_segments.items()))
            raise HmtbenchError(f"--task {self.name} has no sample spanning {missing} segments (samples by segments: "
                                f"{have}); set curriculum.segments to levels the data has")

    def batch(self, index: int, batch_size: int, segments: int) -> tuple[Tensor, ...]:
        """qa_rows' (ids, lengths, answer mask, prompt lengths) and (B,) bool: every fact of the row lies before
        the question's segment (generated tasks; False where the data does not say)."""
        rows = [self._row(index * batch_size + row, segments) for row in range(batch_size)]
        return (*qa_rows([p for p, _, _ in rows], [a for _, a, _ in rows]), torch.tensor([e for _, _, e in rows]))

    def _row(self, k: int, segments: int) -> tuple[Tensor, list[int], bool]:
        if not self.task.generates:
            pool = self.by_segments[segments]
            order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed + k // len(pool)))
            return (*pool[int(order[k % len(pool)])], False)
        sample = self.sample(k, segments)
        answer = self.task.answer_ids(sample, self.tokenizer)
        last = max(sample.meta["needle_ends"]) - 1  # the last token of the latest fact
        back = segments_back(len(sample.prompt_ids), last, self.segment_tokens, self.layout)
        return sample.prompt_ids, answer, back > 0

    def sample(self, k: int, segments: int) -> Any:
        """Generated sample ``k`` of a level: its prompt spans ``segments`` segments of the answer layout (eval-qa's:
        the prompt ends ``ANSWER_ROOM`` positions before the last segment ends), its facts' depths are uniform over
        the context, or (``needles: earlier``, from 2 segments on) over the segments before the question's, except
        for a ``question_segment_share`` of the samples, whose facts sit in the question's own segment; ``needles:
        apart`` as earlier, each fact in a segment of its own. ``layout: start``: the prompt ends anywhere in the
        last of ``segments`` segments cut from its start (at least ``ANSWER_ROOM`` positions before its end, room
        for the answer), and the question's segment is the one the prompt ends in. ``sample_length: full``: every
        prompt as long as the level allows (both layouts then cut it alike)."""
        rng = random.Random(f"curriculum-{self.seed}-{k}")
        size = self.segment_tokens
        high = segments * size - ANSWER_ROOM
        if self.layout == "start":
            low = max(self.shortest, (segments - 1) * size + 1)
        else:
            low = self.shortest if segments == 1 else max(self.shortest,
                                                          (segments - 1) * size + self.least - ANSWER_ROOM)
        earlier = self.curriculum.needles in ("earlier", "apart") and segments > 1
        share = self.curriculum.question_segment_share
        near = earlier and share > 0 and rng.random() < share  # no draw at share 0: earlier samples stay as they were
        if earlier:  # room before the question's segment for the instructions and facts (`shortest` bounds them)
            low = min(high, max(low, size - ANSWER_ROOM + self.shortest))
        length = high if self.curriculum.sample_length == "full" else rng.randint(low, high)
        reach = 1.0
        if earlier:  # the facts end before the question's segment starts; depth is a share of the filler, and
            # instructions, facts and question take at most `shortest` tokens
            boundary = (length - 1) // size * size if self.layout == "start" else length + ANSWER_ROOM - size
            reach = max(0.0, (boundary - self.shortest) / max(1, length - self.shortest))  # the shortest: depth 0
        facts = self.task.facts_per_sample
        if near:  # every fact starts at or after the question segment's first token (the filler outnumbers
            # length - shortest tokens, so a depth of boundary / (length - shortest) is past the boundary)
            start = min(1.0, boundary / max(1, length - self.shortest))
            depths = sorted(start + (1.0 - start) * rng.random() for _ in range(facts))
        elif earlier and self.curriculum.needles == "apart" and facts > 1:
            return self._facts_apart(k, length, reach, rng)
        else:
            depths = sorted(reach * rng.random() for _ in range(facts))
        return self.task.sample(k, length, depths)

    def _facts_apart(self, k: int, length: int, reach: float, rng: random.Random) -> Any:
        """Sample ``k`` with one fact per equal share of the earlier context, drawn again until every fact lies
        whole in a segment no other fact touches; after ``APART_DRAWS`` draws the last stands (SmolLM2, three facts,
        192-token segments: 27 of 200 samples at 4 segments, none from 5 on; scripts/key_distance.py)."""
        facts = self.task.facts_per_sample
        for _ in range(APART_DRAWS):
            sample = self.task.sample(k, length, [reach * (i + rng.random()) / facts for i in range(facts)])
            if facts_apart(sample, self.segment_tokens, self.layout):
                break
        return sample


def segments_back(prompt_length: int, position: int, segment_tokens: int, layout: str = "answer") -> int:
    """How many segments before the question's (0: the question's own) prompt token ``position`` lies, in the answer
    layout: segments end ``ANSWER_ROOM`` positions after the prompt, every ``segment_tokens`` back; ``layout="start"``:
    segments cut from the prompt's start, the question's the one its last token falls in."""
    if layout == "start":
        return (prompt_length - 1) // segment_tokens - position // segment_tokens
    return (prompt_length + ANSWER_ROOM - 1 - position) // segment_tokens


def facts_apart(sample: Any, segment_tokens: int, layout: str = "answer") -> bool:
    """Whether each fact of a generated sample lies whole in one segment of the layout, and no two in one."""
    length = len(sample.prompt_ids)

    def back(position: int) -> int:
        return segments_back(length, position, segment_tokens, layout)

    spans = [{back(first), back(end - 1)}
             for first, end in zip(sample.meta["needle_starts"], sample.meta["needle_ends"], strict=True)]
    return all(len(span) == 1 for span in spans) and len(set().union(*spans)) == len(spans)
