"""QA through a memory method: tokenize samples, score the gold answer, generate, measure.

Two measures per sample, both with the context held in the method's memory:

* answer perplexity: the prompt followed by the gold answer is read by the shared segment loop
  (``segment_batch(..., scored=mask)``), and the mask marks exactly the answer tokens, so the NLL
  covers the answer and nothing else (the reference scored the tail of the sample instead);
* the greedy answer: free greedy decoding from the prompt alone (``hmtbench.generation``), stopped per sample by the
  end-of-sequence id, a line break for one-line tasks, or ``max_new_tokens``; and the teacher-forced argmax at every
  answer position (``teacher_forced_exact``: greedy decoding would reproduce the whole gold answer).

A batch of samples is read once: the answer pass (``qa/answers.py``) reads the context segments for the whole batch,
scores the gold answers, and keeps each sample's memory where its last prompt segment opens; decoding starts from
there. The prompt never holds the answer (docs/methods.md, "Departures", 9). With ``decode=False`` only the teacher-
forced pass runs, and the answer metrics come from its argmax (exact match and accuracy: ``teacher_forced_exact``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hmtbench import distributed
from hmtbench.engine import score_segments
from hmtbench.errors import HmtbenchError
from hmtbench.generation import decode
from hmtbench.methods.base import SegmentMethod
from hmtbench.oom import HalvingBatches
from hmtbench.qa.answers import qa_batch, read_answers
from hmtbench.qa.metrics import METRICS, score_answer
from hmtbench.qa.partial import PartialRun
from hmtbench.qa.tasks.base import Sample, Task


@dataclass
class PreparedSample:
    sample: Sample
    prompt_ids: torch.Tensor  # (T,) int32: the tokenizer's special tokens included; no answer token
    answer_ids: list[int]  # answer_prefix + first gold answer + its end (``Task.answer_ids``)


def fit_context(task: Task, sample: Sample, tokenizer: Any, length: int) -> bool:
    """Cut ``sample``'s context in the middle so its prompt is ``length`` tokens; False if it is shorter."""
    fixed = len(tokenizer(task.head(sample) + task.tail(sample), add_special_tokens=True)["input_ids"])
    budget = length - fixed
    if budget < 1:
        raise HmtbenchError(f"--context-length {length} leaves no room for the context: {task.name}'s prompt "
                            f"without it already takes {fixed} tokens")
    ids = tokenizer(sample.context, add_special_tokens=False)["input_ids"]
    if len(ids) < budget:
        return False
    head = budget // 2
    sample.context = tokenizer.decode(ids[:head]) + tokenizer.decode(ids[len(ids) - (budget - head) :])
    return True


def prepare_samples(task: Task, samples: list[Sample], tokenizer: Any,
                    context_length: int | None) -> tuple[list[PreparedSample], int]:
    """Token ids of every sample's prompt and gold answer, and how many samples were too short."""
    prepared, skipped = [], 0
    for sample in samples:
        if context_length is not None and not task.builds_length:
            if not fit_context(task, sample, tokenizer, context_length):
                skipped += 1
                continue
        answer_ids = task.answer_ids(sample, tokenizer)  # the answer and its end: exact means the whole answer
        prompt_ids = sample.prompt_ids  # a task that builds its prompt in tokens
        if prompt_ids is None:
            prompt_ids = torch.tensor(tokenizer(task.prompt(sample), add_special_tokens=True)["input_ids"],
                                      dtype=torch.int32)
        prepared.append(PreparedSample(sample, prompt_ids, answer_ids))
    if not prepared and samples:
        raise HmtbenchError(f"all {skipped} samples of {task.name} have a context shorter than --context-length "
                            f"{context_length} tokens; lower --context-length")
    return prepared, skipped


def answer_nll(method: SegmentMethod, prompt_ids: Any, answer_ids: list[int]) -> tuple[float, int]:
    """(summed NLL, tokens) of the answer tokens after the prompt, read through ``method`` by the engine."""
    with torch.inference_mode():
        batch = qa_batch([prompt_ids], [answer_ids], method.segment_tokens, method.device, method.sensory_tokens)
        nll, tokens = score_segments(method, batch)
    return float(nll.double().sum()), int(tokens.sum())


def stop_ids(tokenizer: Any, backbone: Any) -> set[int]:
    """The end-of-sequence ids of the tokenizer and the backbone's generation config."""
    ids = {tokenizer.eos_token_id}
    config = getattr(backbone, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos])
    return {i for i in ids if i is not None}


def line_stop(tokenizer: Any) -> Callable[[list[int]], bool]:
    """Stop once the generation holds a line break after some text (short-answer tasks)."""
    return lambda ids: "\n" in tokenizer.decode(ids, skip_special_tokens=True).lstrip()


