"""The commands' flags come from the settings' fields: their help, their defaults and the keys they set; train keeps
to the flags people type (at most 30 options), the rest live in recipes and --set."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.commands.flags import PANEL, SettingsCommand, command_flag
from hmtbench.training.config import TrainConfig

COMMANDS = ("eval-ppl", "eval-qa", "train", "bench", "profile")


def command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def options(name: str) -> list[click.Parameter]:
    """The options ``name --help`` lists outside the method settings panel (--help included)."""
    found = command(name)
    params = found.get_params(click.Context(found))
    return [p for p in params if p.param_type_name == "option" and getattr(p, "rich_help_panel", None) != PANEL]


def test_train_lists_at_most_30_options_and_says_where_the_rest_live() -> None:
    listed = options("train")
    assert 20 < len(listed) <= 30
    names = {opt for p in listed for opt in p.opts}
    for rare in ("--lr-decay", "--warmup-steps", "--checkpoint-every", "--log-every", "--grad-clip", "--lora-r"):
        assert rare not in names
    assert "--set" in names and "train.lr_decay" in command("train").help


@pytest.mark.parametrize("name", COMMANDS)
def test_every_settings_flag_has_its_fields_help_and_default(name: str) -> None:
    found = command(name)
    assert isinstance(found, SettingsCommand)
    flags = found.flags()
    assert flags and all(flag.help for flag in flags)
    for flag in flags:
        assert flag.decls[0].startswith("--")


def test_a_flags_help_and_default_are_its_fields() -> None:
    steps = command_flag(TrainConfig, "train.steps")
    assert steps.decls == ("--steps",) and steps.kind is int
    assert steps.help == "Optimizer steps of the last (or only) stage. [default: 500]"
    split = command_flag(TrainConfig, "data.split")
    assert split.help.endswith("[default: train]")  # train's own data default, not DataSettings' test
    compile_ = command_flag(TrainConfig, "train.compile")
    assert compile_.decls == ("--compile/--no-compile",) and "[default" not in compile_.help
    curriculum = command_flag(TrainConfig, "curriculum.segments", "--curriculum")
    assert curriculum.kind is str and curriculum.help.endswith("[default: 1,2,4,8]")


def test_a_rare_setting_is_set_with_set_and_is_no_flag(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--set lora.r=16`` reaches the config; ``--lora-r 16`` is refused as an unknown option."""
    import hmtbench.commands.train as train_module

    seen = []

    def resolved(config, command_line=None, resume=None):
        seen.append(config)
        return []

    monkeypatch.setattr(train_module, "run_train", resolved)
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "--method", "rmt", "--set", "lora.r=16", "--set", "train.lr_decay=0.5",
                             "--stage", "1", "--curriculum", "1,2", "--output-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    (config,) = seen
    assert (config.lora.r, config.train.lr_decay, config.train.stages, config.curriculum.segments) == \
        (16, 0.5, [1], [1, 2])
    refused = runner.invoke(app, ["train", "--lora-r", "16"])
    assert refused.exit_code == 2 and "No such option: --lora-r" in refused.output
