"""Answer training: loss on answer tokens only, the curriculum, and memory that learns to carry a key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.cli import app
from hmtbench.config import method_config
from hmtbench.engine import IGNORE
from hmtbench.qa.answers import answer_pass, qa_rows
from hmtbench.training.config import CurriculumSettings, TrainSettings
from hmtbench.training.objectives import AnswerTraining
from tests.conftest import build_method


def write_keys(path: Path, count: int, seed: int) -> Path:
    """A digit key first, 20 letters of filler, then the question: in the answer layout of L = 32 (30 text tokens
    beside RMT's 2 memory tokens: a 43-token prompt, a first segment of 25), the key is one segment back."""
    rng = random.Random(seed)
    rows = [{"context": rng.choice("0123456789") + "".join(rng.choice("abcdefghij") for _ in range(20)),
             "question": "k", "answer": None} for _ in range(count)]
    for row in rows:
        row["answer"] = row["context"][0]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_loss_is_on_answer_tokens_only(llama: torch.nn.Module) -> None:
    """Changing a context token's target changes nothing: only answer positions are scored."""
    from hmtbench.engine import segment_batch

    model = build_method("rmt", llama, {"segment_length": 24})
    prompts = [torch.randint(0, 256, (50,), generator=torch.Generator().manual_seed(0))]
    ids, lengths, scored, prompt_lengths = qa_rows(prompts, [[65, 66, 67]])
    batch = segment_batch(ids, lengths, model.segment_tokens, scored, prompt_lengths)
    assert int((batch.targets != IGNORE).sum()) == 3  # the answer's tokens alone
    other = ids.clone()
    other[0, 10:40] = (other[0, 10:40] + 1) % 256  # context tokens that are never targets
    assert torch.equal(segment_batch(other, lengths, model.segment_tokens, scored, prompt_lengths).targets[..., -1:],
                       batch.targets[..., -1:])
    nll, _ = answer_pass(model, model, batch)
    loss = nll.sum() / scored.sum()
    loss.backward()
    assert loss.item() > 0 and model.memory.grad is not None and model.memory.grad.abs().sum() > 0


class Levels:
    """A sampler stand-in that records the level each batch was drawn at."""

    name = "stub"

    def __init__(self) -> None:
        self.asked: list[int] = []

    def batch(self, index: int, batch_size: int, segments: int):
        self.asked.append(segments)
        return ()


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("name", ["rmt", "hmt", "plain"])
def test_the_answer_loss_reaches_earlier_segments_through_the_memory(name: str, recompute: bool,
                                                                      llama: torch.nn.Module) -> None:
    """A memory method's answer loss has a gradient on the first segment's tokens (only the memory links them);
    plain segments' has none. Activation checkpointing changes no gradient."""
    from hmtbench.engine import segment_batch

    own = {"rmt": {"memory_tokens": 4}, "hmt": {"sensory_tokens": 2, "recall_hidden_dim": 16}}.get(name, {})
    model = build_method(name, llama, {"segment_length": 24, **own})
    S = model.segment_tokens
    embeddings = model.backbone.get_input_embeddings().weight
    embeddings.requires_grad_(True)
    first, second = torch.arange(10, 10 + S), torch.arange(100, 100 + S - 6)  # distinct ids per segment
    ids, lengths, scored, prompts = qa_rows([torch.cat([first, second])], [[200, 201]])
    batch = segment_batch(ids, lengths, S, scored, prompts)
    assert batch.segments.shape[1] == 2 and bool(scored[0, -2:].all())  # the answer is in the second segment
    nll, _ = answer_pass(model, model, batch, None, recompute)
    nll.sum().backward()
    reach = embeddings.grad[10 : 10 + S].abs().sum().item()
    assert embeddings.grad[100 : 100 + S - 6].abs().sum().item() > 0
    assert reach == 0 if name == "plain" else reach > 1e-3


@pytest.mark.parametrize("loss_on", ["last", "all"])
def test_full_context_trains_on_each_row_in_one_forward(llama: torch.nn.Module, loss_on: str) -> None:
    """``full`` learns from the whole row in one backbone call: its answer loss and its language-modelling window loss
    are the backbone's own cross-entropy over the row (cut into S-token segments, a state that carries nothing would
    have left every answer blind to the context before its segment)."""
    import torch.nn.functional as F

    from hmtbench.training.objectives import window_loss

    model = build_method("full", llama, {"segment_length": 16})
    prompt = torch.randint(0, 256, (70,), generator=torch.Generator().manual_seed(1))
    ids, lengths, scored, prompts = qa_rows([prompt], [[65, 66, 67]])
    training = AnswerTraining(Levels(), CurriculumSettings(segments=[4]), TrainSettings(loss_on=loss_on))
    loss = training.loss(model, ids, lengths, scored, prompts, torch.tensor([False])).loss
    with torch.no_grad():
        logits = llama(ids).logits[0]
    torch.testing.assert_close(loss, F.cross_entropy(logits[69:72], ids[0, 70:73]), rtol=1e-5, atol=1e-5)
    window, _ = window_loss(model, ids[:, :64], TrainSettings(loss_on=loss_on))
    first = 47 if loss_on == "last" else 0  # "last": the window's last S = 16 tokens, predicted from position 47 on
    torch.testing.assert_close(window, F.cross_entropy(logits[first:63], ids[0, first + 1 : 64]), rtol=1e-5, atol=1e-5)


def test_the_curriculum_advances_when_answers_pass_the_threshold_and_resumes() -> None:
    curriculum = CurriculumSettings(task="passkey", segments=[1, 2, 4], advance_at=0.75, window=3)
    objective = AnswerTraining(Levels(), curriculum, TrainSettings())
    shares = [0.5, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.9, 0.8, 0.9, 1.0]
    seen = []
    for share in shares:
        objective.batch(0, 2)
        seen.append(objective.end_step(share))
    # (0.5 + 1 + 1) / 3 >= 0.75 at step 2: on to 2 segments, the window restarts; again at step 5; 4 is the last
    assert [e["segments"] for e in seen] == [1, 1, 1, 2, 2, 2, 4, 4, 4, 4, 4]
    assert [(i, e["advanced_to"]) for i, e in enumerate(seen) if "advanced_to" in e] == [(2, 2), (5, 4)]
    resumed = AnswerTraining(Levels(), curriculum, TrainSettings())
    resumed.load_state_dict(json.loads(json.dumps(objective.state_dict())))  # through JSON, as the trainer state
    assert resumed.segments == 4 and list(resumed.recent) == list(objective.recent)


def test_the_log_keeps_apart_the_exact_share_of_rows_whose_facts_precede_the_question(llama, monkeypatch) -> None:
    """With half the keys in the question's segment, ``exact`` mixes rows the segment answers with rows only the
    memory can; ``exact_earlier`` is the share over the latter, summed over the step's micro-batches (the greedy
    answers of a random model are all wrong: here every third row is made exact)."""
    import hmtbench.training.objectives
    from hmtbench.training.answers import AnswerSampler

    monkeypatch.setattr(hmtbench.training.objectives, "exact_rows",
                        lambda batch, predicted: torch.arange(predicted.shape[0]) % 3 == 0)
    model = build_method("rmt", llama, {"segment_length": 316, "memory_tokens": 8})  # 300 text tokens
    curriculum = CurriculumSettings(task="passkey", segments=[2], needles="earlier", question_segment_share=0.5)
    objective = AnswerTraining(AnswerSampler(curriculum, byte_tokenizer(), model.segment_tokens, 3407), curriculum,
                               TrainSettings())
    exact, before = [], []
    with torch.no_grad():
        for micro in range(2):
            *tensors, flags = objective.batch(micro, 4)
            exact.append(objective.loss(model, *tensors, flags).exact)
            before.append(flags)
    exact, before = torch.cat(exact), torch.cat(before)
    entry = objective.end_step(exact.float().mean().item())
    assert 0 < int(before.sum()) < len(before) and 0 < int((exact & before).sum()) < int(before.sum())
    assert entry["exact_earlier"] == pytest.approx(float((exact & before).sum() / before.sum()))
    assert "exact_earlier" not in objective.end_step(0.5)  # a step without rows logs none (the tally restarts)


def train(tmp_path: Path, method: str, data: Path) -> Path:
    result = CliRunner().invoke(app, [
        "train", "--backbone", "random:llama", "--device", "cpu", "--method", method, "--task", str(data),
        "--curriculum", "2", "--train", "full", "--steps", "600", "--batch-size", "32", "--segment-length", "32",
        "--lr", "1e-3", "--set", "train.warmup_steps=20", "--set", "train.decay_every=10000",
        "--set", "train.log_every=50",
        "--output-dir", str(tmp_path / method), "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    return tmp_path / method / "train" / "final"


def held_out_exact(method: str, checkpoint: Path, data: Path) -> float:
    from hmtbench.backbones import load_backbone
    from hmtbench.build import build_method as build
    from hmtbench.qa.answers import score_answers
    from hmtbench.qa.runner import prepare_samples
    from hmtbench.qa.tasks import TaskOptions, load_task

    backbone = load_backbone("random:llama", device="cpu")
    model = build(backbone, method_config(method), 32, seed=0, checkpoint=str(checkpoint)).eval()
    task = load_task(str(data), TaskOptions(tokenizer=backbone.tokenizer))
    prepared, _ = prepare_samples(task, task.load(), backbone.tokenizer, None)
    answers = [task.answer_ids(p.sample, backbone.tokenizer) for p in prepared]  # the key and its end, both exact
    scores = score_answers(model, model, [p.prompt_ids for p in prepared], answers)
    return sum(s.exact(a) for s, a in zip(scores, answers, strict=True)) / len(prepared)


@pytest.mark.slow
def test_a_memory_learns_to_carry_the_key_that_plain_segments_never_see(tmp_path: Path) -> None:
    """Two segments, the key in the first, the question in the second: RMT's memory carries it; plain guesses.
    Exact means the key and the end of the answer. lr 1e-3: at 3e-3 the memory had not learned the key by step 700
    of a CPU run (the loss flat at chance)."""
    data, held_out = write_keys(tmp_path / "keys.jsonl", 512, 0), write_keys(tmp_path / "test.jsonl", 100, 1)
    exact = {m: held_out_exact(m, train(tmp_path, m, data), held_out) for m in ("rmt", "plain")}
    assert exact["plain"] <= 0.2  # one digit in ten, whatever it learned
    # 1.0 (plain 0.06) on an AVX-512 CPU, where the loss leaves chance near step 350; kernels that round differently
    # (AVX2) may find the key later, so the bound asks three times chance
    assert exact["rmt"] >= 0.3 and exact["rmt"] >= exact["plain"] + 0.25, exact


def test_out_of_memory_in_answer_training_names_the_level_and_what_was_kept(tmp_path: Path) -> None:
    from hmtbench.commands.train import out_of_memory_message
    from hmtbench.training.config import TrainConfig
    from hmtbench.training.loop import TrainingOutOfMemory

    curriculum = CurriculumSettings(task="passkey", segments=[32, 64])
    settings = TrainSettings(batch_size=32, grad_checkpoint=True)
    objective = AnswerTraining(Levels(), curriculum, settings)
    objective.level = 1
    config = TrainConfig(curriculum=curriculum, train=settings)
    saved = tmp_path / "stage2" / "last"
    error = TrainingOutOfMemory("CUDA out of memory", steps_done=20, steps_run=20, saved=saved)
    assert out_of_memory_message(config, objective, error, tmp_path) == (
        "out of memory with 64-segment contexts at --batch-size 32; lower --batch-size (raising --grad-accum keeps "
        f"the batch), or add --set train.layer_checkpoint=true; the 20 steps done are saved in {saved}: set "
        f"batch_size / grad_accum in {tmp_path / 'config.yaml'} and continue with --resume {tmp_path}")
    nothing = TrainingOutOfMemory("CUDA out of memory", steps_done=0, steps_run=0, saved=None)
    assert out_of_memory_message(config, objective, nothing, tmp_path).endswith("; no step had finished")


def test_the_end_of_the_answer_is_scored_in_training(llama: torch.nn.Module) -> None:
    """Each row's scored tokens are " " + key + the line break, and the training loss is the mean NLL of exactly
    those tokens, the end's included (the backbone's own loss on the row: plain reads a one-segment row whole)."""
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()
    model = build_method("plain", llama, {"segment_length": 300})
    curriculum = CurriculumSettings(task="passkey", segments=[1])
    sampler = AnswerSampler(curriculum, tokenizer, model.segment_tokens, 3407)
    ids, lengths, scored, prompts, before = sampler.batch(0, 4, 1)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for row in range(4):
        answer = ids[row, scored[row]].tolist()
        assert answer[-1:] == newline and tokenizer.decode(answer) == f" {sampler.sample(row, 1).answers[0]}\n"
    with torch.no_grad():
        loss = AnswerTraining(sampler, curriculum, TrainSettings()).loss(model, ids, lengths, scored, prompts,
                                                                        before).loss
        logits = model.backbone(ids).logits  # (B, T, V): right padding follows each row, which causality ignores
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    at = scored[:, 1:]  # position t predicts token t + 1
    assert loss.item() == pytest.approx(nll[at].mean().item(), rel=1e-5)
    without_end = at & (torch.arange(at.shape[1]) < (lengths - 2)[:, None])
    assert loss.item() != pytest.approx(nll[without_end].mean().item(), rel=1e-3)  # the end's NLL is in the loss


def test_a_model_trained_on_answers_learns_to_stop_after_them(tmp_path: Path, monkeypatch) -> None:
    """A tiny Llama trained 30 steps on a one-answer task ("yes"): the line break after the answer goes from 0.4%
    to over 95% of the probability on held-out prompts, and greedy decoding writes " yes" then stops. The same
    training without the end in the loss leaves the line break as unlikely as before."""
    from hmtbench.backbones.tiny import tiny_model
    from hmtbench.qa.tasks.local import LocalJsonl
    from hmtbench.training.answers import AnswerSampler

    def yes_task(path: Path, seed: int) -> CurriculumSettings:
        rng = random.Random(seed)
        path.write_text("".join(json.dumps({"context": "".join(rng.choice("abcdefghij ") for _ in range(40)),
                                            "question": "Is it so?", "answer": "yes"}) + "\n" for _ in range(32)))
        return CurriculumSettings(task=str(path), segments=[1])

    tokenizer, newline = byte_tokenizer(), 10

    def train_and_measure() -> tuple[float, float, list[list[int]]]:
        model = build_method("plain", tiny_model("llama"), {"segment_length": 128})
        train, held_out = yes_task(tmp_path / "train.jsonl", 0), yes_task(tmp_path / "held_out.jsonl", 1)
        objective = AnswerTraining(AnswerSampler(train, tokenizer, 128, 0), train, TrainSettings())
        ids, lengths, _, prompts, _ = AnswerSampler(held_out, tokenizer, 128, 0).batch(0, 8, 1)
        rows = torch.arange(8)

        def end_probability() -> float:
            with torch.no_grad():
                return float(model.backbone(ids).logits[rows, prompts + 3].softmax(-1)[:, newline].mean())

        first = end_probability()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(30):
            *tensors, flags = objective.batch(step, 8)
            optimizer.zero_grad()
            objective.loss(model, *tensors, flags).loss.backward()
            optimizer.step()
        with torch.no_grad():
            decoded = [model.backbone.generate(ids[r : r + 1, : prompts[r]], max_new_tokens=6, do_sample=False,
                                               pad_token_id=0)[0, prompts[r]:].tolist() for r in range(2)]
        return first, end_probability(), decoded

    before, after, decoded = train_and_measure()
    assert before < 0.01 and after > 0.95, (before, after)
    assert all(d[:5] == tokenizer(" yes\n", add_special_tokens=False)["input_ids"] for d in decoded), decoded
    answer_ids = LocalJsonl.answer_ids
    monkeypatch.setattr(LocalJsonl, "answer_ids", lambda self, sample, tokenizer: answer_ids(self, sample, tokenizer,
                                                                                           end=False))
    _, unended, decoded = train_and_measure()
    assert unended < 0.05, unended
    assert all(d[:4] == tokenizer(" yes", add_special_tokens=False)["input_ids"] and d[4] != newline for d in decoded)
