"""The seed-split table: which trainings of one recipe learned, by initialisation seed and data seed.

Reads the training records (``results/train/*.parquet``) under each folder, keeps those of ``--recipe`` that start
from the backbone (a chain's first level: no ``train.init_from``), and finds
each one's log (``runs/RUN/STAGE/log.jsonl`` beside its ``results/``): a training "learned" when its curriculum moved
past its first level (the passkey recipes advance at 90% exact answers over 10 steps). One row per training (a run
resumed in chunks writes a record per chunk: its last one stands for it):

    python scripts/seed_split.py results/h100-protocol results/h100-seed-split/hmt \
        --recipe recipes/smollm2-135m-passkey-hmt-span.yaml

Prints a markdown table (init seed, data seed, the step of the first advance, the segments and exact share at the
last logged step, the tokens read, the record) and the count of seed pairs that learned, by whether their data seed
is their own: a pair trained more than once (a repeat) counts once, as learned if any of its runs advanced.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hmtbench.config import from_dict
from hmtbench.training.config import TrainSettings


def training_rows(folders: list[Path], recipe: str) -> list[dict]:
    runs: dict[tuple[Path, str], dict] = {}  # (work folder, run folder) -> its latest chunk's row
    for folder in folders:
        for record in sorted(folder.rglob("results/train/*.parquet")):
            run = pd.read_parquet(record).iloc[0]
            if run["recipe"] != recipe or not isinstance(run["config"], str):
                continue
            train = from_dict(TrainSettings, json.loads(run["config"])["train"], "train.")
            if train.init_from:  # a later level of a chain, trained on from an earlier final
                continue
            row = {"init": train.seed, "data": train.sample_seed, "tokens": run["train_tokens"], "record": record,
                   "started": run["created_at"], **_curve(record, run["output_dir"])}
            key = (record.parents[2], run["output_dir"])
            if key not in runs or row["started"] >= runs[key]["started"]:
                runs[key] = row
    return sorted(runs.values(), key=lambda row: (row["init"] != row["data"], row["init"], row["data"], row["started"]))


def _curve(record: Path, output_dir: str) -> dict:
    """The log's first advance, last step, segments and exact share (None where the log did not come back)."""
    parts = Path(output_dir).parts
    run = parts[parts.index("runs") + 1]
    logs = sorted((record.parents[2] / "runs" / run).glob("*/log.jsonl"))
    if not logs:
        return {"advanced_at": None, "step": None, "segments": None, "exact": None}
    entries = [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]
    first = entries[0]["segments"]
    advanced = next((e["step"] for e in entries if e["segments"] > first), None)
    last = entries[-1]
    return {"advanced_at": advanced, "step": last["step"], "segments": last["segments"], "exact": last["exact"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| init seed | data seed | first advance (step) | last logged step | segments | exact | tokens | record |",
             "| --: | --: | --: | --: | --: | --: | --: | --- |"]
    for row in rows:
        advanced = "never" if row["advanced_at"] is None else str(row["advanced_at"])
        tokens = "–" if pd.isna(row["tokens"]) else f"{int(row['tokens']):,}"
        lines.append(f"| {row['init']} | {row['data']} | {advanced} | {row['step']} | {row['segments']} | "
                     f"{row['exact']:.2f} | {tokens} | `{row['record'].as_posix()}` |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    def count(selected: list[dict]) -> str:
        learned: dict[tuple[int, int], bool] = {}
        for row in selected:
            pair = (row["init"], row["data"])
            learned[pair] = learned.get(pair, False) or row["advanced_at"] is not None
        return f"{sum(learned.values())} of {len(learned)}"
    own = [row for row in rows if row["init"] == row["data"]]
    crossed = [row for row in rows if row["init"] != row["data"]]
    return f"learned: {count(own)} with their own data seed, {count(crossed)} with another seed's data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--recipe", required=True, help="the recipe path as the records name it")
    args = parser.parse_args()
    rows = training_rows(args.folders, args.recipe)
    if not rows:
        raise SystemExit(f"no training records of {args.recipe} under {', '.join(map(str, args.folders))}")
    print(markdown(rows))
    print()
    print(summary(rows))


if __name__ == "__main__":
    main()
