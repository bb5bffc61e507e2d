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

from hmtbench.benchmark.config import bench_config
from hmtbench.commands.method_flags import MethodSettingsCommand
from hmtbench.commands.options import (
    Backbone,
    BatchSize,
    Checkpoint,
    Compile,
    CudaGraphs,
    Dataset,
    Device,
    Dtype,
    FiguresOut,
    IncludeFailed,
    MaxDocs,
    Methods,
    Name,
    OnlyBackbones,
    OnlyDatasets,
    OnlyMethods,
    Out,
    PerSeed,
    Recipe,
    RecomputeShare,
    ResultPaths,
    Seed,
    SegmentLength,
    SelectedOn,
    Sets,
    Split,
    TestLength,
    given,
    opt,
)
from hmtbench.errors import HmtbenchError, canceled_message
from hmtbench.evaluation.config import eval_configs
from hmtbench.qa.config import qa_configs
from hmtbench.results.schema import recording

app = typer.Typer(
    name="hmtbench",
    help="Benchmark long-context memory methods (plain, RMT, HMT, ...) on any Hugging Face causal LM.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
ENGINE_KEYS = {"compile_": "engine.compile", "cuda_graphs": "engine.cuda_graphs"}


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
            with recording() as written:  # the records this command writes
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


@app.command("eval-ppl", cls=MethodSettingsCommand)
@friendly_errors
def eval_ppl(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None, backbone: Backbone = None, method: Methods = None,
    dataset: Dataset = None, split: Split = None, test_length: TestLength = None, max_docs: MaxDocs = None,
    segment_length: SegmentLength = None,
    protocol: Annotated[str | None, opt("stream: each token scored once | paper: the reference's windows.")] = None,
    max_windows: Annotated[int | None, opt("paper protocol: windows to score. [default: 200]")] = None,
    batch_size: BatchSize = None, checkpoint: Checkpoint = None, dtype: Dtype = None, device: Device = None,
    seed: Seed = None, out: Out = None, compile_: Compile = None, cuda_graphs: CudaGraphs = None,
    name: Name = None, selected_on: SelectedOn = None,
) -> None:
    """Perplexity of each method on long documents, under identical segment settings.

    Each method writes one parquet record into --out; a comparison table closes the run. Every flag is
    a spelling of a settings key (`--sensory-tokens 16` = `--set method.sensory_tokens=16`); with --checkpoint,
    what you do not give comes from it (backbone too). --split is scored, never a recipe's (its training split).

    Examples:

        hmtbench eval-ppl --backbone smollm2-135m --method plain,rmt,hmt --max-docs 4

        hmtbench eval-ppl --method hmt --checkpoint results/checkpoints/smollm2-135m-stdlib-hmt-lora/stage2

        hmtbench eval-ppl --recipe recipes/smollm2-135m-stdlib-hmt.yaml --set method.sensory_tokens=16

        hmtbench eval-ppl --backbone random:llama --dataset notes.txt --segment-length 64 --test-length 512
    """
    settings = given(dict(locals()), "eval-ppl", ENGINE_KEYS)
    from hmtbench.commands.eval_ppl import run_eval_ppl
    from hmtbench.commands.summary import print_method_table

    rows = run_eval_ppl(eval_configs(settings), command_line())
    print_method_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']}")


@app.command("eval-qa", cls=MethodSettingsCommand)
@friendly_errors
def eval_qa(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None,
    task: Annotated[str | None, opt("passkey | multi-fact | passkey-unseen-a | passkey-unseen-b | babilong-qa1..qa5 | "
                                    "pubmedqa | narrativeqa | qasper | musique | qmsum, or a local .jsonl (context, "
                                    "question, answer). passkey-unseen-a/-b: passkeys in wordings no training task "
                                    "uses (b: answers such as ember-4821).")] = None,
    split: Annotated[str | None, opt("validation | test: make choices on validation, run the table once on test. "
                                     "Generated tasks draw each split from seeds of its own; a .jsonl needs rows "
                                     "marked \"split\"; hub tasks have test only. [default: test]")] = None,
    backbone: Backbone = None, method: Methods = None,
    context_length: Annotated[str | None, opt("Prompt tokens, or several: 1k,4k,1m (one record per length). "
                                              "passkey/multi-fact: built at this length (1k-1M); babilong: this "
                                              "bin; others: samples cut in the middle to it.")] = None,
    limit: Annotated[int | None, opt("At most this many samples (passkey/multi-fact: how many to make).")] = None,
    max_new_tokens: Annotated[int | None, opt("Longest generated answer [default: the task's own].")] = None,
    depth: Annotated[str | None, opt("Needle depths in [0, 1], comma-separated: passkey cycles through them, "
                                     "multi-fact hides one fact at each.")] = None,
    filler: Annotated[str | None, opt("passkey/multi-fact: local corpus the facts hide in.")] = None,
    data: Annotated[str | None, opt("Local copy of a hub task's data (LongBench data.zip, BABILong .json).")] = None,
    segment_length: SegmentLength = None, checkpoint: Checkpoint = None,
    batch_size: Annotated[int | None, opt("Samples read, scored and decoded together. [default: 16]")] = None,
    decode: Annotated[bool | None, opt("Greedy answers by free decoding (stopped by the end id, a line break for "
                                       "one-line tasks, or --max-new-tokens); --no-decode: the teacher-forced argmax "
                                       "alone. [default: decode]", "--decode/--no-decode")] = None,
    resume: Annotated[bool, opt("Continue an interrupted evaluation with the same settings in --out: the batches it "
                                "scored are kept, the rest run.")] = False,
    dtype: Dtype = None, device: Device = None, seed: Seed = None, out: Out = None,
    compile_: Compile = None, cuda_graphs: CudaGraphs = None, name: Name = None, selected_on: SelectedOn = None,
) -> None:
    """Long-context QA through the memory: answer perplexity and greedy answers (ROUGE-L, F1, EM, accuracy).

    The context is read segment by segment into the method's memory; the gold answer's perplexity
    and a greedy answer follow it. Each method writes a parquet record and a predictions JSONL into --out.

    Examples:

        hmtbench eval-qa --task passkey --context-length 16000 --method plain,rmt,hmt --segment-length 1024

        hmtbench eval-qa --task multi-fact --context-length 1000000 --method hmt --checkpoint runs/hmt/final

        hmtbench eval-qa --task passkey-unseen-b --split validation --context-length 1k,4k --method hmt --checkpoint C

        hmtbench eval-qa --task narrativeqa --data LongBench/data.zip --context-length 8000 --limit 50
    """
    settings = given(dict(locals()), "eval-qa", {"depth": "", "resume": "", "split": "split", **ENGINE_KEYS})
    from hmtbench.commands.eval_qa import parse_depths, print_qa_table, run_eval_qa

    if depth is not None:
        settings["depths"] = parse_depths(depth)
    rows = run_eval_qa(qa_configs(settings), command_line(), resume=resume)
    print_qa_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']} and {row['predictions_file']}")


@app.command("train", cls=MethodSettingsCommand)
@friendly_errors
def train(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None, backbone: Backbone = None,
    method: Annotated[str | None, opt("Any registered method (rmt, hmt, armt, ...); those with nothing of their own "
                                      "to train need --train lora/full.")] = None,
    dataset: Dataset = None, split: Split = None, max_docs: MaxDocs = None,
    task: Annotated[str | None, opt("Train for answers: passkey | multi-fact | babilong-qa1..5 | a .jsonl; the loss "
                                    "is on the answer tokens only, the context read through the memory.")] = None,
    curriculum: Annotated[str | None, opt("With --task: segments per training context, level by level; the next "
                                          "level once 90% of answers are exact (curriculum.advance_at). "
                                          "[default: 1,2,4,8]")] = None,
    segment_length: SegmentLength = None,
    stage: Annotated[int | None, opt("Train only this stage of a staged method (HMT: 1 or 2).")] = None,
    stages: Annotated[str | None, opt("Stages back to back, e.g. 1,2 (HMT's default).")] = None,
    init_from: Annotated[str | None, opt("Checkpoint to start from (its settings fill what you do not give).")] = None,
    steps: Annotated[int | None, opt("Optimizer steps of the last (or only) stage. [default: 500]")] = None,
    stage1_steps: Annotated[int | None, opt("Steps of the earlier stages. [default: 200]")] = None,
    max_minutes: Annotated[float | None, opt("End the run early, at a logged step with its checkpoints, after this "
                                             "many minutes of training (a budgeted GPU call); --resume continues "
                                             "it (and takes --max-minutes for the next chunk).")] = None,
    train_mode: Annotated[str | None, opt("What trains: memory (backbone frozen) | lora | full.", "--train")] = None,
    lora_r: Annotated[int | None, opt("LoRA rank. [default: 8]")] = None,
    lora_alpha: Annotated[int | None, opt("LoRA alpha. [default: 32]")] = None,
    lora_dropout: Annotated[float | None, opt("LoRA dropout. [default: 0.1]")] = None,
    lora_targets: Annotated[str | None, opt("Comma list of module names [default: peft's per architecture].")] = None,
    batch_size: Annotated[int | None, opt("Windows per micro-batch. [default: 2]")] = None,
    grad_accum: Annotated[int | None, opt("Micro-batches per optimizer step.")] = None,
    bptt_depth: Annotated[int | None, opt("D: segments per training window. [default: 2]")] = None,
    bptt_truncate: Annotated[int | None, opt("K: gradients reach only the last K segments.")] = None,
    k2: Annotated[int | None, opt("The official RMT rule instead: the state leaves the graph after every segment "
                                  "i >= 1 with i + k2 <= n (docs/methods.md).")] = None,
    loss_on: Annotated[str | None, opt("last (the window's last segment, HMT reference) | all (RMT's LM script).")
                       ] = None,
    grad_checkpoint: Annotated[bool | None, opt("Recompute each segment in the backward pass: memory flat in the "
                                                "BPTT depth, for ~1/3 more time.", "--grad-checkpoint")] = None,
    recompute_share: RecomputeShare = None,
    compile_: Annotated[bool | None, opt("torch.compile the backbone's blocks and the loss: fewer, fused kernels "
                                         "for a host-bound step (first steps compile).", "--compile")] = None,
    cuda_graphs: Annotated[bool | None, opt("Replay each micro-batch's forward and backward from a CUDA graph: one "
                                            "launch instead of thousands (language modelling; a GPU).",
                                            "--cuda-graphs")] = None,
    lr: Annotated[float | None, opt("Peak learning rate. [default: 1e-4]")] = None,
    lr_schedule: Annotated[str | None, opt("step (x --lr-decay every --decay-every steps, HMT's) | linear (warm-up, "
                                           "then down to 0: RMT's).")] = None,
    warmup_steps: Annotated[int | None, opt("Linear warm-up steps.")] = None,
    lr_decay: Annotated[float | None, opt("LR factor every --decay-every steps. [default: 0.9]")] = None,
    decay_every: Annotated[int | None, opt("Steps between LR decays. [default: 100]")] = None,
    grad_clip: Annotated[float | None, opt("Gradient-norm clip. [default: 1.0]")] = None,
    checkpoint_every: Annotated[int | None, opt("Save the resumable checkpoint every N steps. [default: 100]")] = None,
    max_file_mb: Annotated[float | None, opt("Write checkpoint tensor files over this many MiB in parts (16: what a "
                                             "GPU machine hands back and a commit holds).")] = None,
    log_every: Annotated[int | None, opt("Write a JSON log line every N steps. [default: 10]")] = None,
    seed: Seed = None,
    output_dir: Annotated[str | None, opt("Run folder [default: runs/<backbone>-<method>-<time>].")] = None,
    resume: Annotated[str | None, opt("Continue the run in this folder exactly where it stopped (only "
                                      "--max-minutes, --out and --device may be given with it).")] = None,
    dtype: Annotated[str | None, opt("auto: bf16 weights on GPU (fp32 for --train full), fp32 on CPU.")] = None,
    device: Device = None, out: Out = None, name: Name = None,
) -> None:
    """Train a method (HMT: stage 1, stage 2, or both back to back), or LoRA on a plain backbone.

    Windows of D segments (stride one segment) from the training split; loss on the last
    segment (reference) or all; full BPTT over the window unless --bptt-truncate.
    Checkpoints hold only the trained tensors (safetensors) and resume exactly.

    Examples:

        hmtbench train --recipe recipes/smollm2-135m-stdlib-hmt.yaml

        hmtbench train --method rmt --bptt-depth 6 --steps 300 --output-dir runs/rmt

        hmtbench train --method hmt --stage 2 --init-from runs/hmt/stage1/final --set train.lr=5e-5

        hmtbench train --method rmt --task passkey --curriculum 1,2,4,8 --train lora --steps 400

        hmtbench train --backbone llama2-7b --method hmt --train lora --bptt-depth 6 --compile --cuda-graphs

        hmtbench train --resume runs/rmt --max-minutes 9
    """
    params = dict(locals())
    from hmtbench.commands.train import TRAIN_KEYS, describe_stage, load_run_config, run_train, train_config

    params.update(stages=[stage] if stage else [int(s) for s in stages.split(",")] if stages else None,
                  lora_targets=lora_targets.split(",") if lora_targets else None,
                  curriculum=[int(s) for s in curriculum.split(",")] if curriculum else None)
    settings = given(params, "train", TRAIN_KEYS)
    config = load_run_config(resume, settings) if resume else train_config(settings, recipe)
    rows = run_train(config, command_line=command_line(), resume=resume)
    for row in rows:
        typer.echo(describe_stage(row))
    for row in rows:
        typer.echo(f"wrote {row['output_dir']}/final and a record in {config.out}")


@app.command("bench", cls=MethodSettingsCommand)
@friendly_errors
def bench(
    ctx: typer.Context, recipe: Recipe = None, set_: Sets = None, backbone: Backbone = None,
    method: Annotated[str | None, opt("Methods to measure, comma-separated [default: every registered one].",
                                      "--method")] = None,
    lengths: Annotated[str | None, opt("Context lengths in tokens, comma-separated (k = 1024). "
                                       "[default: 2k,4k,8k,16k,32k,64k]")] = None,
    batch_size: Annotated[str | None, opt("Batch sizes, comma-separated. [default: 1]")] = None,
    train_batch_size: Annotated[str | None, opt("Batch sizes of the training step [default: --batch-size].")] = None,
    mode: Annotated[str | None, opt("eval (the segment loop) | train (one step) | eval,train.")] = None,
    bptt_depth: Annotated[int | None, opt("D: segments per window of the training step. [default: 6]")] = None,
    train_mode: Annotated[str | None, opt("What the training step trains: memory | lora | full. [default: memory]",
                                          "--train")] = None,
    grad_checkpoint: Annotated[bool | None, opt("The training step recomputes each segment in its backward pass.",
                                                "--grad-checkpoint")] = None,
    recompute_share: RecomputeShare = None,
    max_batch_tokens: Annotated[int | None, opt("Leave out evaluation cases holding more tokens per batch.")] = None,
    segment_length: SegmentLength = None, compile_: Compile = None, cuda_graphs: CudaGraphs = None,
    warmup: Annotated[int | None, opt("Untimed calls per case (compilation, graph capture). [default: 1]")] = None,
    repeat: Annotated[int | None, opt("Timed calls per case at most; the median is recorded. [default: 3]")] = None,
    max_seconds: Annotated[float | None, opt("Stop timing a case after this long. [default: 5]")] = None,
    dtype: Dtype = None, device: Device = None, seed: Seed = None, name: Name = None,
    out: Annotated[str | None, opt("Folder for the parquet records. [default: results/bench]")] = None,
) -> None:
    """Speed and memory per method, context length and batch size: tokens/s, ms per segment, peak GPU memory.

    eval reads a batch of random-token documents with the real segment loop; train times one forward and
    backward of a D-segment window. One parquet record per case (`hmtbench compare --metric tokens_per_s`,
    `hmtbench plot --figure memory-vs-length`); full context beyond the backbone's positions is a skipped row.

    Examples:

        hmtbench bench --backbone smollm2-135m --batch-size 1,64 --compile --cuda-graphs

        hmtbench bench --backbone random:llama-7b --method rmt,hmt --mode train --batch-size 1,4 --sensory-tokens 32

        hmtbench bench --backbone random:llama --segment-length 64 --lengths 256,1k --device cpu
    """
    settings = given(dict(locals()), "bench", {**ENGINE_KEYS, "train_mode": "train"})
    from hmtbench.commands.bench import describe_row, run_bench

    config = bench_config(settings)
    rows = run_bench(config, command_line(), on_row=lambda row: typer.echo(describe_row(row)))
    typer.echo(f"wrote {len(rows)} records to {config.out}")


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
                                      "memory-vs-length | quality-vs-params (comma-separated).")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="Every figure the results support.")] = False,
    out: FiguresOut = "figures",
    backbone: OnlyBackbones = None, dataset: OnlyDatasets = None, method: OnlyMethods = None,
    metric: Annotated[str | None, opt("Draw this metric instead of the figure's own (e.g. bpb for ppl-bars).")] = None,
    include_failed: IncludeFailed = False,
) -> None:
    """The paper's figures from result records, as PNG and PDF.

    Examples:

        hmtbench plot results/ --paper

        hmtbench plot results/ --figure ppl-bars --out my-figures/

        hmtbench plot results/ --figure memory-vs-length --backbone smollm2-135m
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
