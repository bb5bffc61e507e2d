"""Answer-quality metrics computed offline: ROUGE-L, SQuAD token F1, exact match, containment accuracy.

The same numbers come as an ``evaluate`` module: ``evaluate.load(EVALUATE_MODULE)``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from hmtbench.errors import HmtbenchError

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)
METRICS = ("rouge_l", "f1", "exact_match", "accuracy")
EVALUATE_MODULE = str(Path(__file__).with_name("hmtbench_qa.py"))  # for evaluate.load(...), offline


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD / LongBench word-overlap F1 of the normalised strings (1.0 when both are empty)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def contains(prediction: str, reference: str) -> float:
    """1.0 when the normalised reference occurs in the normalised prediction (passkey, bAbI accuracy)."""
    ref = normalize_answer(reference)
    return float(bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} ")


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    # The settings of `evaluate.load("rouge")`, which the reference calls: no stemming, default tokenizer.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def require_scorers() -> None:
    """Fail before a run, not after it, when a scorer's package is missing (ROUGE-L: rouge-score)."""
    try:
        _rouge_scorer()
    except ImportError as err:
        raise HmtbenchError(f"eval-qa scores ROUGE-L with the rouge-score package, which cannot be imported ({err}); "
                            "install it: pip install rouge-score") from None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of lower-cased alphanumeric tokens)."""
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure


SCORERS = {"rouge_l": rouge_l, "f1": token_f1, "exact_match": exact_match, "accuracy": contains}


def score_answer(prediction: str, references: list[str]) -> dict[str, float]:
    """Every metric, each the best over the references (LongBench's rule for several gold answers)."""
    return {name: max(fn(prediction, ref) for ref in references) for name, fn in SCORERS.items()}


def mean_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Each metric averaged over the samples, a sample's score the best over its references (a string: one)."""
    scores = [score_answer(p, [r] if isinstance(r, str) else list(r))
              for p, r in zip(predictions, references, strict=True)]
    return {name: sum(s[name] for s in scores) / len(scores) if scores else math.nan for name in METRICS}
