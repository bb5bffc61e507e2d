"""The `hmtbench` command line: wiring only; every command calls a library function."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from hmtbench.errors import HmtbenchError

app = typer.Typer(
    name="hmtbench",
    help="Benchmark long-context memory methods (plain, RMT, HMT) on any Hugging Face causal LM.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def root() -> None:
    """Benchmark long-context memory methods (plain, RMT, HMT) on any Hugging Face causal LM.

    Typical use: `hmtbench eval-ppl --method plain,rmt,hmt`, then `hmtbench compare results/`.
    """


def friendly_errors(command: F) -> F:
    """Show known errors as one line (exit 2); HMTBENCH_DEBUG=1 shows the traceback instead."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HmtbenchError as err:
            if os.environ.get("HMTBENCH_DEBUG"):
                raise
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("canceled", fg="yellow", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# ----- options shared by several commands ----------------------------------------------------
Backbone = Annotated[
    str, typer.Option(help="Alias (smollm2-135m, opt-2.7b, ...), hub id, model folder, .gguf file or random:llama.")
]
Methods = Annotated[str, typer.Option("--method", help="plain | full | rmt | hmt, or several: plain,rmt,hmt.")]
Dataset = Annotated[
    str, typer.Option(help="wikitext-103, pg19, pydoc-topics, python-stdlib, or a .txt/.jsonl/.parquet path.")
]
Split = Annotated[str, typer.Option(help="train | validation | test (ignored for local files).")]
TestLength = Annotated[int, typer.Option(help="Tokens per document (paper default 2000).")]
MaxDocs = Annotated[int | None, typer.Option(help="Evaluate at most this many documents.")]
SegmentLength = Annotated[int, typer.Option(help="L: positions per backbone step, memory and sensory included.")]
MemoryTokens = Annotated[int, typer.Option(help="m: memory tokens at each end of a segment (RMT; HMT uses 1).")]
SensoryTokens = Annotated[int, typer.Option(help="k: HMT sensory tokens from the previous segment.")]
RecallContext = Annotated[int, typer.Option(help="N: memory embeddings HMT caches for recall.")]
RecallHiddenDim = Annotated[int, typer.Option(help="h: width of HMT's recall query/key projections.")]
SumFraction = Annotated[float, typer.Option(help="Share of a segment HMT's summary prompt reads.")]
SummaryPass = Annotated[
    str,
    typer.Option(
        help="When HMT evaluation computes its summaries: ahead (batched passes before the segments), inline "
        "(each in the previous segment's backbone call: no extra call; pays on a GPU at small batches), or auto."
    ),
]
Checkpoint = Annotated[
    str | None, typer.Option(help="Folder written by `hmtbench train` with the method's trained tensors.")
]
Dtype = Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:1 ...")]
Seed = Annotated[int, typer.Option(help="Random seed (initialisation of untrained memories, sampling).")]
Out = Annotated[str, typer.Option(help="Folder for the parquet records.")]
BatchSize = Annotated[int, typer.Option(help="Documents (or windows) per batch.")]


@app.command("eval-ppl")
@friendly_errors
def eval_ppl(
    backbone: Backbone = "smollm2-135m",
    method: Methods = "plain",
    dataset: Dataset = "python-stdlib",
    split: Split = "test",
    test_length: TestLength = 2000,
    max_docs: MaxDocs = None,
    segment_length: SegmentLength = 256,
    memory_tokens: MemoryTokens = 1,
    sensory_tokens: SensoryTokens = 0,
    recall_context: RecallContext = 100,
    recall_hidden_dim: RecallHiddenDim = 4096,
    sum_fraction: SumFraction = 0.5,
    summary_pass: SummaryPass = "auto",
    protocol: Annotated[
        str, typer.Option(help="stream: each token scored once | paper: the reference's windows.")
    ] = "stream",
    max_windows: Annotated[
        int, typer.Option(help="paper protocol: windows to score (reference: 100 batches x 2).")
    ] = 200,
    batch_size: BatchSize = 4,
    checkpoint: Checkpoint = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Seed = 3407,
    out: Out = "results",
    compile_: Compile = False,  # Compile, CudaGraphs: declared with `bench` below
    cuda_graphs: CudaGraphs = False,
) -> None:
    """Perplexity of plain / full / RMT / HMT on long documents, under identical segment settings.

    Each method writes one parquet record into --out; a comparison table closes the run.

    Examples:

        hmtbench eval-ppl --backbone smollm2-135m --method plain,rmt,hmt --max-docs 4

        hmtbench eval-ppl --backbone opt-2.7b --method hmt --dataset wikitext-103 --checkpoint runs/opt-hmt/final

        hmtbench eval-ppl --backbone random:llama --dataset notes.txt --segment-length 64 --test-length 512
    """
    from hmtbench.commands.eval_ppl import run_eval_ppl
    from hmtbench.commands.summary import print_method_table
    from hmtbench.config import DataSettings, EvalConfig, MemorySettings
    from hmtbench.fastpath import EngineOptions

    config = EvalConfig(
        backbone=backbone,
        memory=MemorySettings(
            segment_length, memory_tokens, sensory_tokens, recall_context, recall_hidden_dim, sum_fraction,
            summary_pass=summary_pass,
        ),
        data=DataSettings(dataset, split, test_length, max_docs),
        protocol=protocol,
        batch_size=batch_size,
        max_windows=max_windows,
        checkpoint=checkpoint,
        dtype=dtype,
        device=device,
        seed=seed,
        out=out,
    )
    methods = [m.strip() for m in method.split(",") if m.strip()]
    engine = EngineOptions(compile=compile_, cuda_graphs=cuda_graphs)
    rows = run_eval_ppl(config, methods, command_line=["hmtbench", *sys.argv[1:]], engine=engine)
    print_method_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']}")


@app.command("train")
@friendly_errors
def train(
    recipe: Annotated[
        str | None, typer.Option(help="YAML recipe from recipes/ (its settings, then flags, then --set).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Dotted override, e.g. --set train.lr=1e-4 (repeatable).")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="As in eval-ppl (default smollm2-135m).")] = None,
    method: Annotated[str | None, typer.Option(help="rmt | hmt | plain (plain needs --train lora/full).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Training corpus (default python-stdlib, split train).")] = None,
    split: Annotated[str | None, typer.Option(help="train | validation | test.")] = None,
    max_docs: Annotated[int | None, typer.Option(help="Use at most this many documents.")] = None,
    segment_length: Annotated[int | None, typer.Option(help="L, as in eval-ppl.")] = None,
    memory_tokens: Annotated[int | None, typer.Option(help="m (RMT).")] = None,
    sensory_tokens: Annotated[int | None, typer.Option(help="k (HMT).")] = None,
    recall_context: Annotated[int | None, typer.Option(help="N (HMT).")] = None,
    recall_hidden_dim: Annotated[int | None, typer.Option(help="h (HMT).")] = None,
    sum_fraction: Annotated[float | None, typer.Option(help="HMT summary share of a segment.")] = None,
    stage: Annotated[
        int | None, typer.Option(help="Train one HMT stage: 1 (memory + sensory) or 2 (with recall).")
    ] = None,
    stages: Annotated[str | None, typer.Option(help="HMT stages back to back, e.g. 1,2 (default).")] = None,
    init_from: Annotated[
        str | None, typer.Option(help="Checkpoint to start from (e.g. stage 1's final folder).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps of the last (or only) stage (default 500).")
    ] = None,
    stage1_steps: Annotated[int | None, typer.Option(help="Steps of HMT stage 1 (default 200).")] = None,
    train_mode: Annotated[
        str | None, typer.Option("--train", help="What trains: memory (backbone frozen) | lora | full.")
    ] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (default 8).")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default 32).")] = None,
    lora_dropout: Annotated[float | None, typer.Option(help="LoRA dropout (default 0.1).")] = None,
    lora_targets: Annotated[
        str | None, typer.Option(help="Comma list of module names (default: peft's per architecture).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per micro-batch (default 2).")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
    bptt_depth: Annotated[int | None, typer.Option(help="D: segments per training window (default 2).")] = None,
    bptt_truncate: Annotated[int | None, typer.Option(help="K: gradients reach only the last K segments.")] = None,
    loss_on: Annotated[str | None, typer.Option(help="last (the window's last segment, reference) | all.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default 1e-4).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="Linear warm-up steps.")] = None,
    lr_decay: Annotated[float | None, typer.Option(help="LR factor every --decay-every steps (default 0.9).")] = None,
    decay_every: Annotated[int | None, typer.Option(help="Steps between LR decays (default 100).")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Gradient-norm clip (default 1.0).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Save the resumable checkpoint every N steps.")] = None,
    log_every: Annotated[int | None, typer.Option(help="Write a JSON log line every N steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and data order (default 3407).")] = None,
    output_dir: Annotated[
        str | None, typer.Option(help="Run folder (default runs/<backbone>-<method>-<time>).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue the run in this folder exactly where it stopped.")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto: bf16 weights on GPU (fp32 for --train full), fp32 on CPU.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda ...")] = None,
    out: Annotated[str | None, typer.Option(help="Folder for the parquet record (default results).")] = None,
) -> None:
    """Train RMT, HMT (stage 1, stage 2, or both back to back) or LoRA on a plain backbone.

    Windows of D segments (stride one segment) from the training split; loss on the last
    segment (reference) or all; full BPTT over the window unless --bptt-truncate.
    Checkpoints hold only the trained tensors (safetensors) and resume exactly.

    Examples:

        hmtbench train --recipe recipes/smollm2-135m-stdlib-hmt.yaml

        hmtbench train --method rmt --bptt-depth 6 --steps 300 --output-dir runs/rmt

        hmtbench train --method hmt --stage 2 --init-from runs/hmt/stage1/final --set train.lr=5e-5

        hmtbench train --resume runs/rmt
    """
    from hmtbench.commands.train import load_run_config, run_train
    from hmtbench.config import apply_override, from_dict, load_yaml
    from hmtbench.training.config import TrainConfig

    if resume:
        config = load_run_config(resume)
    else:
        values = load_yaml(recipe) if recipe else {}
        flags = {
            "backbone": backbone,
            "method": method,
            "data.dataset": dataset,
            "data.split": split,
            "data.max_docs": max_docs,
            "memory.segment_length": segment_length,
            "memory.memory_tokens": memory_tokens,
            "memory.sensory_tokens": sensory_tokens,
            "memory.recall_context": recall_context,
            "memory.recall_hidden_dim": recall_hidden_dim,
            "memory.sum_fraction": sum_fraction,
            "train.stages": [stage] if stage else ([int(s) for s in stages.split(",")] if stages else None),
            "train.init_from": init_from,
            "train.steps": steps,
            "train.stage1_steps": stage1_steps,
            "train.train": train_mode,
            "lora.r": lora_r,
            "lora.alpha": lora_alpha,
            "lora.dropout": lora_dropout,
            "lora.targets": lora_targets.split(",") if lora_targets else None,
            "train.batch_size": batch_size,
            "train.grad_accum": grad_accum,
            "train.bptt_depth": bptt_depth,
            "train.bptt_truncate": bptt_truncate,
            "train.loss_on": loss_on,
            "train.lr": lr,
            "train.warmup_steps": warmup_steps,
            "train.lr_decay": lr_decay,
            "train.decay_every": decay_every,
            "train.grad_clip": grad_clip,
            "train.checkpoint_every": checkpoint_every,
            "train.log_every": log_every,
            "train.seed": seed,
            "output_dir": output_dir,
            "dtype": dtype,
            "device": device,
            "out": out,
        }
        for key, value in flags.items():
            if value is not None:
                apply_override(values, f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
        for assignment in set_ or []:
            apply_override(values, assignment)
        config = from_dict(TrainConfig, values)
    rows = run_train(config, command_line=["hmtbench", *sys.argv[1:]], resume=resume)
    for row in rows:
        typer.echo(f"{row['method']} {row['status']}: final loss {row['final_loss']:.4f} after {row['steps']} steps")
    for row in rows:
        typer.echo(f"wrote {row['output_dir']}/final and a record in {config.out}")


# ----- reading results back: compare and plot ------------------------------------------------
ResultPaths = Annotated[
    list[str] | None,
    typer.Argument(
        help="Result folders or .parquet files, searched recursively [default: results].", show_default=False
    ),
]
OnlyBackbones = Annotated[str | None, typer.Option("--backbone", help="Only these backbones (comma-separated).")]
OnlyDatasets = Annotated[str | None, typer.Option("--dataset", help="Only these datasets (comma-separated).")]
OnlyMethods = Annotated[str | None, typer.Option("--method", help="Only these methods (comma-separated).")]
IncludeFailed = Annotated[bool, typer.Option("--include-failed", "--all", help="Also show failed and canceled runs.")]


def _warn(message: str) -> None:
    typer.secho(message, fg="yellow", err=True)


@app.command("compare")
@friendly_errors
def compare(
    paths: ResultPaths = None,
    backbone: OnlyBackbones = None,
    dataset: OnlyDatasets = None,
    method: OnlyMethods = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="ppl, bpb, paper_ppl, rouge_l, accuracy, peak_gpu_mem_mb, tokens_per_s, ... (comma-separated) "
            "[default: the quality metrics the runs have].",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | json.")] = "table",
    output: Annotated[str | None, typer.Option(help="Also write the table to this file.")] = None,
    include_failed: IncludeFailed = False,
) -> None:
    """Methods side by side: a row per backbone x dataset x settings, the paper's deltas, the best marked.

    Cells are mean ± std (n runs). Runs whose settings differ are never averaged: they get rows of their own.
    'HMT vs RMT, %' = (RMT - HMT) / RMT x 100 for lower-is-better metrics, (HMT - RMT) / RMT x 100 for
    higher-is-better ones: positive always means the first method is better.

    Examples:

        hmtbench compare results/

        hmtbench compare results/ --backbone smollm2-135m --metric ppl,bpb --format markdown

        hmtbench compare results/ old-runs/ --format csv --output table.csv
    """
    from hmtbench.analysis.compare import run_compare

    filters = {"backbone": backbone, "dataset": dataset, "method": method}
    typer.echo(run_compare(paths or ["results"], filters, metric, fmt, include_failed, output, warn=_warn))
    if output:
        typer.echo(f"wrote {output}")


@app.command("plot")
@friendly_errors
def plot(
    paths: ResultPaths = None,
    figure: Annotated[
        str | None,
        typer.Option(
            help="ppl-bars | qa-bars | ppl-vs-position | memory-vs-length | quality-vs-params (comma-separated)."
        ),
    ] = None,
    paper: Annotated[
        bool,
        typer.Option("--paper", help="Every figure the results support; the others are named with the runs they lack."),
    ] = False,
    out: Annotated[str, typer.Option(help="Folder for the PNG and PDF files.")] = "results/figures",
    backbone: OnlyBackbones = None,
    dataset: OnlyDatasets = None,
    method: OnlyMethods = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Draw this metric instead of the figure's own (e.g. bpb for ppl-bars).", show_default=False),
    ] = None,
    include_failed: IncludeFailed = False,
) -> None:
    """The paper's figures from result records, as PNG and PDF: bars per backbone, curves, memory, parameters.

    ppl-bars (Figures 2-4), qa-bars (Figure 5), ppl-vs-position, memory-vs-length, quality-vs-params.

    Examples:

        hmtbench plot results/ --paper

        hmtbench plot results/ --figure ppl-bars --out figures/

        hmtbench plot results/ --figure memory-vs-length --backbone smollm2-135m
    """
    from hmtbench.analysis.plot import run_plot

    names = [name.strip() for name in (figure or "").split(",") if name.strip()]
    filters = {"backbone": backbone, "dataset": dataset, "method": method}
    for path in run_plot(paths or ["results"], names, out, paper, filters, metric, include_failed, warn=_warn):
        typer.echo(f"wrote {path}")


@app.command("eval-qa")
@friendly_errors
def eval_qa(
    task: Annotated[
        str,
        typer.Option(
            help="passkey | multi-fact | babilong-qa1..qa5 | pubmedqa | narrativeqa | "
            "qasper | musique | qmsum, or a local .jsonl (context, question, "
            "answer)."
        ),
    ] = "passkey",
    backbone: Backbone = "smollm2-135m",
    method: Methods = "plain",
    context_length: Annotated[
        int | None,
        typer.Option(
            help="Prompt tokens. passkey/multi-fact: built at this length "
            "(1k-1M); babilong: this bin; others: samples at least "
            "this long, cut in the middle to it."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="At most this many samples (passkey/multi-fact: how many to generate, default 10)."),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Longest generated answer [default: the task's own].", show_default=False)
    ] = None,
    depth: Annotated[
        str | None,
        typer.Option(
            help="Needle depths in [0, 1], comma-separated: passkey cycles through "
            "them, multi-fact hides one fact at each."
        ),
    ] = None,
    filler: Annotated[
        str,
        typer.Option(
            help="passkey/multi-fact: local corpus the facts hide in (pydoc-topics, python-stdlib, a .txt file)."
        ),
    ] = "pydoc-topics",
    data: Annotated[
        str | None,
        typer.Option(
            help="Local copy of a hub task's data: LongBench data.zip or .jsonl, "
            "BABILong .json/.jsonl, PubMedQA .jsonl/.parquet."
        ),
    ] = None,
    segment_length: SegmentLength = 256,
    memory_tokens: MemoryTokens = 1,
    sensory_tokens: SensoryTokens = 0,
    recall_context: RecallContext = 100,
    recall_hidden_dim: RecallHiddenDim = 4096,
    sum_fraction: SumFraction = 0.5,
    summary_pass: SummaryPass = "auto",
    checkpoint: Checkpoint = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Seed = 3407,
    out: Out = "results",
) -> None:
    """Long-context QA through the memory: answer perplexity and greedy answers (ROUGE-L, F1, EM, accuracy).

    The context is read segment by segment into the method's memory; the gold answer's perplexity
    and a greedy answer follow it. Each method writes a parquet record and a predictions JSONL into --out.

    Examples:

        hmtbench eval-qa --task passkey --context-length 16000 --method plain,rmt,hmt --segment-length 1024

        hmtbench eval-qa --task multi-fact --context-length 1000000 --method hmt --checkpoint runs/hmt/final

        hmtbench eval-qa --task narrativeqa --data LongBench/data.zip --context-length 8000 --limit 50

        hmtbench eval-qa --task my_questions.jsonl --backbone random:llama --segment-length 64
    """
    from hmtbench.commands.eval_qa import QAConfig, parse_depths, print_qa_table, run_eval_qa
    from hmtbench.config import MemorySettings

    config = QAConfig(
        backbone=backbone,
        task=task,
        memory=MemorySettings(
            segment_length, memory_tokens, sensory_tokens, recall_context, recall_hidden_dim, sum_fraction,
            summary_pass=summary_pass,
        ),
        context_length=context_length,
        limit=limit,
        max_new_tokens=max_new_tokens,
        depths=parse_depths(depth),
        filler=filler,
        data=data,
        checkpoint=checkpoint,
        dtype=dtype,
        device=device,
        seed=seed,
        out=out,
    )
    methods = [m.strip() for m in method.split(",") if m.strip()]
    rows = run_eval_qa(config, methods, command_line=["hmtbench", *sys.argv[1:]])
    print_qa_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']} and {row['predictions_file']}")


# ----- speed and memory: bench -----------------------------------------------------------------
Compile = Annotated[
    bool, typer.Option("--compile/--no-compile", help="torch.compile the backbone blocks and the loss.")
]
CudaGraphs = Annotated[
    bool, typer.Option("--cuda-graphs/--no-cuda-graphs", help="Replay each evaluation step from a CUDA graph.")
]


@app.command("bench")
@friendly_errors
def bench(
    backbone: Backbone = "smollm2-135m",
    method: Methods = "plain,full,rmt,hmt",
    lengths: Annotated[str, typer.Option(help="Context lengths in tokens, comma-separated (k = 1024).")] = (
        "2k,4k,8k,16k,32k,64k"
    ),
    batch_size: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1",
    train_batch_size: Annotated[
        str | None, typer.Option(help="Batch sizes of the training step [default: --batch-size].", show_default=False)
    ] = None,
    mode: Annotated[str, typer.Option(help="eval (the segment loop) | train (one step) | eval,train.")] = "eval,train",
    bptt_depth: Annotated[int, typer.Option(help="D: segments per window of the training step.")] = 6,
    max_batch_tokens: Annotated[
        int | None, typer.Option(help="Leave out evaluation cases whose batch holds more tokens than this.")
    ] = None,
    segment_length: SegmentLength = 256,
    memory_tokens: MemoryTokens = 1,
    sensory_tokens: SensoryTokens = 0,
    recall_context: RecallContext = 100,
    recall_hidden_dim: RecallHiddenDim = 4096,
    sum_fraction: SumFraction = 0.5,
    summary_pass: SummaryPass = "auto",
    compile_: Compile = False,
    cuda_graphs: CudaGraphs = False,
    warmup: Annotated[int, typer.Option(help="Untimed calls per case (compilation and graph capture).")] = 1,
    repeat: Annotated[int, typer.Option(help="Timed calls per case at most; the median is recorded.")] = 3,
    max_seconds: Annotated[float, typer.Option(help="Stop timing a case after this long (one call at least).")] = 5.0,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Seed = 3407,
    out: Out = "results/bench",
) -> None:
    """Speed and memory per method, context length and batch size: tokens/s, ms per segment, peak GPU memory.

    eval reads a batch of random-token documents with the real segment loop; train times one forward and
    backward of a D-segment window. One parquet record per case (`hmtbench compare --metric tokens_per_s`,
    `hmtbench plot --figure memory-vs-length`); full context beyond the backbone's positions is a skipped row.

    Examples:

        hmtbench bench --backbone smollm2-135m --batch-size 1,64 --compile --cuda-graphs

        hmtbench bench --method rmt,hmt --mode train --batch-size 1,8 --bptt-depth 6

        hmtbench bench --backbone random:llama --segment-length 64 --lengths 256,1k --device cpu
    """
    from hmtbench.benchmark import BenchConfig, describe_row, parse_counts, run_bench
    from hmtbench.config import MemorySettings
    from hmtbench.fastpath import EngineOptions

    config = BenchConfig(
        backbone=backbone,
        methods=[m.strip() for m in method.split(",") if m.strip()],
        lengths=parse_counts(lengths, "--lengths"),
        batch_sizes=parse_counts(batch_size, "--batch-size"),
        train_batch_sizes=parse_counts(train_batch_size, "--train-batch-size") if train_batch_size else None,
        modes=[m.strip() for m in mode.split(",") if m.strip()],
        memory=MemorySettings(
            segment_length, memory_tokens, sensory_tokens, recall_context, recall_hidden_dim, sum_fraction,
            summary_pass=summary_pass,
        ),
        bptt_depth=bptt_depth,
        engine=EngineOptions(compile=compile_, cuda_graphs=cuda_graphs),
        warmup=warmup,
        repeat=repeat,
        max_seconds=max_seconds,
        max_batch_tokens=max_batch_tokens,
        dtype=dtype,
        device=device,
        seed=seed,
        out=out,
    )
    rows = run_bench(config, ["hmtbench", *sys.argv[1:]], on_row=lambda row: typer.echo(describe_row(row)))
    typer.echo(f"wrote {len(rows)} records to {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
