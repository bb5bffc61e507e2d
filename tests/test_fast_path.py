"""The fast engine keeps the numbers: score == forward + token_nll, graph plumbing == eager, compiled ~ eager,
no host round-trip inside a segment step, the head skipped where nothing is scored, summaries in bounded passes."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode

from hmtbench.config import EngineOptions
from hmtbench.engine import IGNORE, score_segments, segment_batch, token_nll
from hmtbench.fastpath import GraphedMethod, accelerate, repeated_blocks
from hmtbench.methods import hf_calls as calls
from hmtbench.methods import loss
from hmtbench.methods.state import flatten
from tests.conftest import build_method, exercised, random_documents, registered, variants

METHODS = registered(  # every registered method, and these variants of them
    ("rmt", {"memory_tokens": 2}, "rmt-m2"),
    ("hmt", {"stage": 1}, "hmt-stage1"),
    ("hmt", {"summary_pass": "inline"}, "hmt-inline"),
)


def build(backbone: torch.nn.Module, name: str, settings: dict):
    torch.manual_seed(0)
    return exercised(build_method(name, backbone, {"segment_length": 32, **settings})).eval()


def nll_of(method, ids: torch.Tensor, lengths: list[int], scored: torch.Tensor | None = None) -> torch.Tensor:
    batch = segment_batch(ids, torch.tensor(lengths), method.segment_tokens, scored)
    with torch.inference_mode():
        return score_segments(method, batch)[0]


def soft_capped_backbone() -> torch.nn.Module:
    """A tiny Gemma 2: logits soft-capped after the head, sliding-window layers, eager attention."""
    config = transformers.Gemma2Config(
        vocab_size=259,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        head_dim=16,
        max_position_embeddings=4096,
        final_logit_softcapping=5.0,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)


@pytest.mark.parametrize(("name", "settings"), METHODS)
def test_score_equals_forward_and_token_nll(backbone: torch.nn.Module, name: str, settings: dict) -> None:
    method = build(backbone, name, settings)
    s = method.segment_tokens
    ids, lengths = random_documents(2, 3 * s), torch.tensor([3 * s, 2 * s + 3])
    batch = segment_batch(ids, lengths, s)
    summaries = method.summarize(batch.segments, batch.lengths)
    by_forward = by_score = method.initial_state(2)
    with torch.no_grad():
        for i in range(3):
            summary = None if summaries is None else summaries[:, i]
            out = method(by_forward, batch.segments[:, i], batch.lengths[:, i], summary)
            nll, by_score = method.score(
                by_score, batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i], summary
            )
            torch.testing.assert_close(nll, token_nll(out.logits, batch.targets[:, i]).sum(-1), rtol=1e-5, atol=1e-4)
            by_forward = out.state
            for ours, theirs in zip(flatten(by_score)[1], flatten(by_forward)[1], strict=True):
                assert (ours is None) == (theirs is None)
                if ours is not None:
                    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "settings"), METHODS)
def test_graph_plumbing_gives_the_eager_numbers_exactly(backbone: torch.nn.Module, name: str, settings: dict) -> None:
    """Off CUDA, GraphedMethod runs its steps eagerly on the static buffers a capture would use: one capture per
    step signature the eager loop shows (a state layout, and whether a next segment rides along)."""
    method = build(backbone, name, settings)
    graphed = GraphedMethod(method)
    signatures = set()
    real_score = method.score

    def seen(state, *args):
        signatures.add((flatten(state)[0], args[-1] is None))
        return real_score(state, *args)

    for seed, lengths in enumerate([[200, 150, 31], [200, 199, 100], [90, 60, 3], [200, 150, 31]]):
        ids = random_documents(3, max(lengths), seed=seed)
        method.score = seen
        eager = nll_of(method, ids, lengths)
        del method.score
        assert torch.equal(nll_of(graphed, ids, lengths), eager)
    assert len(graphed._steps.captured) == (0 if method.host_steps else len(signatures))  # host steps run eagerly
    assert graphed.failures == []


def test_a_dropped_graphed_method_frees_its_buffers_without_the_garbage_collector(llama: torch.nn.Module) -> None:
    """No reference cycle: the benchmark frees each case's graphs (and their memory pools) by dropping it."""
    graphed = GraphedMethod(build(llama, "hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16}))
    nll_of(graphed, random_documents(2, 100), [100, 60])
    buffers = [weakref.ref(b) for entry in graphed._steps.captured.values() for b in entry.inputs if b is not None]
    gc.disable()
    try:
        del graphed
        assert buffers and all(ref() is None for ref in buffers)
    finally:
        gc.enable()


def test_graphed_method_leaves_training_to_the_method(llama: torch.nn.Module) -> None:
    method = build(llama, "rmt", {})
    graphed = GraphedMethod(method)
    ids = random_documents(1, 3 * method.segment_tokens)
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), method.segment_tokens)
    score_segments(graphed, batch)[0].sum().backward()
    assert method.memory.grad is not None and graphed._steps.captured == {}


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "opt"])
@pytest.mark.parametrize(("name", "settings"), METHODS)
def test_a_segment_step_reads_nothing_back_to_the_host(backbone: torch.nn.Module, name: str, settings: dict) -> None:
    """No .item()/.tolist()/bool(tensor) (``_local_scalar_dense``), no tensor built from host data inside a step,
    unless the method declares ``host_steps`` (retrieval ranks on the host): then its scoring steps do read back."""
    method = build(backbone, name, settings)
    s = method.segment_tokens
    batch = segment_batch(random_documents(2, 3 * s), torch.tensor([3 * s, 2 * s + 5]), s)
    state, seen = method.initial_state(2), []
    with torch.inference_mode():
        inline = method.summarizes_inline(2)
        summaries = None if inline else method.summarize(batch.segments, batch.lengths)
        for i in range(3):
            summary = None if summaries is None else summaries[:, i]
            upcoming = (batch.segments[:, i + 1], batch.lengths[:, i + 1]) if inline and i < 2 else None
            with HostReads() as reads:
                _, state = method.score(
                    state, batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i], summary, upcoming
                )
            seen += reads.ops
            assert reads.ops == [] or method.host_steps, (i, reads.ops)
    assert bool(seen) == method.host_steps, seen  # a method that says its steps read back does