@dataclass
class QAResult:
    records: list[dict[str, Any]] = field(default_factory=list)  # one per sample, for the JSONL
    nll_sum: float = 0.0
    answer_tokens: int = 0
    tokens_read: int = 0  # prompt + answer + generated tokens run through the method
    tokens_skipped: int = 0  # prompt tokens no state could carry to an answer, never run (plain, overlap)

    @property
    def answer_ppl(self) -> float:
        return math.exp(self.nll_sum / self.answer_tokens) if self.answer_tokens else math.nan

    def mean(self, metric: str) -> float:
        values = [r[metric] for r in self.records]
        return sum(values) / len(values) if values else math.nan

    @property
    def decoding_agreement(self) -> float:
        """Share of samples whose free-decoding exact match equals their teacher-forced exact match."""
        same = [float(r["exact_match"] == r["teacher_forced_exact"]) for r in self.records]
        return sum(same) / len(same) if same else math.nan

    def add(self, record: dict[str, Any], item: PreparedSample) -> None:
        """Count one sample's predictions record (samples in order: the sums are then the same for any split)."""
        self.records.append(record)
        self.nll_sum += record["answer_nll"]
        self.answer_tokens += record["answer_tokens"]
        skipped = record.get("tokens_skipped", 0)
        self.tokens_skipped += skipped
        self.tokens_read += len(item.prompt_ids) + len(item.answer_ids) + record["generated_tokens"] - skipped


def answer_records(method: SegmentMethod, runner: Any, task: Task, items: list[PreparedSample], tokenizer: Any,
                   max_new_tokens: int, decode_answers: bool = True) -> list[dict[str, Any]]:
    """Predictions records of a batch of samples: one read of their contexts, the gold answers scored teacher-forced,
    then (``decode_answers``) every sample's greedy answer decoded from the memory that read left."""
    prompts = [item.prompt_ids for item in items]
    scores, openings = read_answers(method, runner, prompts, [i.answer_ids for i in items], openings=decode_answers)
    generations = None
    if decode_answers:
        generations = decode(method, openings, prompts, max_new_tokens, stop_ids=stop_ids(tokenizer, method.backbone),
                             stop=line_stop(tokenizer) if task.one_line else None)
    records = []
    for row, (item, score) in enumerate(zip(items, scores, strict=True)):
        references = task.references(item.sample)
        forced = float(score.exact(item.answer_ids))
        if generations is None:
            text = tokenizer.decode(score.predicted, skip_special_tokens=True)
            metrics = {**score_answer(task.postprocess(text), references), "accuracy": forced, "exact_match": forced}
            generated, decoding = len(score.predicted), {}
        else:
            generation = generations[row]
            text = tokenizer.decode(generation.token_ids, skip_special_tokens=True)
            metrics = score_answer(task.postprocess(text), references)
            generated = len(generation.token_ids)
            decoding = {"context_segments": generation.context_segments,
                        "segments_opened": generation.segments_opened}
        records.append({
            "id": item.sample.id, "question": item.sample.question, "references": references,
            "prediction": task.postprocess(text), "generation": text, **metrics, "teacher_forced_exact": forced,
            "answer_nll": score.nll, "answer_tokens": score.tokens, "answer_ppl": math.exp(score.nll / score.tokens),
            "prompt_tokens": len(item.prompt_ids), "generated_tokens": generated,
            "tokens_skipped": score.tokens_skipped, **decoding, "meta": item.sample.meta,
        })
    return records


def batches(prepared: list[PreparedSample], batch_size: int) -> list[list[int]]:
    """Sample indices in batches of similar prompt length (longest first), so padding stays small."""
    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i].prompt_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _score_piece(method: SegmentMethod, runner: Any, task: Task, items: list[PreparedSample], tokenizer: Any,
                 max_new_tokens: int, decode_answers: bool, piece: slice) -> list[dict[str, Any]]:
    return answer_records(method, runner, task, items[piece], tokenizer, max_new_tokens, decode_answers)


def evaluate_qa(method: SegmentMethod, runner: Any, task: Task, prepared: list[PreparedSample], tokenizer: Any,
                max_new_tokens: int, batch_size: int = 1, on_batch: Callable[[int], None] | None = None,
                decode_answers: bool = True, partial: PartialRun | None = None,
                halving: HalvingBatches | None = None) -> QAResult:
    """Every sample through ``method``, ``batch_size`` at a time (``answer_records``); the records in sample order.

    ``on_batch(prompt + answer tokens)`` after each batch. Several processes deal whole batches round-robin
    (``distributed.deal``) and every process gets every record: each batch is scored as one process scores it.
    ``partial`` keeps each scored batch as it goes; the batches it already holds are not scored again (a resumed run).
    With ``halving``, a batch that runs out of device memory is scored in pieces of fewer samples (``hmtbench.oom``).
    """
    done, _ = partial.load() if partial is not None else ({}, 0.0)
    scored: list[tuple[int, dict[str, Any]]] = []
    for _, indices in distributed.deal(batches(prepared, batch_size)):
        if all(i in done for i in indices):
            scored += [(i, done[i]) for i in indices]
            continue
        items = [prepared[i] for i in indices]
        started = time.perf_counter()
        score = functools.partial(_score_piece, method, runner, task, items, tokenizer, max_new_tokens, decode_answers)
        records = [r for part in (halving.run(score, len(items)) if halving else [score(slice(None))]) for r in part]
        if partial is not None:
            partial.add(indices, records, time.perf_counter() - started)
        scored += zip(indices, records, strict=True)
        if on_batch is not None:
            on_batch(sum(len(i.prompt_ids) + len(i.answer_ids) for i in items))
    result = QAResult()
    for k, record in sorted((p for part in distributed.gather_objects(scored) for p in part), key=lambda p: p[0]):
        result.add(record, prepared[k])
    return result


__all__ = ["METRICS", "PreparedSample", "QAResult", "answer_nll", "answer_records", "evaluate_qa", "fit_context",
           "prepare_samples"]
