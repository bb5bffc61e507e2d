"""The options that are not settings (recipe, --set, what compare and plot read), and how a command's flags, its
recipe and --set become its settings.

Every settings flag is generated from the field it sets (``hmtbench.commands.flags``); what is declared here are the
options several commands share that no settings field holds.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hmtbench.commands.flags import given_flags
from hmtbench.commands.recipe import recipe_settings
from hmtbench.config import gather


def given(ctx: Any, command: str, recipe: str | None, sets: list[str] | None,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings ``command`` was given: what it reads of its recipe, its flags (``extra``: settings of its own
    options, by key), then --set. The recipe's settings it does not read are named in a note
    (``commands/recipe.py``)."""
    flags = {**given_flags(ctx), **(extra or {})}
    values = None
    if recipe:
        values, aside = recipe_settings(recipe, command)
        if aside:
            typer.secho(f"note: {command} does not use the recipe's {', '.join(aside)} (set aside)", err=True)
    return gather(values, flags, sets)


def opt(help: str, *names: str) -> Any:
    return typer.Option(*names, help=help, show_default=False)


Recipe = Annotated[str | None, opt("YAML recipe (recipes/): its settings, then the flags, then --set. Any recipe "
                                   "serves every command: settings this one does not use (a training recipe's "
                                   "train, lora, curriculum) are set aside, named in a note.")]
Sets = Annotated[list[str] | None, opt("Any settings key, dotted: --set method.sensory_tokens=16 --set "
                                       "train.lr_decay=0.8 (repeatable). Settings without a flag of their own are "
                                       "set here or in a recipe (docs/cli.md lists them).", "--set")]
Grid = Annotated[list[str] | None, opt("method.KEY=V1,V2 (repeatable): one run per combination of the values, all "
                                      "on the same data after one load, each named by its values (soft-100).",
                                      "--grid")]
PerSeed = Annotated[bool, typer.Option("--per-seed", help="List each seed's value under the table.")]
FiguresOut = Annotated[str, typer.Option("--out", help="Folder for the PNG and PDF files (the committed "
                                                      "results/figures only when named, as `make figures` does).")]
ResultPaths = Annotated[
    list[str] | None,
    typer.Argument(help="Result folders or .parquet files, searched recursively [default: results].",
                   show_default=False),
]
OnlyBackbones = Annotated[str | None, opt("Only these backbones (comma-separated).", "--backbone")]
OnlyDatasets = Annotated[str | None, opt("Only these datasets (comma-separated).", "--dataset")]
OnlyMethods = Annotated[str | None, opt("Only these methods (comma-separated).", "--method")]
IncludeFailed = Annotated[bool, typer.Option("--include-failed", "--all", help="Also show failed and canceled runs.")]
