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
Backbone = Annotated[str, typer.Option(help="Alias (smollm2-135m, opt-2.7b, ...), hub id, model folder, .gguf file or random:llama.")]
Methods = Annotated[str, typer.Option("--method", help="plain | full | rmt | hmt, or several: plain,rmt,hmt.")]
Dataset = Annotated[str, typer.Option(help="wikitext-103, pg19, pydoc-topics, python-stdlib, or a .txt/.jsonl/.parquet path.")]
Split = Annotated[str, typer.Option(help="train | validation | test (ignored for local files).")]
TestLength = Annotated[int, typer.Option(help="Tokens per document (paper default 2000).")]
MaxDocs = Annotated[int | None, typer.Option(help="Evaluate at most this many documents.")]
SegmentLength = Annotated[int, typer.Option(help="L: positions per backbone step, memory and sensory included.")]
MemoryTokens = Annotated[int, typer.Option(help="m: memory tokens at each end of a segment (RMT; HMT uses 1).")]
SensoryTokens = Annotated[int, typer.Option(help="k: HMT sensory tokens from the previous segment.")]
RecallContext = Annotated[int, typer.Option(help="N: memory embeddings HMT caches for recall.")]
RecallHiddenDim = Annotated[int, typer.Option(help="h: width of HMT's recall query/key projections.")]
SumFraction = Annotated[float, typer.Option(help="Share of a segment HMT's summary prompt reads.")]
Checkpoint = Annotated[str | None, typer.Option(help="Folder written by `hmtbench train` with the method's trained tensors.")]
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
    protocol: Annotated[str, typer.Option(help="stream: each token scored once | paper: the reference's windows.")] = "stream",
    max_windows: Annotated[int, typer.Option(help="paper protocol: windows to score (reference: 100 batches x 2).")] = 200,
    batch_size: BatchSize = 4,
    checkpoint: Checkpoint = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    seed: Seed = 3407,
    out: Out = "results",
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

    config = EvalConfig(
        backbone=backbone,
        memory=MemorySettings(segment_length, memory_tokens, sensory_tokens, recall_context, recall_hidden_dim,
                              sum_fraction),
        data=DataSettings(dataset, split, test_length, max_docs),
        protocol=protocol, batch_size=batch_size, max_windows=max_windows, checkpoint=checkpoint,
        dtype=dtype, device=device, seed=seed, out=out,
    )
    methods = [m.strip() for m in method.split(",") if m.strip()]
    rows = run_eval_ppl(config, methods, command_line=["hmtbench", *sys.argv[1:]])
    print_method_table(rows)
    for row in rows:
        typer.echo(f"wrote {row['path']}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