class HostReads(TorchDispatchMode):
    """Records the operators that move data between host and device."""

    SUSPECT = ("_local_scalar_dense", "is_nonzero", "lift_fresh", "item", "equal")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(word in str(func) for word in self.SUSPECT):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_output_head_skips_segments_that_score_nothing(llama: torch.nn.Module) -> None:
    method = build(llama, "rmt", {})
    s = method.segment_tokens
    ids = random_documents(2, 4 * s)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, -s:] = True  # a training window scored on its last segment
    rows: list[int] = []
    hook = llama.get_output_embeddings().register_forward_hook(
        lambda m, args, out: rows.append(args[0][..., 0].numel())
    )
    try:
        nll = nll_of(method, ids, [4 * s, 4 * s], scored)
    finally:
        hook.remove()
    # segment 2's last position predicts segment 3's first token: segments 0 and 1 score nothing
    assert (nll[:, :2] == 0).all() and (nll[:, 2:] > 0).all()
    # each causal-LM call hands the head one position per row; hidden_nll runs it on segments 2 and 3 only
    assert rows == [2, 2, 2, 2 * s, 2, 2 * s]


def test_plain_skips_segments_that_score_nothing(llama: torch.nn.Module) -> None:
    method = build(llama, "plain", {})
    s = method.segment_tokens
    ids = random_documents(1, 4 * s)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    scored[:, -s:] = True
    calls_seen: list[int] = []
    hook = llama.register_forward_pre_hook(lambda m, args: calls_seen.append(1))
    try:
        nll = nll_of(method, ids, [4 * s], scored)
    finally:
        hook.remove()
    assert len(calls_seen) == 2 and (nll[:, :2] == 0).all()  # segments 0 and 1: no target, no state, no forward


def test_a_soft_capped_head_is_scored_from_the_models_own_logits() -> None:
    backbone = soft_capped_backbone()
    assert not calls.head_is_plain(backbone) and not calls.plain_causal(backbone.config)
    method = build(backbone, "rmt", {})
    ids = random_documents(1, 2 * method.segment_tokens)
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), method.segment_tokens)
    with torch.no_grad():
        nll, _ = method.score(method.initial_state(1), batch.segments[:, 0], batch.lengths[:, 0], batch.targets[:, 0])
        logits = method(method.initial_state(1), batch.segments[:, 0], batch.lengths[:, 0]).logits
    torch.testing.assert_close(nll, token_nll(logits, batch.targets[:, 0]).sum(-1))
    # soft-capped logits are not the head on its input: the split path would have been wrong
    assert logits.abs().max() <= 5.0


