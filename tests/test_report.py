"""hmtbench report: the results document from records, every number linked to its record, no number in prose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hmtbench.analysis.report import README_BEGIN, README_END, build_report, run_report, with_block
from hmtbench.analysis.report_spec import check_prose
from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from tests.test_analysis_uncertainty import write_qa_run
from tests.test_compare import write_run

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[([^\]]+)\]\[([^\]]+)\]")  # [text][run_id]


def write_spec(folder: Path, **spec) -> None:
    (folder / "report.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))


def definitions(document: str, base: Path) -> dict[str, Path]:
    """run_id -> the file its reference link points to, resolved from the document's folder."""
    found = re.findall(r"^\[([^\]]+)\]: (\S+)$", document, flags=re.M)
    return {label: (base / target).resolve() for label, target in found}


@pytest.fixture
def lm(tmp_path: Path) -> Path:
    """plain 6.5 [6.40, 6.60], RMT 6.2 [6.10, 6.30], HMT 6.045 [5.98, 6.11], one run each, seed 7."""
    results = tmp_path / "results"
    for method, (ppl, low, high) in {"plain": (6.5, 6.40, 6.60), "rmt": (6.2, 6.10, 6.30),
                                     "hmt": (6.045, 5.98, 6.11)}.items():
        write_run(results / "lm", method, ppl=ppl, ppl_ci_low=low, ppl_ci_high=high, seed=7, docs=45,
                  git_commit="abcdef0123", git_dirty=False)
    return results


def test_prose_holds_no_number_outside_code() -> None:
    for text in ["SmolLM2-135M on an H200, `45` files, [the folder](../results/h200-x/README.md)",
                 "checkpoints as `recipes/smollm2-135m-passkey-hmt-span.yaml` trained them; ¼ of the keys"]:
        check_prose(text, "here")
    for text, word in [("over 45 files", "45"), ("HMT gains (+14%)", "(+14%)"), ("the 7B shape", "7B")]:
        with pytest.raises(HmtbenchError, match=re.escape(f"here has a number outside `code`: '{word}'")):
            check_prose(text, "here")


def test_a_spec_with_a_typed_number_is_refused_naming_its_section(lm: Path) -> None:
    write_spec(lm, sections=[{"title": "LM", "text": "HMT wins by 3%", "tables": [{"records": ["lm"],
                                                                                  "metric": "ppl"}]}])
    with pytest.raises(HmtbenchError, match="section 'LM' has a number outside `code`: '3%'"):
        build_report([lm], lm.parent / "docs" / "results.md", warn=lambda m: None)


def test_every_number_of_a_methods_table_links_to_its_record(lm: Path) -> None:
    write_spec(lm, title="Results", sections=[{"title": "Language modelling", "text": "Trained with `lr 5e-4`.",
                                               "tables": [{"records": ["lm"], "metric": "ppl"}]}])
    out = lm.parent / "docs" / "results.md"
    document, block = build_report([lm], out, warn=lambda m: None)
    assert block == ""
    records = pd.concat([pd.read_parquet(f).assign(file=f.resolve()) for f in sorted((lm / "lm").glob("*.parquet"))])
    targets = definitions(document, out.parent)
    shown = {run: float(text) for text, run in LINK.findall(document)}
    assert set(shown) == set(records["run_id"])  # every record of the table is linked, nothing else
    for _, record in records.iterrows():
        assert targets[record["run_id"]] == record["file"]
        assert shown[record["run_id"]] == pytest.approx(record["ppl"], abs=5e-4)
    row = next(line for line in document.splitlines() if line.startswith("| tiny"))
    assert f"**[6.045][{records.set_index('method').at['hmt', 'run_id']}]** [5.98, 6.11]" in row
    assert row.endswith("| +2.50 n.s. | +4.62 | +7.00 |")  # HMT vs RMT overlaps, the rest does not
    provenance = next(line for line in document.splitlines() if line.startswith("*Records:"))
    for part in ["(3 runs)", "test split", "seed 7 (one seed)", "45 documents, 1,000 tokens scored per run",
                 "95% interval (bootstrap over documents)", "the two 95% intervals overlap", "code abcdef0 (clean)"]:
        assert part in provenance
    assert "](../results/lm)" in provenance


