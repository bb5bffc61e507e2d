"""The `hmtbench` command line: wiring only. Each command turns its flags into settings and calls hmtbench.commands.

Each command imports what it runs inside its function (hmtbench.commands brings torch, hmtbench.analysis pandas and
matplotlib), so `hmtbench --help` imports none of them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from hmtbench.benchmark.config import BenchConfig, bench_config
from hmtbench.commands.flags import settings_command
from hmtbench.commands.options import (
    FiguresOut,
    Grid,
    IncludeFailed,
    OnlyBackbones,
    OnlyDatasets,
    OnlyMethods,
    PerSeed,
    Recipe,
    ResultPaths,
    Sets,
    given,
    opt,
)
from hmtbench.errors import HmtbenchError, canceled_message
from hmtbench.evaluation.config import EvalConfig, eval_configs
from hmtbench.hostmemory import watch_host_memory
from hmtbench.qa.config import QAConfig, qa_configs
from hmtbench.results.schema import recording
from hmtbench.training.config import TrainConfig

app = typer.Typer(
    name="hmtbench",
    help="Benchmark long-context memory methods (plain, RMT, HMT, ...) on any Hugging Face causal LM.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
RUN = ("backbone", "method", "segment_length", "dtype", "device", "seed", "out", "name")  # RunSettings: every run's
ENGINE = ("engine.compile", "engine.cuda_graphs")
BENCH = ("lengths", "batch_size", "train_batch_size", "mode", "bptt_depth", "train", "grad_checkpoint",  # bench's
         "recompute_share", "layer_checkpoint", "max_batch_tokens", *ENGINE, "warmup", "repeat")  # cases (profile too)


@app.callback()
def root() -> None:
    """Benchmark long-context memory methods (plain, RMT, HMT, ...) on any Hugging Face causal LM.

    Typical use: `hmtbench eval-ppl --method plain,rmt,hmt`, then `hmtbench compare results/`.
    """


def friendly_errors(command: F) -> F:
    """Show known errors as one line (exit 2); HMTBENCH_DEBUG=1 shows the traceback instead."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with recording() as written, watch_host_memory():  # the records this command writes
                return command(*args, **kwargs)
        except HmtbenchError as err:
            if os.environ.get("HMTBENCH_DEBUG"):
                raise
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as interrupt:
            typer.secho(canceled_message(written, interrupt), fg="yellow", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def command_line() -> list[str]:
    return ["hmtbench", *sys.argv[1:]]


@app.command("eval-ppl", cls=settings_command(
    EvalConfig, *RUN, "data.dataset", "data.split", "data.test_length", "data.max_docs", "protocol", "max_windows",
    "batch_size", "checkpoint", *ENGINE, "selected_on"))
@friendly_errors
def eval_ppl(ctx: typer.Context, recipe: Recipe = None, set_: Sets = None, grid: Grid = None) -> None:
    """Perplexity of each method on long documents, under identical segment settings.

    Each method writes one parquet record into --out; a comparison table closes the run. Every flag is
    a spelling of a settings key (`--sensory-tokens 16` = `--set method.sensory_tokens=16`); with --checkpoint,
    what you do not give comes from it (backbone too). --split is scored, never a recipe's (its training split).

    Examples:

        hmtbench eval-ppl --backbone smollm2-135m --method plain,rmt,hmt --max-docs 4

        hmtbench eval-ppl --method hmt --checkpoint results/checkpoints/smollm2-135m-stdlib-hmt-lora/stage2

        hmtbench eval-ppl --recipe recipes/smollm2-135m-stdlib-hmt.yaml --set method.sensory_tokens=16

        hmtbench eval-ppl --method hmt --checkpoint C --split validation --grid method.recall_context=100,400

        hmtbench eval-ppl --backbone random:llama --dataset notes.txt --segment-length 64 --test-length 512
    """
    settings = given(ctx, "eval-ppl", recipe, set_)
    from hmtbench.commands.eval_ppl import run_eval_ppl
    from hmtbench.commands.summary import print_method_table

    rows = run_eval_ppl(eval_configs(settings, grid), command_line())
    print_method_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']}")


@app.command("eval-qa", cls=settings_command(
    QAConfig, "task", "split", *RUN, ("context_length", None, str), "limit", "max_new_tokens", "filler", "data",
    "checkpoint", "batch_size", "decode", *ENGINE, "selected_on"))
@friendly_errors
def eval_qa(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None,
    depth: Annotated[str | None, opt("Needle depths in [0, 1], comma-separated: passkey cycles through them, "
                                     "multi-fact hides one fact at each.")] = None,
    resume: Annotated[bool, opt("Continue an interrupted evaluation with the same settings in --out: the batches it "
                                "scored are kept, the rest run.")] = False,
    grid: Grid = None,
) -> None:
    """Long-context QA through the memory: answer perplexity and greedy answers (ROUGE-L, F1, EM, accuracy).

    The context is read segment by segment into the method's memory; the gold answer's perplexity
    and a greedy answer follow it. Each method writes a parquet record and a predictions JSONL into --out.

    Examples:

        hmtbench eval-qa --task passkey --context-length 16000 --method plain,rmt,hmt --segment-length 1024

        hmtbench eval-qa --task multi-fact --context-length 1000000 --method hmt --checkpoint runs/hmt/final

        hmtbench eval-qa --task passkey-unseen-b --split validation --context-length 1k,4k --method hmt --checkpoint C

        hmtbench eval-qa --task narrativeqa --data LongBench/data.zip --context-length 8000 --limit 50

        hmtbench eval-qa --split validation --context-length 64k --checkpoint C --grid method.recall_choice=soft,hard
        --grid method.recall_context=100,1000,6000
    """
    from hmtbench.commands.eval_qa import parse_depths, print_qa_table, run_eval_qa

    settings = given(ctx, "eval-qa", recipe, set_, {"depths": parse_depths(depth)} if depth is not None else None)
    rows = run_eval_qa(qa_configs(settings, grid), command_line(), resume=resume)
    print_qa_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']} and {row['predictions_file']}")


@app.command("train", cls=settings_command(
    TrainConfig, "backbone", "method", "segment_length", "data.dataset", "curriculum.task",
    ("curriculum.segments", "--curriculum", None), ("train.stages", "--stage", int), "train.stage1_steps",
    "train.init_from", "train.steps", "train.max_minutes", "train.train", "train.batch_size", "train.grad_accum",
    "train.bptt_depth", "train.bptt_truncate", "train.grad_checkpoint", "train.compile", "train.cuda_graphs",
    "train.lr", "train.seed", "output_dir", "dtype", "device", "out", "name"))
@friendly_errors
def train(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None,
    resume: Annotated[str | None, opt("Continue the run in this folder exactly where it stopped (only "
                                      "--max-minutes, --compile, --out and --device may be given with it).")] = None,
) -> None:
    """Train a method (HMT: stage 1, stage 2, or both back to back), or LoRA on a plain backbone.

    Windows of D segments (stride one segment) from the training split; loss on the last
    segment (reference) or all; full BPTT over the window unless --bptt-truncate.
    Checkpoints hold only the trained tensors (safetensors) and resume exactly.

    The flags are the settings people type. The rest live in recipes and --set: the lr schedule (train.lr_schedule,
    train.lr_decay, train.decay_every, train.warmup_steps), train.grad_clip, train.checkpoint_every,
    train.log_every, train.max_file_mb, train.loss_on, train.k2, train.recompute_share, train.layer_checkpoint
    (each decoder block recomputed: full context's long segment), LoRA (lora.r, lora.alpha, lora.dropout,
    lora.targets), the curriculum's details (curriculum.advance_at, curriculum.needles, ...), data.split and
    data.max_docs; every key with its help: docs/cli.md.

    Examples:

        hmtbench train --recipe recipes/smollm2-135m-stdlib-hmt.yaml

        hmtbench train --method rmt --bptt-depth 6 --steps 300 --output-dir runs/rmt

        hmtbench train --method hmt --stage 2 --init-from runs/hmt/stage1/final --set train.lr=5e-5

        hmtbench train --method rmt --task passkey --curriculum 1,2,4,8 --train lora --steps 400

        hmtbench train --backbone llama2-7b --method hmt --train lora --bptt-depth 6 --compile --cuda-graphs

        hmtbench train --resume runs/rmt --max-minutes 9
    """
    from hmtbench.commands.train import describe_stage, load_run_config, run_train, train_config

    settings = given(ctx, "train", recipe, set_)
    config = load_run_config(resume, settings) if resume else train_config(settings, recipe)
    rows = run_train(config, command_line=command_line(), resume=resume)
    for row in rows:
        typer.echo(describe_stage(row))
    for row in rows:
        typer.echo(f"wrote {row['output_dir']}/final and a record in {config.out}")


@app.command("bench", cls=settings_command(BenchConfig, *RUN, *BENCH, "max_seconds"))
@friendly_errors
def bench(ctx: typer.Context, recipe: Recipe = None, set_: Sets = None) -> None:
    """Speed and memory per method, context length and batch size: tokens/s, ms per segment, peak GPU memory.

    eval reads a batch of random-token documents with the real segment loop; train times one forward and
    backward of a D-segment window. One parquet record per case (`hmtbench compare --metric tokens_per_s`,
    `hmtbench plot --figure memory-vs-length`); full context beyond the backbone's positions is a skipped row.

    Examples:

        hmtbench bench --backbone smollm2-135m --batch-size 1,64 --compile --cuda-graphs

        hmtbench bench --backbone random:llama-7b --method rmt,hmt --mode train --batch-size 1,4 --sensory-tokens 32

        hmtbench bench --backbone random:llama --segment-length 64 --lengths 256,1k --device cpu
    """
    settings = given(ctx, "bench", recipe, set_)
    from hmtbench.commands.bench import describe_row, run_bench

    config = bench_config(settings)
    rows = run_bench(config, command_line(), on_row=lambda row: typer.echo(describe_row(row)))
    typer.echo(f"wrote {len(rows)} records to {config.out}")


@app.command("profile", cls=settings_command(BenchConfig, *(key for key in RUN if key != "out"), *BENCH))
@friendly_errors
def profile(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None,
    json_out: Annotated[str | None, opt("Also write the profiles here, as JSON (with the run's provenance).",
                                        "--json")] = None,
    top: Annotated[int, typer.Option(help="Kernels listed per training step.")] = 25,
) -> None:
    """Where the time of bench's cases goes: the same settings, recipe and --set as `hmtbench bench`.

    eval: each method's summary passes and segment steps, device-timed, then one eager step and summary pass under
    torch.profiler: kernels per step and their busy time, and each method's time against plain's. train (a CUDA
    device): one training step under the profiler, its kernels by kind (matmul, attention, other) and the time the
    device waits on the host.

    Examples:

        hmtbench profile --mode eval --lengths 64k --method plain,rmt,hmt --summary-pass inline --compile --cuda-graphs

        hmtbench profile --mode train --backbone random:llama-7b --method hmt --train lora --batch-size 4
        --sensory-tokens 32 --recall-hidden-dim 1536 --json profile.json
    """
    settings = given(ctx, "bench", recipe, set_)
    from hmtbench.commands.profile import run_profile

    run_profile(bench_config(settings), command_line(), top, json_out, echo=typer.echo)
    if json_out:
        typer.echo(f"wrote {json_out}")


@app.command("compare")
@friendly_errors
def compare(
    paths: ResultPaths = None, backbone: OnlyBackbones = None, dataset: OnlyDatasets = None,
    method: OnlyMethods = None,
    metric: Annotated[str | None, opt("ppl, bpb, paper_ppl, rouge_l, accuracy, peak_gpu_mem_mb, tokens_per_s, ... "
                                      "(comma-separated) [default: the quality metrics the runs have].")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | json.")] = "table",
    output: Annotated[str | None, opt("Also write the table to this file.")] = None,
    include_failed: IncludeFailed = False,
    per_seed: PerSeed = False,
) -> None:
    """Methods side by side: a row per backbone x dataset x settings, the paper's deltas, the best marked.

    Cells: one measurement [95% interval], or mean ± std over seeds (n); n.s. from a paired test where possible.
    Runs whose settings differ are never averaged: they get rows of their own.
    'HMT vs RMT, %' = (RMT - HMT) / RMT x 100 for lower-is-better metrics, (HMT - RMT) / RMT x 100 for
    higher-is-better ones: positive always means the first method is better.

    Examples:

        hmtbench compare results/

        hmtbench compare results/ --backbone smollm2-135m --metric ppl,bpb --format markdown

        hmtbench compare results/ old-runs/ --format csv --output table.csv
    """
    from hmtbench.analysis.report import run_compare

    filters = {"backbone": backbone, "dataset": dataset, "method": method}
    typer.echo(run_compare(paths or ["results"], filters, metric, fmt, include_failed, output, _warn, per_seed))
    if output:
        typer.echo(f"wrote {output}")


@app.command("report")
@friendly_errors
def report(
    paths: ResultPaths = None,
    out: Annotated[str, typer.Option(help="The results document to write.")] = "docs/results.md",
    readme: Annotated[str | None, opt("Also rewrite this README's results block with the headline.")] = None,
) -> None:
    """The results document from the records and each folder's report.yaml (docs/cli.md): every number linked to
    its record, prose without numbers, the figures. Example: hmtbench report results --readme README.md"""
    from hmtbench.analysis.report import run_report

    for path in run_report(paths or ["results"], out, readme, warn=_warn):
        typer.echo(f"wrote {path}")


@app.command("plot")
@friendly_errors
def plot(
    paths: ResultPaths = None,
    figure: Annotated[str | None, opt("ppl-bars | accuracy-vs-length | depth-heatmap | ppl-vs-position | "
                                      "memory-vs-length | quality-vs-params | training-curve (comma-separated; "
                                      "training-curve reads the runs' log.jsonl).")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="Every figure the results support.")] = False,
    out: FiguresOut = "figures",
    backbone: OnlyBackbones = None, dataset: OnlyDatasets = None, method: OnlyMethods = None,
    metric: Annotated[str | None, opt("Draw this metric instead of the figure's own (e.g. bpb for ppl-bars; loss, "
                                      "exact or grad_norm for training-curve).")] = None,
    include_failed: IncludeFailed = False,
) -> None:
    """The paper's figures from result records, as PNG and PDF.

    Examples:

        hmtbench plot results/ --paper

        hmtbench plot results/ --figure ppl-bars --out my-figures/

        hmtbench plot results/ --figure memory-vs-length --backbone smollm2-135m

        hmtbench plot runs/rmt-official --figure training-curve
    """
    from hmtbench.analysis.plot import run_plot

    names = [name.strip() for name in (figure or "").split(",") if name.strip()]
    filters = {"backbone": backbone, "dataset": dataset, "method": method}
    for path in run_plot(paths or ["results"], names, out, paper, filters, metric, include_failed, warn=_warn):
        typer.echo(f"wrote {path}")


def _warn(message: str) -> None:
    typer.secho(message, fg="yellow", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
