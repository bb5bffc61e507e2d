"""The read slot's share of attention (``evaluation.attention``): against the backbone's own eager attention weights,
its uniform reference, its refusals, and through eval-qa into the record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

from hmtbench.backbones.tiny import tiny_model
from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from hmtbench.evaluation.attention import eager_attention, read_attention
from hmtbench.evaluation.memory_swap import MemorySwap, memory_swap
from hmtbench.generation import greedy_generate
from hmtbench.methods import METHODS
from hmtbench.methods.state import select_rows
from hmtbench.qa.answers import answer_pass, first_answer_segment, qa_batch
from tests.conftest import ARCHITECTURES, build_method

SETTINGS = {"segment_length": 24, "memory_tokens": 2, "sensory_tokens": 3, "recall_hidden_dim": 16,
            "recall_context": 4}


def prompts_and_answers(lengths: list[int], answer: int = 3, seed: int = 0) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 256, (n,), generator=generator) for n in lengths]
    return prompts, [torch.randint(0, 256, (answer,), generator=generator).tolist() for _ in lengths]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_one_segment_equals_the_backbones_own_attention_weights(architecture: str) -> None:
    """A prompt and answer within one segment: the shares are the backbone's eager attention weights (HF's
    ``output_attentions``) summed over the read slot at the positions the answer layout says."""
    model = build_method("rmt", tiny_model(architecture), SETTINGS).eval()
    m, prompt_length, answer_length = 2, 6, 3  # S = 20: the prompt ends 12 positions (ANSWER_ROOM) before it
    prompts, answers = prompts_and_answers([prompt_length], answer_length)
    measured = read_attention(model, prompts, answers)

    batch = qa_batch(prompts, answers, model.segment_tokens, model.device)
    assert batch.segments.shape[1] == 1
    state = model.initial_state(1)
    read = model._read(state, batch.segments[:, 0], batch.lengths[:, 0], None)
    with torch.no_grad(), eager_attention(model.backbone):
        weights = model.backbone(inputs_embeds=read.embeds, output_attentions=True, use_cache=False).attentions
    real = prompt_length + answer_length
    start = read.text_start + int(torch.nonzero(batch.segments[0, 0] == prompts[0][0])[0])
    answer_queries = range(start + prompt_length - 1, start + real - 1)  # each predicts the next, an answer token
    text_queries = range(read.text_start, read.text_start + int(batch.lengths[0, 0]))
    for layer, layer_weights in enumerate(weights):
        share = layer_weights[0, :, :, :m].sum(-1).mean(0)  # (T,): over the slot, then the heads
        assert measured.answer[layer] == pytest.approx(float(share[list(answer_queries)].mean()), abs=1e-6)
        assert measured.text[layer] == pytest.approx(float(share[list(text_queries)].mean()), abs=1e-6)
    assert measured.answer_uniform == pytest.approx([sum(m / (q + 1) for q in answer_queries) / answer_length] * 2)
    assert measured.samples == 1 and len(measured.answer) == model.backbone.config.num_hidden_layers


@pytest.mark.parametrize("name", ["rmt", "hmt"])
def test_many_segments_and_ragged_rows_give_shares_between_0_and_1(name: str, llama: torch.nn.Module) -> None:
    """Every segment of every row counts once: a longer context moves the text shares, the answer queries' uniform
    reference falls with their position, and the backbone's attention comes back as it was."""
    model = build_method(name, llama, {**SETTINGS, "memory_tokens": 2 if name == "rmt" else 1}).eval()
    before = model.backbone.config._attn_implementation
    prompts, answers = prompts_and_answers([70, 45, 20])
    measured = read_attention(model, prompts, answers)
    assert model.backbone.config._attn_implementation == before
    for values in (measured.answer, measured.text, measured.answer_uniform, measured.text_uniform):
        assert len(values) == 2 and all(0 < v < 1 for v in values)
    slot = model.memory_tokens
    segment = model.segment_length
    assert slot / segment < measured.answer_uniform[0] < slot / (slot + model.sensory_tokens)
    alone = read_attention(model, prompts[2:], answers[2:])
    assert alone.text != pytest.approx(measured.text)


@pytest.mark.parametrize("name", ["plain", "overlap", "armt"])
def test_a_method_without_a_read_slot_is_refused(name: str, llama: torch.nn.Module) -> None:
    model = build_method(name, llama, SETTINGS).eval()
    prompts, answers = prompts_and_answers([30])
    with pytest.raises(HmtbenchError, match=f"--method {name} has none"):
        read_attention(model, prompts, answers)


