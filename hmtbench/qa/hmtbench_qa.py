"""hmtbench's offline QA metrics as a Hugging Face ``evaluate`` module.

Why: users who score answers with ``evaluate`` get the interface they know
(``evaluate.load(...).compute(predictions=..., references=...)``, ``add_batch``, ``evaluate.combine``)
and exactly the numbers ``hmtbench eval-qa`` reports, without a download: this file only calls
``hmtbench.qa.metrics``, so the two cannot drift apart.

    import evaluate
    from hmtbench.qa.metrics import EVALUATE_MODULE

    qa = evaluate.load(EVALUATE_MODULE)
    qa.compute(predictions=["Paris"], references=[["Paris", "paris, France"]])

``evaluate.load`` copies this file into its module cache and imports it from there, so it imports
hmtbench absolutely, never relatively.
"""

from __future__ import annotations

import datasets
import evaluate

from hmtbench.qa.metrics import mean_scores

DESCRIPTION = """ROUGE-L (F-measure, rouge-score's tokenizer, no stemming), SQuAD token F1 and exact match on
normalised answers (lower case, no punctuation or articles), and accuracy (the normalised reference occurs as whole
words in the normalised prediction). Each is the best over a sample's references, then averaged over samples."""

INPUTS = """Args:
    predictions: list of str, one answer per sample.
    references: list of str, or list of lists of str (several gold answers per sample).
Returns:
    rouge_l, f1, exact_match, accuracy: floats in [0, 1].
"""


class HmtbenchQa(evaluate.Metric):
    """ROUGE-L, token F1, exact match and accuracy as ``hmtbench.qa.metrics`` computes them."""

    def _info(self) -> evaluate.MetricInfo:
        answer = datasets.Value("string")
        return evaluate.MetricInfo(
            description=DESCRIPTION,
            citation="",
            inputs_description=INPUTS,
            features=[
                datasets.Features({"predictions": answer, "references": datasets.Sequence(answer)}),
                datasets.Features({"predictions": answer, "references": answer}),
            ],
        )

    def _compute(self, predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, float]:
        return mean_scores(predictions, references)
