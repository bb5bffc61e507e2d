"""Every shipped recipe loads into the typed config, names a known backbone and method, and opens with its command."""

from __future__ import annotations

from pathlib import Path

import pytest

from hmtbench.backbones import ALIASES
from hmtbench.config import apply_override, from_dict, load_yaml
from hmtbench.errors import HmtbenchError
from hmtbench.methods import METHODS
from hmtbench.training.config import TrainConfig

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_recipes_exist() -> None:
    assert len(RECIPES) >= 20


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_loads(recipe: Path) -> None:
    config = from_dict(TrainConfig, load_yaml(recipe))
    assert recipe.read_text().splitlines()[0] == f"# hmtbench train --recipe recipes/{recipe.name}"
    assert config.method.name in METHODS
    assert config.backbone in ALIASES or config.backbone.startswith("random:")
    assert recipe.stem.startswith(config.backbone.replace("random:", "tiny-random-").removesuffix("llama"))


def test_unknown_recipe_key_suggests_the_right_one(tmp_path: Path) -> None:
    values = load_yaml(RECIPES[0])
    apply_override(values, "train.bptt_dept=4")
    with pytest.raises(HmtbenchError, match=r"unknown setting 'train.bptt_dept' \(did you mean 'bptt_depth'\?\)"):
        from_dict(TrainConfig, values)


def test_dotted_overrides_are_typed() -> None:
    values: dict = {}
    apply_override(values, "train.lr=5e-5")
    apply_override(values, "method.sensory_tokens=16")
    config = from_dict(TrainConfig, values)
    assert config.train.lr == 5e-5 and config.method.sensory_tokens == 16 and config.method.name == "hmt"


def test_smoke_recipe_runs(tmp_path: Path) -> None:
    from hmtbench.commands.train import run_train

    values = load_yaml(Path(__file__).parent.parent / "recipes" / "tiny-random-pydoc-hmt-smoke.yaml")
    values.update(output_dir=str(tmp_path / "run"), out=str(tmp_path / "results"))
    rows = run_train(from_dict(TrainConfig, values))
    assert [r["status"] for r in rows] == ["success", "success"]
    assert [r["steps"] for r in rows] == [5, 10]
    assert (tmp_path / "run" / "stage2" / "final" / "trainable.safetensors").is_file()


# ----- one recipe, every command that reads recipes ------------------------------------------------
RUNNERS = {"eval-ppl": ("hmtbench.commands.eval_ppl", "run_eval_ppl"), "eval-qa": ("hmtbench.commands.eval_qa",
           "run_eval_qa"), "train": ("hmtbench.commands.train", "run_train"), "bench": ("hmtbench.commands.bench",
                                                                                    "run_bench")}


class Resolved(Exception):
    """Raised in place of running a command: carries the configs it resolved."""


@pytest.mark.parametrize("command", list(RUNNERS))
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_serves_every_command(recipe: Path, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the CLI up to the resolved configs: what a command has comes from the recipe, the rest is named."""
    import importlib

    from typer.testing import CliRunner

    from hmtbench.cli import app

    def resolved(configs, *args, **kwargs):
        raise Resolved(configs)

    module, runner = RUNNERS[command]
    monkeypatch.setattr(importlib.import_module(module), runner, resolved)
    result = CliRunner().invoke(app, [command, "--recipe", str(recipe)])
    assert isinstance(result.exception, Resolved), result.output
    configs = result.exception.args[0]
    settings = load_yaml(recipe)
    for config in configs if isinstance(configs, list) else [configs]:
        methods = config.method if command == "bench" else [config.method]
        assert [m.name for m in methods] == [settings["method"]["name"]]
        assert {k: getattr(methods[0], k) for k in settings["method"] if k != "name"} == {
            k: v for k, v in settings["method"].items() if k != "name"}
        assert (config.backbone, config.segment_length) == (settings["backbone"], settings["segment_length"])
        if command == "eval-ppl" and "data" in settings:  # the corpus, on the evaluation split: a recipe's split
            assert (config.data.dataset, config.data.split) == (settings["data"]["dataset"], "test")  # is for training
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    if command == "train":
        assert note == []
    else:
        assert len(note) == 1 and "train" in note[0].split("recipe's", 1)[1], result.stderr
        assert ("data.split" in note[0]) == (command == "eval-ppl" and "data" in settings)


def test_a_recipe_setting_no_command_has_is_an_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hmtbench.cli import app

    recipe = tmp_path / "typo.yaml"
    recipe.write_text(RECIPES[0].read_text().replace("segment_length:", "segmnet_length:"))
    result = CliRunner().invoke(app, ["eval-ppl", "--recipe", str(recipe)])
    assert result.exit_code == 2
    assert f"recipe '{recipe}': unknown setting 'segmnet_length' (did you mean 'segment_length'?)" in result.stderr


RESUMABLE_BYTES_PER_PARAMETER = 12  # fp32 tensor + AdamW's two fp32 moments
CALL_BYTES = 60 * 2**20  # what a resumable checkpoint may take of a GPU call's 64 MiB (the tree travels too)


@pytest.mark.parametrize("name", ["smollm2-135m-passkey-rmt-official", "smollm2-135m-passkey-hmt-official"])
def test_official_recipes_resume_from_a_checkpoint_one_gpu_call_carries(name: str) -> None:
    """A chunk's resumable checkpoint must travel to the next call and back (scripts/gpu/README.md): its trainable
    parameters (LoRA at SmolLM2-135M's full shape, counted on the meta device, plus the method's own) x 12 bytes."""
    import dataclasses

    import torch

    from hmtbench.backbones.random_shapes import build_shape_model
    from hmtbench.lora import add_lora
    from hmtbench.methods import method_class

    config = from_dict(TrainConfig, load_yaml(Path(__file__).parent.parent / "recipes" / f"{name}.yaml"))
    assert config.train.train == "lora" and config.train.max_file_mb == 16
    full = build_shape_model("smollm2-135m", device="meta", dtype=torch.float32)
    add_lora(full, dataclasses.asdict(config.lora))
    lora = sum(p.numel() for n, p in full.named_parameters() if "lora_" in n)
    assert lora == config.lora.r * 30 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))  # q, o; k, v; MLP
    small = build_shape_model("smollm2-135m", device="cpu", dtype=torch.float32,
                              overrides={"num_hidden_layers": 1, "vocab_size": 259})
    method = method_class(config.method.name)(small, config.method.resolved(576), config.segment_length)
    own = sum(p.numel() for p in method.added_parameters().values())
    assert RESUMABLE_BYTES_PER_PARAMETER * (lora + own) <= CALL_BYTES, (lora, own)
