"""QA through a memory method: tokenize samples, score the gold answer, generate, measure.

Two measures per sample, both with the context held in the method's memory:

* answer perplexity: the prompt followed by the gold answer is read by the shared segment loop
  (``segment_batch(..., scored=mask)``), and the mask marks exactly the answer tokens, so the NLL
  covers the answer and nothing else (the reference scored the tail of the sample instead);
* the greedy answer: for short-answer tasks (``Task.short_answer``: passkey, multi-fact, bAbI) the
  teacher-forced argmax of a batch of samples at once (``qa/answers.py``: exactly what greedy
  decoding gives while it matches the answer); for free-form answers, greedy decoding from the
  prompt alone (``hmtbench.generation``), one sample at a time. The prompt never holds the answer
  (docs/methods.md, "Departures", 9).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hmtbench.engine import IGNORE, score_segments, token_nll
from hmtbench.errors import HmtbenchError
from hmtbench.generation import ReadContext, greedy_generate, prompt_layout
from hmtbench.methods.base import SegmentMethod
from hmtbench.qa.answers import qa_batch, score_answers
from hmtbench.qa.metrics import METRICS, score_answer
from hmtbench.qa.tasks.base import Sample, Task


@dataclass
class PreparedSample:
    sample: Sample
    prompt_ids: torch.Tensor  # (T,) int32: the tokenizer's special tokens included; no answer token
    answer_ids: list[int]  # answer_prefix + first gold answer, no special tokens


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
        answer = sample.answers[0].strip() if sample.answers else ""
        if not answer:
            raise HmtbenchError(f"{task.name} sample {sample.id} has an empty answer; every sample needs one")
        answer_ids = tokenizer(task.answer_prefix + answer, add_special_tokens=False)["input_ids"]
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


@torch.inference_mode()
def answer_nll_and_context(
    method: SegmentMethod, prompt_ids: Any, answer_ids: list[int]
) -> tuple[float, int, ReadContext]:
    """``answer_nll`` plus the memory before the segment decoding opens in, from the same single pass.

    The segments before that one hold prompt tokens only, so the teacher-forced pass reads them
    exactly as generation would: generation starts from the saved state instead of reading the
    context a second time. The loop is ``score_segments``'s (``answer_nll`` is tested equal).
    """
    batch = qa_batch([prompt_ids], [answer_ids], method.segment_tokens, method.device, method.sensory_tokens)
    layout = prompt_layout(method, len(prompt_ids))
    summaries = method.summarize(batch.segments, batch.known)
    state, context, nll = method.initial_state(1), None, []
    for i in range(batch.segments.shape[1]):
        if i == layout.index:
            context = ReadContext(state, layout.start)
        out = method(state, batch.segments[:, i], batch.lengths[:, i], None if summaries is None else summaries[:, i])
        state = out.state
        nll.append(token_nll(out.logits, batch.targets[:, i]).double().sum())
    return float(torch.stack(nll).sum()), int((batch.targets != IGNORE).sum()), context


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

    def add(self, record: dict[str, Any], item: PreparedSample) -> None:
        """Count one sample's predictions record (samples in order: the sums are then the same for any split)."""
        self.records.append(record)
        self.nll_sum += record["answer_nll"]
        self.answer_tokens += record["answer_tokens"]
        skipped = record.get("tokens_skipped", 0)
        self.tokens_skipped += skipped
        self.tokens_read += len(item.prompt_ids) + len(item.answer_ids) + record["generated_tokens"] - skipped


def evaluate_sample(method: SegmentMethod, task: Task, item: PreparedSample, tokenizer: Any,
                    max_new_tokens: int) -> dict[str, Any]:
    """Answer perplexity, greedy answer and metrics of one sample, as one predictions record."""
    nll, tokens, context = answer_nll_and_context(method, item.prompt_ids, item.answer_ids)
    generation = greedy_generate(method, item.prompt_ids, max_new_tokens, context=context,
                                 stop_ids=stop_ids(tokenizer, method.backbone),
                                 stop=line_stop(tokenizer) if task.one_line else None)
    text = tokenizer.decode(generation.token_ids, skip_special_tokens=True)
    prediction = task.postprocess(text)
    references = task.references(item.sample)
    return {
        "id": item.sample.id, "question": item.sample.question, "references": references,
        "prediction": prediction, "generation": text, **score_answer(prediction, references),
        "answer_nll": nll, "answer_tokens": tokens, "answer_ppl": math.exp(nll / tokens) if tokens else None,
        "prompt_tokens": len(item.prompt_ids), "generated_tokens": len(generation.token_ids),
        "context_segments": generation.context_segments, "segments_opened": generation.segments_opened,
        "meta": item.sample.meta,
    }


def short_answer_records(method: SegmentMethod, runner: Any, task: Task, items: list[PreparedSample],
                         tokenizer: Any) -> list[dict[str, Any]]:
    """Predictions records of a batch of short-answer samples, scored in one pass (``qa/answers.py``)."""
    scores = score_answers(method, runner, [i.prompt_ids for i in items], [i.answer_ids for i in items])
    records = []
    for item, score in zip(items, scores, strict=True):
        text = tokenizer.decode(score.predicted, skip_special_tokens=True)
        prediction, references = task.postprocess(text), task.references(item.sample)
        exact = float(score.exact(item.answer_ids))
        records.append({
            "id": item.sample.id, "question": item.sample.question, "references": references,
            "prediction": prediction, "generation": text, **score_answer(prediction, references),
            "accuracy": exact, "exact_match": exact,  # greedy decoding reproduces the answer's tokens exactly
            "answer_nll": score.nll, "answer_tokens": score.tokens, "answer_ppl": math.exp(score.nll / score.tokens),
            "prompt_tokens": len(item.prompt_ids), "generated_tokens": len(score.predicted),
            "tokens_skipped": score.tokens_skipped, "meta": item.sample.meta,
        })
    return records


def batches(prepared: list[PreparedSample], batch_size: int) -> list[list[int]]:
    """Sample indices in batches of similar prompt length (longest first), so padding stays small."""
    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i].prompt_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def evaluate_qa(method: SegmentMethod, runner: Any, task: Task, prepared: list[PreparedSample], tokenizer: Any,
                max_new_tokens: int, batch_size: int = 1, on_batch: Callable[[int], None] | None = None) -> QAResult:
    """Every sample through ``method`` (short answers ``batch_size`` at a time); the records in sample order.

    ``on_batch(prompt + answer tokens)`` after each batch. Several processes deal whole batches round-robin
    (``distributed.deal``) and every process gets every record: each batch is scored as one process scores it.
    """
    from hmtbench import distributed

    scored: list[tuple[int, dict[str, Any]]] = []
    for _, indices in distributed.deal(batches(prepared, batch_size if task.short_answer else 1)):
        items = [prepared[i] for i in indices]
        if task.short_answer:
            records = short_answer_records(method, runner, task, items, tokenizer)
        else:
            records = [evaluate_sample(method, task, item, tokenizer, max_new_tokens) for item in items]
        scored += zip(indices, records, strict=True)
        if on_batch is not None:
            on_batch(sum(len(i.prompt_ids) + len(i.answer_ids) for i in items))
    result = QAResult()
    for k, record in sorted((p for part in distributed.gather_objects(scored) for p in part), key=lambda p: p[0]):
        result.add(record, prepared[k])
    return result


__all__ = ["METRICS", "PreparedSample", "QAResult", "answer_nll", "answer_nll_and_context", "evaluate_qa",
           "fit_context", "prepare_samples"]
