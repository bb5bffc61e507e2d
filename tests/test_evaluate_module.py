"""The QA metrics as an ``evaluate`` module: loaded offline from the package, the numbers of ``score_answer``."""

from __future__ import annotations

from pathlib import Path

import evaluate
import pytest

from hmtbench.qa.metrics import EVALUATE_MODULE, METRICS, score_answer

PREDICTIONS = ["The pass key is 68213.", "Paris", "a black cat sat", "nothing of use", "bathroom"]
REFERENCES = [["68213"], ["Paris", "paris, France"], ["the cat sat on the mat", "black cat"], ["kitchen"],
              ["The bathroom."]]


def by_hand() -> dict[str, float]:
    """The mean over samples of each ``score_answer`` value: what eval-qa reports for these answers."""
    scores = [score_answer(p, r) for p, r in zip(PREDICTIONS, REFERENCES, strict=True)]
    return {name: sum(s[name] for s in scores) / len(scores) for name in METRICS}


@pytest.fixture
def qa(tmp_path: Path) -> evaluate.EvaluationModule:
    return evaluate.load(EVALUATE_MODULE, cache_dir=str(tmp_path))  # conftest refuses any network connection


def test_module_gives_score_answer_means_exactly(qa: evaluate.EvaluationModule) -> None:
    result = qa.compute(predictions=PREDICTIONS, references=REFERENCES)
    expected = by_hand()
    assert result == expected  # exactly: the module calls the same functions
    assert 0 < expected["f1"] < 1 and 0 < expected["rouge_l"] < 1 and expected["exact_match"] == 0.4


def test_single_references_and_batches(qa: evaluate.EvaluationModule) -> None:
    for prediction, references in zip(PREDICTIONS, REFERENCES, strict=True):
        qa.add(prediction=prediction, references=references)
    assert qa.compute() == by_hand()
    one = qa.compute(predictions=["Paris"], references=["paris, France"])  # a plain string: one reference
    assert one == score_answer("Paris", ["paris, France"])


def test_module_file_ships_inside_the_package() -> None:
    import hmtbench.qa

    assert Path(EVALUATE_MODULE).parent == Path(hmtbench.qa.__file__).parent and Path(EVALUATE_MODULE).is_file()
