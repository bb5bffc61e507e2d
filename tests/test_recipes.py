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