def test_causal_attention_is_used_only_inside_and_only_where_it_is_exact(llama: torch.nn.Module) -> None:
    before = llama.config._attn_implementation
    with calls.causal_attention(llama):
        assert llama.config._attn_implementation == calls.CAUSAL_SDPA
    assert llama.config._attn_implementation == before
    gemma = soft_capped_backbone()
    with calls.causal_attention(gemma):  # sliding-window layers need their masks
        assert gemma.config._attn_implementation == "eager"


def test_chunked_losses_equal_the_whole_ones(llama: torch.nn.Module, monkeypatch) -> None:
    hidden = torch.randn(3, 20, 64)
    targets = torch.randint(0, 259, (3, 20))
    targets[1, 5:] = IGNORE
    head = llama.get_output_embeddings()
    whole = torch.nn.functional.cross_entropy(
        head(hidden).flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
    ).view(3, 20)
    monkeypatch.setattr(loss, "CE_CHUNK_ELEMENTS", 259 * 7)  # 7 positions per chunk
    with torch.no_grad():
        assert torch.equal(token_nll(head(hidden), targets), whole)
        torch.testing.assert_close(loss.hidden_nll(head, hidden, targets), whole.sum(-1))


def test_summaries_run_in_passes_of_summary_segments_per_document(llama: torch.nn.Module) -> None:
    method = build(llama, "hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16, "summary_segments": 3})
    s = method.segment_tokens
    ids = random_documents(2, 10 * s)
    batch = segment_batch(ids, torch.tensor([10 * s, 10 * s]), s)
    rows: list[int] = []
    hook = llama.base_model.register_forward_pre_hook(
        lambda m, args, kwargs: rows.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            method.summarize(batch.segments, batch.lengths)
    finally:
        hook.remove()
    assert rows == [6, 6, 6]  # 9 segments to summarise, 3 per pass, 2 documents: memory flat in length


def test_repeated_blocks_are_the_decoder_layers(backbone: torch.nn.Module) -> None:
    blocks = repeated_blocks(backbone)
    assert blocks is not None and len(blocks) == backbone.config.num_hidden_layers


SPAN_WRITES = variants(  # the retrieval checkpoints' settings (results/h200-retrieval-span/), soft and hard
    ("rmt", {"memory_tokens": 4, "write": "span"}, "rmt-span"),
    ("hmt", {"memory_tokens": 4, "write": "span"}, "hmt-span"),
    ("hmt", {"memory_tokens": 4, "write": "span", "span_choice": "hard", "recall_choice": "hard"}, "hmt-span-hard"),
)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "settings"), METHODS + SPAN_WRITES)
def test_compiled_engine_gives_the_eager_nll(name: str, settings: dict) -> None:
    """torch.compile of the blocks and the loss (Inductor on the CPU): the same NLL to float rounding."""
    from hmtbench.backbones.tiny import tiny_model

    llama = tiny_model("llama")
    method = build(llama, name, settings)
    ids, lengths = random_documents(2, 150), [150, 97]
    eager = nll_of(method, ids, lengths)
    fast = accelerate(method, EngineOptions(compile=True, cuda_graphs=True))
    torch.testing.assert_close(nll_of(fast, ids, lengths), eager, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nll_of(fast, ids, lengths), eager, rtol=1e-5, atol=1e-4)  # replayed


@pytest.mark.slow
def test_compiled_blocks_decode_eagerly_so_no_block_compiles_apart() -> None:
    """A KV-cached call indexes the cache by its block's ``layer_idx``, which dynamo guards on: compiled, every
    block would compile apart (three graphs a block, past the recompile limit at 30 blocks). Decoding after a
    compiled read adds no graph and gives the eager path's tokens."""
    from torch._dynamo.utils import counters

    from hmtbench.backbones.tiny import tiny_model
    from hmtbench.generation import decode, read_openings

    method = build(tiny_model("llama"), "hmt", {"segment_length": 24, "sensory_tokens": 3, "recall_context": 4})
    prompts = [random_documents(1, n, seed=n)[0] for n in (50, 61)]
    with torch.no_grad():
        eager = decode(method, read_openings(method, method, prompts), prompts, 6)
        openings = read_openings(method, accelerate(method, EngineOptions(compile=True)), prompts)
        graphs = counters["stats"]["unique_graphs"]
        compiled = decode(method, openings, prompts, 6)
    assert counters["stats"]["unique_graphs"] == graphs > 0
    assert [g.token_ids for g in compiled] == [g.token_ids for g in eager]
