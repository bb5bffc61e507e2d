"""Options several commands share, declared once, and how a command's flags become settings keys.

Every flag is a spelling of a settings key (``--sensory-tokens 32`` is ``--set method.sensory_tokens=32``);
flags default to None, meaning "not given", so a recipe's or a checkpoint's value is never overridden
by a default the user did not type. A method's own settings are not declared here: their flags are
generated from the methods' config fields (``hmtbench.commands.method_flags``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hmtbench.commands.method_flags import given_settings
from hmtbench.commands.recipe import recipe_settings
from hmtbench.config import SEED, gather
from hmtbench.methods import METHODS

METHOD_KEYS = ("stage",)  # a command's own flags that are also method settings (train --stage)
DATA_KEYS = ("dataset", "split", "test_length", "max_docs")
NOT_SETTINGS = ("recipe", "set_", "ctx")


def given(params: dict[str, Any], command: str, renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings ``command`` was given: what it reads of its recipe, its flags (keys as in the config), then
    --set. The recipe's settings it does not read are named in a note (``commands/recipe.py``).

    ``renamed`` maps a flag's parameter name to its settings key where the default rule (method and
    data settings under ``method.`` / ``data.``, the rest at the top) does not fit; "" for flags that
    are not settings.
    """
    renamed = renamed or {}
    flags = given_settings(params.get("ctx"))
    for name, value in params.items():
        key = renamed.get(name, f"method.{name}" if name in METHOD_KEYS else
                          f"data.{name}" if name in DATA_KEYS else name)
        if name not in NOT_SETTINGS and key:
            flags[key] = value
    recipe = None
    if params.get("recipe"):
        recipe, aside = recipe_settings(params["recipe"], command)
        if aside:
            typer.secho(f"note: {command} does not use the recipe's {', '.join(aside)} (set aside)", err=True)
    return gather(recipe, flags, params.get("set_"))


def opt(help: str, *names: str) -> Any:
    return typer.Option(*names, help=help, show_default=False)


Recipe = Annotated[str | None, opt("YAML recipe (recipes/): its settings, then the flags, then --set. Any recipe "
                                   "serves every command: settings this one does not use (a training recipe's "
                                   "train, lora, curriculum) are set aside, named in a note.")]
Sets = Annotated[list[str] | None, opt("Dotted override, e.g. --set method.sensory_tokens=16 (repeatable).", "--set")]
Backbone = Annotated[
    str | None, opt("Alias (smollm2-135m, opt-2.7b, ...), hub id, model folder, .gguf file, random:llama or "
                    "random:llama-7b (a paper shape with random weights). [default: smollm2-135m]")
]
Methods = Annotated[str | None, opt(f"{' | '.join(METHODS)} (or an installed plugin's), or several: plain,rmt,hmt.",
                                    "--method")]
Dataset = Annotated[str | None, opt("wikitext-103, pg19, pydoc-topics, python-stdlib, or a .txt/.jsonl/.parquet path.")]
Split = Annotated[str | None, opt("train | validation | test (ignored for local files).")]
TestLength = Annotated[int | None, opt("Tokens per document. [default: 2000]")]
MaxDocs = Annotated[int | None, opt("Evaluate at most this many documents.")]
SegmentLength = Annotated[int | None, opt("L: positions per backbone step, memory and sensory in it. [default: 256]")]
Checkpoint = Annotated[
    str | None, opt("Folder written by `hmtbench train`: its tensors, and the settings you do not give.")
]
Dtype = Annotated[str | None, opt("auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16.")]
Device = Annotated[str | None, opt("auto | cpu | cuda | cuda:1 ...")]
Seed = Annotated[int | None, opt(f"Random seed (initialisation of untrained memories, sampling). [default: {SEED}]")]
Out = Annotated[str | None, opt("Folder for the parquet records. [default: results]")]
Name = Annotated[str | None, opt("Short name of the run for tables and figure legends (e.g. hmt-span), one per "
                                 "--method, comma-separated.")]
SelectedOn = Annotated[str | None, opt("The split this configuration was chosen on: validation | test (recorded; "
                                       "compare shows it).")]
PerSeed = Annotated[bool, typer.Option("--per-seed", help="List each seed's value under the table.")]
FiguresOut = Annotated[str, typer.Option("--out", help="Folder for the PNG and PDF files (the committed "
                                                      "results/figures only when named, as `make figures` does).")]
BatchSize = Annotated[int | None, opt("Documents (or windows) per batch.")]
Compile = Annotated[bool | None, opt("torch.compile the backbone blocks and the loss.", "--compile/--no-compile")]
CudaGraphs = Annotated[
    bool | None, opt("Replay each segment step (bench's training step: its whole forward and backward) from a CUDA "
                     "graph.", "--cuda-graphs/--no-cuda-graphs")
]
RecomputeShare = Annotated[
    float | None, opt("With --grad-checkpoint: the share of a window's segments recomputed (the earliest); the rest "
                      "keep their activations, trading memory for time. [default: 1]")
]
ResultPaths = Annotated[
    list[str] | None,
    typer.Argument(help="Result folders or .parquet files, searched recursively [default: results].",
                   show_default=False),
]
OnlyBackbones = Annotated[str | None, opt("Only these backbones (comma-separated).", "--backbone")]
OnlyDatasets = Annotated[str | None, opt("Only these datasets (comma-separated).", "--dataset")]
OnlyMethods = Annotated[str | None, opt("Only these methods (comma-separated).", "--method")]
IncludeFailed = Annotated[bool, typer.Option("--include-failed", "--all", help="Also show failed and canceled runs.")]