def test_a_lengths_table_counts_answers_and_lists_the_paired_tests(tmp_path: Path) -> None:
    """60/100 against 75/100 with 15 gains and no loss at 4k: p = 2 * 0.5**15 = 6.1e-05."""
    results = tmp_path / "results"
    write_qa_run(results / "qa", "plain", [1] * 60 + [0] * 40, seed=1, docs=100)
    write_qa_run(results / "qa", "hmt", [1] * 75 + [0] * 25, seed=1, docs=100, checkpoint="runs/hmt",
                 train_mode="lora")
    write_spec(results, sections=[{"title": "Passkey", "tables": [
        {"records": ["qa"], "metric": "exact_match", "layout": "lengths"}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    rows = [line for line in document.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert [LINK.sub(r"\1", row) for row in rows] == ["| 1 | plain | 60/100 [50–69%] |",
                                                      "| 2 | HMT (LoRA) | 75/100 [66–82%] |"]
    assert "- 4k: #2 vs #1 (plain) +15 / -0 of 100, p = 6.1e-05" in document.splitlines()
    assert "100 samples per cell" in document and "seed 1 (one seed)" in document
    assert "compared pairs" not in document  # HMT's pairs need RMT or ARMT in the table
    write_spec(results, headline="Passkey", sections=[{"title": "Passkey", "tables": [
        {"records": ["qa"], "metric": "exact_match", "layout": "lengths"}]}])
    _, block = build_report([results], tmp_path / "docs" / "results.md", tmp_path / "README.md", warn=lambda m: None)
    assert "| 2 | HMT (LoRA) |" in block and "vs #1" not in block  # the README's block points to the tests
    assert "Paired tests of these rows on the same samples, seed by seed: [docs/results.md](docs/results.md)." in block
    write_qa_run(results / "qa", "rmt", [1] * 50 + [0] * 50, seed=1, docs=100, checkpoint="runs/rmt",
                 train_mode="lora")
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    assert "in the compared pairs (HMT vs RMT), each memory" in document


def test_cells_of_one_length_on_other_samples_are_named_and_never_paired(tmp_path: Path) -> None:
    """plain and HMT at 4k on two sample sets (another filler text: another Python's pydoc topics): no paired test,
    and the provenance line says where the samples differ; on one sample set it says nothing of the kind."""
    results = tmp_path / "results"
    write_qa_run(results / "qa", "plain", [0] * 100, seed=1, data="python-3.11")
    write_qa_run(results / "qa", "hmt", [1] * 100, seed=1, data="python-3.12", checkpoint="runs/hmt", train_mode="lora")
    write_spec(results, sections=[{"title": "Passkey", "tables": [
        {"records": ["qa"], "metric": "exact_match", "layout": "lengths"}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    assert "cells side by side on different samples at 4k (other data_sha256)" in document
    assert "#2 vs #1" not in document and "+100 / -0" not in document
    same = tmp_path / "same" / "results"
    write_qa_run(same / "qa", "plain", [0] * 100, seed=1, data="python-3.12")
    write_qa_run(same / "qa", "hmt", [1] * 100, seed=1, data="python-3.12", checkpoint="runs/hmt", train_mode="lora")
    write_spec(same, sections=[{"title": "Passkey", "tables": [
        {"records": ["qa"], "metric": "exact_match", "layout": "lengths"}]}])
    document, _ = build_report([same], tmp_path / "same" / "results.md", warn=lambda m: None)
    assert "different samples" not in document and "- 4k: #2 vs #1 (plain) +100 / -0 of 100" in document


def test_two_checkpoints_of_a_method_are_tested_by_their_row_numbers(tmp_path: Path) -> None:
    """Two trained HMT checkpoints on the same samples (variants: all): 70/100 and 80/100 with 10 gains and no
    loss, p = 2 * 0.5**10; the test names the rows it compares, as the tests against plain do."""
    results = tmp_path / "results"
    write_qa_run(results / "qa", "plain", [0] * 100, seed=1)
    for sha, correct in [("aaaa1111", 70), ("bbbb2222", 80)]:
        write_qa_run(results / "qa", "hmt", [1] * correct + [0] * (100 - correct), seed=1, train_mode="lora",
                     checkpoint=f"/runs/{sha}/final", checkpoint_sha256=sha * 8)
    write_spec(results, names={"aaaa1111": "short", "bbbb2222": "long"}, sections=[{"title": "Passkey", "tables": [
        {"records": ["qa"], "metric": "exact_match", "layout": "lengths", "variants": "all"}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    lines = document.splitlines()
    rows = {LINK.sub(r"\1", line).split(" | ")[1]: line.split(" | ")[0].lstrip("| ") for line in lines
            if re.match(r"^\| \d ", line)}
    short, long = (rows[f"HMT ({name})"] for name in ("short", "long"))
    assert f"- 4k: #{short} vs #{long} (HMT) +0 / -10 of 100, p = 0.002" in lines


def test_a_runs_table_shows_one_record_per_row(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_run(results / "train", "hmt", command="train", split="train", steps=300, final_loss=1.25,
              output_dir="/somewhere/runs/lm-hmt/stage2")
    write_spec(results, sections=[{"title": "Training", "tables": [
        {"records": ["train"], "metric": "final_loss", "layout": "runs", "columns": ["steps", "final_loss"]}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    assert re.search(r"^\| HMT \| lm-hmt/stage2 \| 300 \| \[1\.250\]\[run\d+-hmt\] \|$", document, flags=re.M)


def test_a_runs_table_shows_a_value_per_layer_as_its_mean(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_run(results / "qa", "rmt", command="eval-qa", exact_match=0.25, read_attention=[0.001, 0.002, 0.006],
              by_depth=[{"depth": 0.0, "n": 2}])
    write_spec(results, sections=[{"title": "QA", "tables": [{"records": ["qa"], "metric": "exact_match",
                                                              "layout": "runs",
                                                              "columns": ["read_attention", "by_depth"]}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    assert re.search(r"^\| RMT \| qa \| 0\.003 \(mean of 3\) \| \[\{'depth': 0\.0, 'n': 2\}\] \|$", document,
                     flags=re.M)


def test_where_keeps_the_named_runs_and_names_label_checkpoints(lm: Path) -> None:
    """HMT from two checkpoints: `names` shows each by its name (hash kept); `where` keeps plain and HMT only; a
    failed HMT run is counted under the table, not shown."""
    for sha, ppl in [("aaaa1111", 6.0), ("bbbb2222", 5.5)]:
        write_run(lm / "lm", "hmt", ppl=ppl, checkpoint=f"/somewhere/{sha}/stage2/final",
                  checkpoint_sha256=sha * 8, train_mode="lora")
    write_run(lm / "lm", "hmt", ppl=None, status="failed", checkpoint="/x/stage2/final", train_mode="lora")
    write_spec(lm, names={"aaaa1111": "short training", "bbbb": "long training"}, sections=[{
        "title": "LM", "tables": [{"records": ["lm"], "metric": "ppl", "where": {"method": "plain,hmt"}}]}])
    document, _ = build_report([lm], lm / "out.md", warn=lambda m: None)
    assert "hmt: checkpoint=short training [aaaa1111]" in document
    assert "hmt: checkpoint=long training [bbbb2222]" in document
    assert "| RMT |" not in document and "RMT vs" not in document
    assert "1 unsuccessful not shown" in document


def test_a_folder_without_a_spec_gets_a_table_of_each_metric(lm: Path) -> None:
    document, _ = build_report([lm / "lm"], lm / "out.md", warn=lambda m: None)
    assert document.startswith("<!-- Written by `hmtbench report")
    assert "# Results: `lm`" in document and "**perplexity** (lower is better)" in document
    assert len(LINK.findall(document)) == 3


def test_the_readme_block_holds_the_headline_table_with_links_from_the_readme(lm: Path) -> None:
    write_spec(lm, headline="LM", sections=[{"title": "LM", "tables": [{"records": ["lm"], "metric": "ppl"}]}])
    readme = lm.parent / "README.md"
    readme.write_text(f"# tool\n\nintro\n{README_BEGIN}\nold table\n{README_END}\n\n## Install\n")
    written = run_report([lm], lm.parent / "docs" / "results.md", readme, warn=lambda m: None)
    assert written == [lm.parent / "docs" / "results.md", readme]
    text = readme.read_text()
    assert text.startswith("# tool\n\nintro\n<!-- results:begin -->\n**LM**") and "old table" not in text
    assert text.endswith("<!-- results:end -->\n\n## Install\n")
    assert all(path.is_file() for path in definitions(text, readme.parent).values())
    assert "[docs/results.md](docs/results.md)" in text
    with pytest.raises(HmtbenchError, match="has no results block"):
        with_block("no markers here", "table", "README.md")


def test_cli_report_writes_the_document_and_refuses_bad_specs_in_one_line(lm: Path) -> None:
    write_spec(lm, sections=[{"title": "LM", "tables": [{"records": ["lm"], "metric": "ppl"}]}])
    out = lm.parent / "docs" / "results.md"
    result = CliRunner().invoke(app, ["report", str(lm), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"wrote {out}" and out.is_file()
    for table, message in [({"records": ["lm"], "metric": "pplx"}, "unknown table metric 'pplx'"),
                           ({"records": ["nowhere"], "metric": "ppl"}, "no records folder or file"),
                           ({"records": ["lm"], "metric": "ppl", "layout": "lengths"}, "a lengths table shows"),
                           ({"records": ["lm"], "metric": "ppl", "where": {"method": "hmtt"}}, "did you mean 'hmt'")]:
        write_spec(lm, sections=[{"title": "LM", "tables": [table]}])
        result = CliRunner().invoke(app, ["report", str(lm), "--out", str(out)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_the_committed_results_document_is_the_records_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/results.md and the README's results block are exactly what the committed records and
    results/report.yaml render to: no number in them was typed by hand (regenerate them with `make report`)."""
    monkeypatch.chdir(ROOT)
    document, block = build_report(["results"], "docs/results.md", "README.md", warn=lambda m: None)
    assert (ROOT / "docs" / "results.md").read_text() == document, "docs/results.md is stale: run `make report`"
    readme = (ROOT / "README.md").read_text()
    assert with_block(readme, block, "README.md") == readme, "README.md's results block is stale: run `make report`"


def test_a_runs_table_right_aligns_a_setting_only_some_records_have(tmp_path: Path) -> None:
    """A config setting reads as objects (so 8 stays 8 beside records without it): still a column of numbers."""
    results = tmp_path / "results"
    write_run(results / "bench", "plain", command="bench", tokens_per_s=100.0)
    write_run(results / "bench", "hmt", command="bench", tokens_per_s=90.0,
              config=json.dumps({"bench": {"recompute_share": 0.5}, "method": {"summary_segments": 8}}))
    write_spec(results, sections=[{"title": "Bench", "tables": [
        {"records": ["bench"], "metric": "tokens_per_s", "layout": "runs",
         "columns": ["config.bench.recompute_share", "config.method.summary_segments", "tokens_per_s"]}]}])
    document, _ = build_report([results], tmp_path / "results.md", warn=lambda m: None)
    lines = document.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method | run | recompute_share"))
    assert lines[header + 1] == "| --- | --- | --: | --: | --: |"
    assert re.search(r"^\| HMT \| bench \| 0\.5 \| 8 \| ", document, flags=re.M)
