"""The official RMT code's choices as settings (docs/methods.md, "The official RMT code"), each against a hand-built
case.

The hand-built cases follow the official code line by line (booydar/recurrent-memory-transformer, branch
babilong-release, ``modeling_rmt/language_modeling.py``; burtsev/RMT-experiments for the BABILong script): the
``manage_gradients`` rule, ``process_outputs``' loss over every token, ``split_tensor``'s cut from the start, the
memory cell's ``[memory | segment | memory]`` with an attention mask over a right-padded batch, the fp32 parameter
of ``create_memory``, and transformers' linear schedule the trainer builds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hmtbench.engine import detached_before, score_segments, segment_batch
from hmtbench.methods.rmt import RMTState
from hmtbench.qa.answers import answer_segments, qa_rows
from hmtbench.training.config import TrainSettings
from hmtbench.training.objectives import window_loss
from tests.conftest import build_method, random_documents


def official_detaches(seg_num: int, k2: int | None, max_n_segments: int) -> bool:
    """``RecurrentWrapper.manage_gradients`` of booydar's babilong branches: True where it detaches the memory
    written by segment ``seg_num`` (its caller assigns the result; burtsev's branches drop it: no detach)."""
    return not (seg_num == 0 or k2 in {-1, None} or seg_num + k2 > max_n_segments)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
@pytest.mark.parametrize("k2", [1, 2, 3, 5])
def test_the_k2_rule_cuts_where_the_official_code_detaches(n: int, k2: int) -> None:
    ours = [i for i in range(n) if detached_before(i, n, k2=k2)]  # the state *entering* segment i is cut
    official = [seg + 1 for seg in range(n - 1) if official_detaches(seg, k2, n)]  # cut after segment seg
    assert ours == official


def test_the_k2_rule_is_not_bptt_truncate() -> None:
    """n = 5, K = 2: --bptt-truncate cuts once (before segment 3), k2 after every segment from 1 to 3."""
    assert [i for i in range(5) if detached_before(i, 5, grad_segments=2)] == [3]
    assert [i for i in range(5) if detached_before(i, 5, k2=2)] == [2, 3, 4]


def official_lm_loss(model, ids: torch.Tensor, k2: int | None) -> torch.Tensor:
    """RecurrentWrapper.forward + process_outputs without labels_mask: each segment through the cell, memory
    managed by ``manage_gradients``, the logits joined, CrossEntropyLoss over every position but the last."""
    S, n = model.segment_tokens, ids.shape[1] // model.segment_tokens
    lengths = torch.full((ids.shape[0],), S)
    state, logits = model.initial_state(ids.shape[0]), []
    for seg_num in range(n):
        out = model(state, ids[:, seg_num * S:(seg_num + 1) * S], lengths)
        logits.append(out.logits)
        state = out.state
        if official_detaches(seg_num, k2, n):
            state = RMTState(state.batch_size, memory=state.memory.detach())
    full = torch.cat(logits, dim=1)
    return F.cross_entropy(full[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


@pytest.mark.parametrize("k2", [None, 1, 2, 3])
def test_loss_on_all_with_k2_is_the_official_lm_loss_and_gradient(llama: torch.nn.Module, k2: int | None) -> None:
    """--loss-on all and --k2 K: the official RMT LM training's loss (every token but the window's first) and the
    gradients its memory management lets through, for every parameter."""
    model = build_method("rmt", llama, {"segment_length": 24, "memory_tokens": 2})
    ids = random_documents(2, 4 * model.segment_tokens, seed=3)
    ours, _ = window_loss(model, ids, TrainSettings(loss_on="all", k2=k2))
    ours.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    theirs = official_lm_loss(model, ids, k2)
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours_grads[name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
    if k2 == 1:  # every state from segment 2 on is cut: the initial memory learns from segments 0 and 1 alone
        model.zero_grad()
        window_loss(model, ids, TrainSettings(loss_on="last", k2=1))[0].backward()
        assert model.memory.grad.abs().sum() == 0


def test_the_start_layout_cuts_segments_as_the_official_wrapper_does() -> None:
    """``split_tensor`` with left (default) alignment cuts the right-padded batch every S tokens from the start;
    ``curriculum.layout: start`` reads the same segments (the answer layout would start the short first segment)."""
    S = 10
    prompts = [torch.arange(1, 24), torch.arange(30, 45)]  # 23 and 15 prompt tokens
    answers = [[100, 101], [102, 103, 104]]
    ids, lengths, scored, prompt_lengths = qa_rows(prompts, answers)
    batch = answer_segments(ids, lengths, scored, prompt_lengths, S, layout="start")
    starts = list(range(0, ids.shape[1], S))
    official = [ids[:, a:a + S] for a in starts]  # the wrapper's segments (its pad id aside: ours is 0)
    assert batch.segments.shape[1] == len(official)
    for i, segment in enumerate(official):
        assert torch.equal(batch.segments[:, i, :segment.shape[1]], segment)
    assert batch.lengths.tolist() == [[10, 10, 5], [10, 8, 0]]
    answer = answer_segments(ids, lengths, scored, prompt_lengths, S)
    assert answer.lengths[0].tolist() != batch.lengths[0].tolist()  # the answer layout cuts elsewhere


def test_training_samples_in_the_start_layout_span_their_level_with_keys_before_the_questions_segment() -> None:
    from hmtbench.answer_layout import ANSWER_ROOM
    from hmtbench.backbones.tiny import byte_tokenizer
    from hmtbench.training.answers import AnswerSampler
    from hmtbench.training.config import CurriculumSettings

    S = 300  # more than the shortest prompt (instructions, key and question: 222 bytes)
    curriculum = CurriculumSettings(task="passkey", segments=[2, 3], needles="earlier", layout="start")
    sampler = AnswerSampler(curriculum, byte_tokenizer(), S, 3407)
    ends = set()
    for segments in (2, 3):
        for k in range(30):
            sample = sampler.sample(k, segments)
            length = len(sample.prompt_ids)
            assert (segments - 1) * S < length <= segments * S - ANSWER_ROOM  # ends in the level's last segment
            assert max(sample.meta["needle_ends"]) <= (segments - 1) * S  # the key in an earlier segment
            ends.add(length % S)
    assert len(ends) > 20  # the question ends anywhere in its segment, not ANSWER_ROOM before its end


def official_write(model, memory: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """MemoryCell.process_input / process_output on a right-padded batch: ``[memory | segment | memory]`` with the
    padding masked, position ids 0..T-1, the memory the last hidden states at the last m positions."""
    m = memory.shape[1]
    embeds = torch.cat([memory, model.backbone.get_input_embeddings()(ids), memory], dim=1)
    real = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    mask = torch.cat([torch.ones(ids.shape[0], m, dtype=torch.long), real,
                      torch.ones(ids.shape[0], m, dtype=torch.long)], dim=1)
    out = model.backbone(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[-1][:, -m:]


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt-neox"])
def test_write_after_padding_writes_what_the_official_cell_writes_in_a_padded_batch(architecture: str) -> None:
    from hmtbench.backbones.tiny import tiny_model

    backbone = tiny_model(architecture)
    ours = build_method("rmt", backbone, {"segment_length": 24, "memory_tokens": 2, "write_after": "padding"})
    default = build_method("rmt", backbone, {"segment_length": 24, "memory_tokens": 2})
    S, width = ours.segment_tokens, 14  # the batch's longest row in this segment: 14 of S = 20
    ids = random_documents(3, S, seed=5)
    ids[:, width:] = 0
    lengths = torch.tensor([width, 9, 3])
    memory = torch.randn(3, 2, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    with torch.no_grad():
        official = official_write(ours, memory, ids[:, :width], lengths)  # the wrapper's segment: the batch's width
        written = ours(RMTState(3, memory=memory), ids, lengths).state.memory
        after_text = default(RMTState(3, memory=memory), ids, lengths).state.memory
    torch.testing.assert_close(written, official, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after_text[0], official[0], rtol=1e-5, atol=1e-5)  # the longest row: no padding
    assert (after_text[1:] - official[1:]).abs().max() > 1e-3  # short rows: positions differ, so does the memory


def test_write_after_padding_changes_a_score_only_where_a_short_segment_is_not_a_rows_last(llama) -> None:
    """Cut from the start (the official wrapper's batches, stream evaluation), a row's padded segment is its last:
    the memory written after it is never read, so no score changes. The answer layout's short first segment is
    followed by the row's others: there the write slot's position reaches the answer."""
    torch.manual_seed(0)
    ours = build_method("rmt", llama, {"segment_length": 24, "write_after": "padding"})
    torch.manual_seed(0)
    default = build_method("rmt", llama, {"segment_length": 24})
    ids, lengths = random_documents(2, 50, seed=1), torch.tensor([50, 31])
    start_cut = segment_batch(ids, lengths, ours.segment_tokens)
    prompts, answers = [ids[0, :40], ids[1, :25]], [[65, 66], [67, 68]]
    answer_cut = answer_segments(*qa_rows(prompts, answers), ours.segment_tokens)
    with torch.no_grad():
        torch.testing.assert_close(score_segments(ours, start_cut)[0], score_segments(default, start_cut)[0])
        moved, kept = score_segments(ours, answer_cut)[0], score_segments(default, answer_cut)[0]
    assert answer_cut.lengths[:, 0].tolist() == [8, 15]  # short first segments, of two widths
    torch.testing.assert_close(moved[1], kept[1])  # the row as wide as the batch: its slot does not move
    assert (moved[0, 1:] - kept[0, 1:]).abs().max() > 1e-4


def test_memory_dtype_fp32_keeps_the_official_fp32_parameter(llama: torch.nn.Module) -> None:
    """create_memory: ``torch.randn((m, d)) * embeddings.weight.data.std()`` in fp32, never cast. With
    memory_dtype: fp32 the parameter is exactly that on a bf16 backbone; by default it is rounded to bf16."""
    llama = llama.to(torch.bfloat16)
    std = llama.get_input_embeddings().weight.detach().float().std().item()
    torch.manual_seed(11)
    kept = build_method("rmt", llama, {"segment_length": 24, "memory_tokens": 3, "memory_dtype": "fp32"})
    torch.manual_seed(11)
    rounded = build_method("rmt", llama, {"segment_length": 24, "memory_tokens": 3})
    torch.manual_seed(11)
    official = torch.randn(3, 64) * std
    assert kept.memory.dtype == torch.float32 and torch.equal(kept.memory.detach(), official)
    assert rounded.memory.dtype == torch.bfloat16 and torch.equal(rounded.memory.detach(), official.bfloat16())
    assert kept.initial_state(2).memory.dtype == torch.bfloat16  # read like any input, in the backbone's dtype


@pytest.mark.parametrize(("steps", "share", "horizon"), [(50, 0.1, 2.0), (40, 0.0, 1.0), (30, 0.2, 1.5)])
def test_the_linear_schedule_is_transformers_linear_schedule(steps: int, share: float, horizon: float) -> None:
    """The BABILong script's scheduler: get_linear_schedule_with_warmup(optimizer, ITERS / 10, 2 x ITERS)."""
    from transformers import get_linear_schedule_with_warmup

    from hmtbench.training.loop import make_optimizer

    settings = TrainSettings(lr_schedule="linear", warmup_share=share, decay_horizon=horizon, lr=1e-4)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, scheduler = make_optimizer(params, settings, steps)
    reference_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-4)
    reference = get_linear_schedule_with_warmup(reference_optimizer, math.floor(share * steps),
                                                int(horizon * steps))
    for _ in range(steps):
        assert scheduler.get_last_lr() == reference.get_last_lr()
        optimizer.step()
        scheduler.step()
        reference_optimizer.step()
        reference.step()


def test_full_length_samples_fill_their_level_and_both_layouts_cut_them_alike() -> None:
    """sample_length: full (the BABILong script's fixed sample_size): every prompt ends ANSWER_ROOM before its last
    segment's end, where the official cut from the start and the answer layout coincide."""
    from hmtbench.answer_layout import ANSWER_ROOM
    from hmtbench.backbones.tiny import byte_tokenizer
    from hmtbench.training.answers import AnswerSampler
    from hmtbench.training.config import CurriculumSettings

    S = 300
    curriculum = CurriculumSettings(task="passkey", segments=[2, 3], needles="earlier", layout="start",
                                    sample_length="full")
    sampler = AnswerSampler(curriculum, byte_tokenizer(), S, 3407)
    ids, lengths, scored, prompts = sampler.batch(0, 4, 3)[:4]
    assert prompts.tolist() == [3 * S - ANSWER_ROOM] * 4
    start = answer_segments(ids, lengths, scored, prompts, S, layout="start")
    answer = answer_segments(ids, lengths, scored, prompts, S)
    for field in ("segments", "lengths", "targets", "known"):
        assert torch.equal(getattr(start, field), getattr(answer, field)), field