def test_eval_qa_records_the_shares_and_refuses_before_evaluating(tmp_path: Path) -> None:
    common = ["eval-qa", "--backbone", "random:llama", "--segment-length", "64", "--task", "passkey",
              "--context-length", "300", "--limit", "3", "--max-new-tokens", "2"]
    out = tmp_path / "results"
    result = CliRunner().invoke(app, [*common, "--method", "rmt", "--set", "memory_attention=2",
                                      "--set", "memory_swap=3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "memory swap over 3 samples" in result.output
    assert "answer queries' attention on the read slot" in result.output
    [record] = [pd.read_parquet(p).iloc[0] for p in out.glob("*.parquet")]
    assert record["read_attention_samples"] == 2
    assert len(record["read_attention"]) == len(record["read_attention_text_uniform"]) == 2  # the tiny model's layers
    assert all(0 < v < 1 for v in record["read_attention"])
    assert record["swap_samples"] == 3 and 0 <= record["swap_donor_exact_swapped"] <= 1
    assert record["swap_own_exact"] == pytest.approx(record["teacher_forced_exact"])  # the same 3 samples, unswapped

    refused = tmp_path / "refused"
    result = CliRunner().invoke(app, [*common, "--method", "rmt,plain", "--set", "memory_attention=2",
                                      "--out", str(refused)])
    assert result.exit_code == 2 and "--method plain has none" in result.output
    assert not refused.exists()  # nothing evaluated, nothing written


@pytest.mark.parametrize("name", ["rmt", "hmt", "armt"])
def test_a_swapped_state_is_reading_the_donors_context(name: str, llama: torch.nn.Module) -> None:
    """Row r's answer segment opening with row r + 1's state predicts what a prompt made of row r + 1's earlier
    segments and row r's answer segment predicts: the swap moves exactly what the earlier segments left."""
    model = build_method(name, llama, {**SETTINGS, "memory_tokens": 2 if name == "rmt" else 1}).eval()
    if name == "armt":  # its value projection starts at zero: an untrained ARMT writes nothing
        torch.nn.init.normal_(model.value, std=0.05, generator=torch.Generator().manual_seed(0))
    prompts, answers = prompts_and_answers([55, 55, 55], answer=4, seed=3)
    donors = torch.tensor([1, 2, 0])
    batch = qa_batch(prompts, answers, model.segment_tokens, model.device, model.sensory_tokens)
    first = first_answer_segment(batch)
    opens = int(batch.lengths[0, :first].sum())  # prompt tokens before the answer's segment (one layout for all)
    chimeras = [torch.cat([prompts[int(d)][:opens], p[opens:]]) for p, d in zip(prompts, donors, strict=True)]
    with torch.inference_mode():
        swapped = answer_pass(model, model, batch, first_answer=first,
                              edit_state=lambda i, s: select_rows(s, donors) if i == first else s)
        rebuilt = qa_batch(chimeras, answers, model.segment_tokens, model.device, model.sensory_tokens)
        reference = answer_pass(model, model, rebuilt)
        own = answer_pass(model, model, batch)
    assert torch.equal(swapped[1], reference[1])  # the argmax, and the answers' NLL
    torch.testing.assert_close(swapped[0], reference[0], rtol=1e-5, atol=1e-5)
    assert (swapped[0] - own[0]).abs().max() > 1e-4, (swapped[0] - own[0])  # the state matters: the test can fail


def test_the_donors_answer_is_what_its_state_makes_the_row_say_and_plain_never_moves(llama: torch.nn.Module) -> None:
    """Gold answers chosen so that the donor's answer is the greedy continuation of the row's chimera (the donor's
    earlier segments, the row's answer segment): every swapped row gives the donor's answer. Plain carries nothing:
    a swap leaves every answer its own."""
    model = build_method("rmt", llama, SETTINGS).eval()
    prompts, _ = prompts_and_answers([55, 55, 55, 55], seed=5)
    batch = qa_batch(prompts, [[0, 0, 0]] * 4, model.segment_tokens, model.device)
    opens = int(batch.lengths[0, :first_answer_segment(batch)].sum())
    answers: list[list[int]] = [[]] * 4
    for row in range(4):
        donor = (row + 1) % 4
        chimera = torch.cat([prompts[donor][:opens], prompts[row][opens:]])
        answers[donor] = greedy_generate(model, chimera, 3).token_ids
    measured = memory_swap(model, prompts, answers)
    assert measured.donor_swapped == 1.0 and measured.samples == 4
    assert measured.own < 1.0  # the answers are not the rows' own continuations: the count can fail

    plain = build_method("plain", llama, SETTINGS).eval()
    answers = [greedy_generate(plain, p, 3).token_ids for p in prompts]
    assert memory_swap(plain, prompts, answers) == MemorySwap(1.0, 1.0, 0.0, 4)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_read_of_the_context_predicts_as_three_whole_reads(name: str, llama: torch.nn.Module,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """memory_swap reads the context once and answers three times from the state it left: every predicted id equals
    that of a whole teacher-forced read (own state; the donor's state with the row's answer, and with the donor's),
    on ragged prompts whose answers open in different segments."""
    import hmtbench.evaluation.memory_swap as swap_module

    model = build_method(name, llama, {**SETTINGS, "memory_tokens": 1 if name == "hmt" else 2}).eval()
    if name == "armt":  # its value projection starts at zero: an untrained ARMT writes nothing
        torch.nn.init.normal_(model.value, std=0.05, generator=torch.Generator().manual_seed(0))
    prompts, answers = prompts_and_answers([30, 55, 80, 44], answer=4, seed=7)
    donors = torch.roll(torch.arange(4), -1)

    def whole_read(answers_read: list[list[int]], swap: bool) -> tuple[Tensor, int]:
        batch = qa_batch(prompts, answers_read, model.segment_tokens, model.device, model.sensory_tokens)
        first = first_answer_segment(batch)
        with torch.inference_mode():
            _, predicted = answer_pass(model, model, batch, first_answer=first, edit_state=lambda i, s: (
                select_rows(s, donors) if swap and i == first else s))
        return predicted, first

    seen = []
    monkeypatch.setattr(swap_module, "exact_rows", lambda batch, predicted: seen.append(predicted) or torch.ones(4))
    memory_swap(model, prompts, answers)
    (own, first), swapped, donor = (whole_read(answers, False), whole_read(answers, True)[0],
                                    whole_read([answers[int(d)] for d in donors], True)[0])
    assert torch.equal(seen[0], own) and first > 0 and (own[:, first:] >= 0).any()
    assert torch.equal(seen[1], swapped[:, first:]) and torch.equal(seen[2], donor[:, first:])


def test_swap_needs_two_samples(llama: torch.nn.Module) -> None:
    prompts, answers = prompts_and_answers([30])
    with pytest.raises(HmtbenchError, match="at least 2 samples"):
        memory_swap(build_method("rmt", llama, SETTINGS), prompts, answers)
