"""Two CPU processes (torchrun, gloo) give the single process's results: eval records and trained tensors.

One launch of ``python -m torch.distributed.run --nproc-per-node 2`` on 127.0.0.1 and a free port
runs the hmtbench commands (the CLI, called in each process) as a user launches several GPUs;
each test compares what it wrote with the same run in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hmtbench import distributed
from hmtbench.checkpoints import load_tensors
from hmtbench.commands.eval_ppl import run_eval_ppl
from hmtbench.commands.train import load_run_config, run_train
from hmtbench.config import DataSettings, method_config
from hmtbench.evaluation.config import eval_configs
from hmtbench.training.config import LoraSettings, TrainConfig, TrainSettings

WORDS = "memory segment recall token summary sensory cache window stream paper".split()
HMT = {"sensory_tokens": 4, "recall_context": 5, "recall_hidden_dim": 16}

# Trained tensors: each rank averages the loss over its 2 windows and DDP averages the two gradients, where one
# process sums over the 4 windows at once: the same numbers added in another order (~1e-7 relative in fp32).
# Adam divides by sqrt(v), so where a gradient is tiny (HMT's recall projections and summary prompt get 1e-7 to
# 1e-11 at init, near Adam's eps) those last bits move the update. Measured after 6 steps at lr 1e-2 (largest
# possible movement 6e-2): LoRA and memory agree to <= 6e-7 on both CPUs measured; recall to <= 5e-6; the summary
# prompt to 5e-6 on one CPU, 1.2e-5 on another and 2.2e-5 on a third (torch 2.13): the bound is set above all
# three, still 1,000 times below the largest possible movement.
TRAINED_ATOL = 5e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Starting two interpreters costs more than the tiny runs, so one launch runs every command in turn.
DRIVER = """
import sys
from hmtbench.cli import app

for args in sys.argv[1:]:
    code = app(args.split("\\t"), standalone_mode=False)
    if code:
        sys.exit(code)
"""


def torchrun(commands: list[list[str]], cwd: Path) -> str:
    """Each ``hmtbench ARGS`` in turn in two gloo processes; their stdout (rank 0's: the others print nothing)."""
    (cwd / "driver.py").write_text(DRIVER)
    port = str(free_port())
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    launch += ["--master-port", port, str(cwd / "driver.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    commands = ["\t".join([*c, "--device", "cpu"]) for c in commands]
    done = subprocess.run([*launch, *commands], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def write_documents(folder: Path) -> Path:
    """Seven documents of different lengths: three batches of 2 and one of 1, dealt unevenly over 2 ranks."""
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for i, n in enumerate([80, 60, 70, 50, 90, 30, 40]):
        picks = torch.randint(0, len(WORDS), (n,), generator=generator).tolist()
        (folder / f"d{i}.txt").write_text(" ".join(WORDS[j] for j in picks))
    return folder


# segment length 24 and HMT as flags
TINY = "--backbone random:llama --segment-length 24 --sensory-tokens 4 --recall-context 5 --recall-hidden-dim 16"
QA_FLAGS = [
    *TINY.split(),
    *"--task passkey --context-length 300 --limit 3 --method plain,hmt --max-new-tokens 4".split(),
]


def eval_flags(documents: Path, protocol: str, out: Path) -> list[str]:
    settings = f"--method plain,hmt --test-length 120 --max-windows 7 --batch-size 2 --protocol {protocol}"
    return ["eval-ppl", *TINY.split(), *settings.split(), "--dataset", str(documents), "--out", str(out)]


def train_config(corpus: str, folder: Path, steps: int) -> TrainConfig:
    settings = TrainSettings(
        steps=steps,
        stages=[2],
        train="lora",
        batch_size=4,
        grad_accum=2,
        bptt_depth=3,
        lr=1e-2,
        log_every=1,
        checkpoint_every=2,
        seed=0,
    )
    return TrainConfig(
        backbone="random:llama",
        method=method_config("hmt", HMT),
        segment_length=24,
        data=DataSettings(dataset=corpus),
        train=settings,
        lora=LoraSettings(dropout=0.0),
        device="cpu",
        output_dir=str(folder / "run"),
        out=str(folder / "results"),
    )


def train_flags(corpus: str, steps: int, folder: Path) -> list[str]:
    """The CLI twin of ``train_config``."""
    settings = "--method hmt --stage 2 --train lora --set lora.dropout=0 --batch-size 4 --grad-accum 2 --bptt-depth 3"
    settings += f" --lr 0.01 --set train.log_every=1 --set train.checkpoint_every=2 --seed 0 --steps {steps}"
    paths = ["--dataset", corpus, "--output-dir", str(folder / "run"), "--out", str(folder / "results")]
    return ["train", *TINY.split(), *settings.split(), *paths]


def stop_at(run: Path, steps: int) -> None:
    """Make a finished 4-step run look stopped at its last checkpoint, asking for ``steps`` (as in test_train)."""
    (run / "stage2" / "final").rename(run / "stopped")
    yaml = run / "config.yaml"
    yaml.write_text(yaml.read_text().replace("steps: 4", f"steps: {steps}"))


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One torchrun launch: eval-ppl (stream, paper), a 4-step training, and the resume of a 1-process run."""
    root = tmp_path_factory.mktemp("distributed")
    documents = write_documents(root / "docs")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ate the bone. " * 120)
    run_train(train_config(str(corpus), root / "one", 4))  # resumed below on two processes
    stop_at(root / "one" / "run", 6)
    commands = [
        eval_flags(documents, "stream", root / "stream"),
        eval_flags(documents, "paper", root / "paper"),
        train_flags(str(corpus), 4, root / "two"),
        ["train", "--resume", str(root / "one" / "run")],
        ["eval-qa", *QA_FLAGS, "--out", str(root / "qa")],
    ]
    return root, torchrun(commands, cwd=root)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["stream", "paper"])
def test_eval_ppl_on_two_processes_equals_one(launch: tuple[Path, str], protocol: str) -> None:
    root, stdout = launch
    configs = eval_configs({
        "backbone": "random:llama", "method": {"name": "plain,hmt", **HMT}, "segment_length": 24,
        "data": {"dataset": str(root / "docs"), "split": "test", "test_length": 120}, "protocol": protocol,
        "batch_size": 2, "max_windows": 7, "device": "cpu", "out": str(root / "one-eval"),
    })
    one = pd.DataFrame(run_eval_ppl(configs)).set_index("method")

    files = sorted((root / protocol).glob("*.parquet"))
    assert len(files) == 2 and all(stdout.count(f"wrote {f}") == 1 for f in files)  # one record per method
    two = pd.concat(pd.read_parquet(f) for f in files).set_index("method")
    for method in ("plain", "hmt"):
        a, b = one.loc[method], two.loc[method]
        assert (a["docs"], a["tokens_scored"], a["bytes_scored"]) == (b["docs"], b["tokens_scored"], b["bytes_scored"])
        assert list(a["segment_tokens"]) == list(b["segment_tokens"])
        assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-6)
        assert b["bpb"] == pytest.approx(a["bpb"], rel=1e-6)
        assert list(b["segment_nll"]) == pytest.approx(list(a["segment_nll"]), rel=1e-6)
        assert list(b["doc_tokens"]) == list(a["doc_tokens"])  # per document, in one order however dealt
        assert list(b["doc_nll"]) == pytest.approx(list(a["doc_nll"]), rel=1e-6)
        if protocol == "paper":
            assert b["paper_ppl"] == pytest.approx(a["paper_ppl"], rel=1e-6)
        assert json.loads(b["config"])["world_size"] == 2 and "world_size" not in json.loads(a["config"])


@pytest.mark.slow
def test_eval_qa_on_two_processes_equals_one(launch: tuple[Path, str]) -> None:
    from hmtbench.cli import app

    root, stdout = launch
    result = CliRunner().invoke(app, ["eval-qa", *QA_FLAGS, "--device", "cpu", "--out", str(root / "qa-one")])
    assert result.exit_code == 0, result.output
    files = sorted((root / "qa").glob("*.parquet"))
    assert len(files) == 2 and all(stdout.count(f"wrote {f}") == 1 for f in files)
    one = pd.concat(pd.read_parquet(f) for f in (root / "qa-one").glob("*.parquet")).set_index("method")
    two = pd.concat(pd.read_parquet(f) for f in files).set_index("method")
    for method in ("plain", "hmt"):
        a, b = one.loc[method], two.loc[method]
        assert (a["docs"], a["tokens_scored"]) == (b["docs"], b["tokens_scored"])
        assert b["answer_ppl"] == pytest.approx(a["answer_ppl"], rel=1e-6)
        for metric in ("accuracy", "rouge_l", "f1", "exact_match"):
            assert b[metric] == pytest.approx(a[metric], abs=1e-12)
        lines = [[json.loads(x) for x in Path(r["predictions_file"]).read_text().splitlines()] for r in (a, b)]
        assert [(p["id"], p["prediction"]) for p in lines[0]] == [(p["id"], p["prediction"]) for p in lines[1]]


@pytest.fixture(scope="module")
def straight(launch: tuple[Path, str]) -> Path:
    """One process, 6 steps without a stop: the reference."""
    root = launch[0]
    run_train(train_config(str(root / "corpus.txt"), root / "straight", 6))
    return root / "straight" / "run"


def assert_same_tensors(a: Path, b: Path) -> None:
    left, right = load_tensors(a / "stage2" / "final"), load_tensors(b / "stage2" / "final")
    assert left.keys() == right.keys() and any("lora_" in k for k in left) and "memory" in left
    for name in left:
        torch.testing.assert_close(right[name], left[name], atol=TRAINED_ATOL, rtol=0)


@pytest.mark.slow
def test_train_on_two_processes_then_resume_on_one(launch: tuple[Path, str], straight: Path) -> None:
    root, stdout = launch
    run = root / "two" / "run"
    assert stdout.count("hmt stage 2 complete") == 2  # this run and the resumed one, each reported once
    assert len(list((root / "two" / "results").glob("*.parquet"))) == 1
    reference = [json.loads(line)["loss"] for line in (straight / "stage2" / "log.jsonl").read_text().splitlines()]
    logged = [json.loads(line) for line in (run / "stage2" / "log.jsonl").read_text().splitlines()]  # rank 0 only
    assert [e["step"] for e in logged] == [1, 2, 3, 4]
    assert [e["loss"] for e in logged] == pytest.approx(reference[:4], rel=1e-5)
    stop_at(run, 6)
    run_train(load_run_config(str(run)), resume=str(run))  # 2 processes -> 1: steps 5 and 6 here
    assert_same_tensors(straight, run)


@pytest.mark.slow
def test_train_resumed_on_two_processes(launch: tuple[Path, str], straight: Path) -> None:
    run = launch[0] / "one" / "run"  # 4 steps in one process, then steps 5 and 6 on two
    assert_same_tensors(straight, run)
    assert json.loads((run / "stage2" / "final" / "checkpoint.json").read_text())["step"] == 6


def test_single_process_helpers_are_the_identity() -> None:
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.setup("cpu") == "cpu"
    batch = torch.arange(6).view(3, 2)
    assert distributed.shard_rows(batch) is batch and distributed.mean(2.5) == 2.5
    assert distributed.deal("abc") == [(0, "a"), (1, "b"), (2, "c")]
    assert distributed.gather_objects({"x": 1}) == [{"x": 1}]
    assert distributed.with_world_size('{"a": 1}') == '{"a": 1}'
