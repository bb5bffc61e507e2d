"""ARMT: DPFP, the delta rule against a hand-computed case and the paper's equations, the read as the only path from
the memory (read off = plain), fp32 matrices under a bf16 backbone, every block's output kept at the write slot, and
a compiled run that compiles the blocks once whatever their number."""

from __future__ import annotations

import pytest
import torch

from hmtbench.backbones.tiny import tiny_model
from hmtbench.engine import score_segments, segment_batch
from hmtbench.methods.armt import EPS, associative_read, associative_write, dpfp
from tests.conftest import build_method, exercised, random_documents

SETTINGS = {"segment_length": 32, "memory_tokens": 2, "key_dim": 8}


def armt(backbone: torch.nn.Module, **settings):
    torch.manual_seed(0)
    return exercised(build_method("armt", backbone, {**SETTINGS, **settings})).eval()


def nll(method, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    batch = segment_batch(ids, torch.tensor(lengths), method.segment_tokens)
    with torch.no_grad():
        return score_segments(method, batch)[0]


def test_dpfp_is_its_definition() -> None:
    x = torch.tensor([[0.5, -2.0, 1.0]])
    r = [0.5, 0.0, 1.0, 0.0, 2.0, 0.0]  # [relu(x), relu(-x)]
    n = len(r)
    expected = torch.tensor([[r[i] * r[(i - j) % n] for j in (1, 2, 3) for i in range(n)]])  # r_i r_{i-j}
    torch.testing.assert_close(dpfp(x), expected / expected.norm())
    assert dpfp(torch.randn(4, 5, 7)).shape == (4, 5, 42) and (dpfp(torch.randn(9, 7)) >= 0).all()


def one_hot_key(sign: float) -> torch.Tensor:
    """d_key = 1: DPFP of a positive number is e_2, of a negative one e_3 (of 6 features)."""
    return dpfp(torch.tensor([[sign * 0.7]]))


def test_the_delta_rule_on_a_hand_computed_case() -> None:
    """Two writes under one key overwrite the association (the delta rule), a write under a new key adds one."""
    e2, e3 = one_hot_key(1.0), one_hot_key(-1.0)
    torch.testing.assert_close(e2, torch.eye(6)[2:3])
    torch.testing.assert_close(e3, torch.eye(6)[3:4])
    matrix, normalizer = torch.zeros(6, 2), torch.zeros(6)
    # segment 0 (nothing written yet: vbar = 0, gamma = 1): A = 0.5 e2 [1, 2], z = e2
    matrix, normalizer = associative_write(matrix, normalizer, e2, torch.tensor([[1.0, 2.0]]), torch.tensor([0.5]))
    torch.testing.assert_close(matrix[2], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(normalizer, torch.eye(6)[2])
    torch.testing.assert_close(associative_read(matrix[None], normalizer[None], e2[None])[0, 0],
                               torch.tensor([0.5, 1.0]) / (1 + EPS))
    # segment 1, the same key, value [3, 0], gate 1: vbar = A e2 / (1 + eps), gamma = clip(1 - (1 + eps)) = 0
    matrix, normalizer = associative_write(matrix, normalizer, e2, torch.tensor([[3.0, 0.0]]), torch.tensor([1.0]))
    torch.testing.assert_close(matrix[2], torch.tensor([0.5, 1.0]) + torch.tensor([3.0, 0.0])
                               - torch.tensor([0.5, 1.0]) / (1 + EPS))
    torch.testing.assert_close(normalizer, torch.eye(6)[2])  # gamma 0: the key was known
    read = associative_read(matrix[None], normalizer[None], e2[None])[0, 0]
    torch.testing.assert_close(read, torch.tensor([3.0, 0.0]), atol=1e-4, rtol=0)  # the new value replaced the old
    # a new key: vbar = 0 (z . e3 = 0), gamma = 1 - eps; reading it back gives the value exactly
    matrix, normalizer = associative_write(matrix, normalizer, e3, torch.tensor([[-1.0, 4.0]]), torch.tensor([1.0]))
    assert normalizer[3] == pytest.approx(1 - EPS)
    torch.testing.assert_close(associative_read(matrix[None], normalizer[None], e3[None])[0, 0],
                               torch.tensor([-1.0, 4.0]))


def paper_segments(memory_states: list[torch.Tensor], wk, wv, wb, bias, wq, queries) -> list[torch.Tensor]:
    """The paper's equations, one memory token per segment, vector by vector (float64): for each segment s,
    read every query with A_{s-1}, z_{s-1}, then write its memory token's k, v, beta."""
    d = wv.shape[0]
    features = 6 * wk.shape[0]
    A, z, reads = torch.zeros(features, d, dtype=torch.float64), torch.zeros(features, dtype=torch.float64), []
    for s, m in enumerate(memory_states):
        q = dpfp(queries[s] @ wq.T)  # (T, D)
        reads.append(torch.stack([(qi @ A) / (z @ qi + EPS) for qi in q]))
        k, v, beta = dpfp(m @ wk.T), m @ wv.T, torch.sigmoid(m @ wb + bias)
        vbar = (k @ A) / (z @ k + EPS) if s else torch.zeros(d, dtype=torch.float64)
        gamma = (1 - (z @ k + EPS) / (k @ k)).clamp(0, 1) if s else torch.tensor(1.0, dtype=torch.float64)
        A = A + beta * torch.outer(k, v - vbar)
        z = z + gamma * k
    return reads


def test_the_method_follows_the_papers_equations(llama: torch.nn.Module) -> None:
    """One layer's read and write as the method runs them (next_state, read_layer) equal the paper's equations."""
    method = armt(llama, memory_tokens=1).double()
    layer, segments, d = 1, 4, method.hidden_size
    generator = torch.Generator().manual_seed(1)
    memory_states = [torch.randn(d, generator=generator, dtype=torch.float64) for _ in range(segments)]
    queries = [torch.randn(5, d, generator=generator, dtype=torch.float64) for _ in range(segments)]
    expected = paper_segments(memory_states, method.key[layer], method.value[layer], method.gate[layer],
                              method.gate_bias[layer], method.query[layer], queries)
    state = method.initial_state(1)
    state = type(state)(1, state.matrices.double(), state.normalizers.double())
    with torch.no_grad():
        for s in range(segments):
            read = method.read_layer(state, layer, queries[s][None]) - queries[s][None]
            torch.testing.assert_close(read[0], expected[s], rtol=1e-9, atol=1e-12)
            layers = torch.zeros(1, method.value.shape[0], 1, d, dtype=torch.float64)
            layers[0, layer, 0] = memory_states[s]
            state = method.next_state(state, None, torch.zeros(1, 1, dtype=torch.long), layers=layers)
    assert expected[-1].abs().max() > 0.01  # the memory carried something


def test_with_its_read_off_armt_scores_exactly_as_plain_on_the_same_segments(llama: torch.nn.Module) -> None:
    """The memory tokens sit after the text under causal attention: the text sees them only through the read."""
    method = armt(llama)
    plain = build_method("plain", llama, {"segment_length": method.segment_tokens})
    ids, lengths = random_documents(2, 4 * method.segment_tokens), [4 * method.segment_tokens, 3 * 30 + 7]
    with_read = nll(method, ids, lengths)
    reference = nll(plain, ids, lengths)
    assert (with_read[:, 1:] - reference[:, 1:]).abs().max() > 1e-3  # the read changes every later segment...
    torch.testing.assert_close(with_read[:, 0], reference[:, 0], rtol=0, atol=1e-5)  # ...but not segment 0
    with torch.no_grad():
        method.query.zero_()  # phi(0) = 0: every read is 0 exactly
    torch.testing.assert_close(nll(method, ids, lengths), reference, rtol=0, atol=1e-5)


def test_an_untrained_armt_is_plain() -> None:
    """The value projection starts at zero (as the official code's): nothing is written before training."""
    llama = tiny_model("llama")
    torch.manual_seed(0)
    method = build_method("armt", llama, SETTINGS).eval()
    plain = build_method("plain", llama, {"segment_length": method.segment_tokens})
    ids = random_documents(1, 90)
    torch.testing.assert_close(nll(method, ids, [90]), nll(plain, ids, [90]), rtol=0, atol=1e-5)


def test_the_matrices_stay_fp32_on_a_bf16_backbone() -> None:
    backbone = tiny_model("llama").to(torch.bfloat16)
    method = armt(backbone)
    assert method.query.dtype == torch.bfloat16
    ids = random_documents(1, 3 * method.segment_tokens)
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), method.segment_tokens)
    state = method.initial_state(1)
    with torch.no_grad():
        for i in range(3):
            _, state = method.score(state, batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i])
    assert state.matrices.dtype == state.normalizers.dtype == torch.float32 and state.matrices.abs().max() > 0
    method.to(torch.bfloat16)  # a cast of the module never reaches a state
    assert method.initial_state(1).matrices.dtype == torch.float32


def test_the_write_reads_every_blocks_output_at_the_memory_positions(llama: torch.nn.Module) -> None:
    method = armt(llama)
    ids = random_documents(2, method.segment_tokens)
    lengths = torch.tensor([method.segment_tokens, 11])
    kept = {}

    def spy(state, written, segment_ids, side=None, layers=None):
        kept["layers"] = layers
        return state

    method.next_state = spy
    state = method.initial_state(2)  # zero matrices: the read adds nothing, so HF's own forward is the reference
    with torch.no_grad():
        method.score(state, ids, lengths, None)
        assert not any(block._forward_pre_hooks or block._forward_hooks for block in llama.model.layers)  # all gone
        read = method._read(state, ids, lengths, None)
        hidden = llama(inputs_embeds=read.embeds, output_hidden_states=True).hidden_states
    layers = kept["layers"]
    assert layers.shape == (2, 2, 2, method.hidden_size)  # (B, n_layers, m, d)
    at = read.write_at[..., None].expand(-1, -1, method.hidden_size)
    torch.testing.assert_close(layers[:, 0], hidden[1].gather(1, at))  # block 0's output (HF's last is normed)


@pytest.mark.slow
def test_compiled_blocks_compile_once_whatever_the_depth_and_match_eager() -> None:
    """The per-layer hooks stay outside the compiled blocks: a 4-layer backbone compiles no more frames than a
    2-layer one (a hook traced inside a block guarded on its layer: 6 frames instead of 2), ARMT's read and write
    compile once for every layer (compiled_parts), and the loss and its gradients match eager."""
    from torch._dynamo.utils import counters

    from hmtbench.config import EngineOptions
    from hmtbench.fastpath import accelerate
    from hmtbench.methods.armt import ARMT

    frames = {}
    for depth in (2, 4):
        torch._dynamo.reset()
        counters.clear()
        backbone = tiny_model("llama")
        if depth == 4:
            import transformers

            config = backbone.config
            config.num_hidden_layers = 4
            torch.manual_seed(0)
            backbone = transformers.AutoModelForCausalLM.from_config(config).eval()
        method = armt(backbone)
        ids, lengths = random_documents(2, 100), [100, 61]
        batch = segment_batch(ids, torch.tensor(lengths), method.segment_tokens)
        eager_loss = score_segments(method, batch)[0].sum()
        eager = torch.autograd.grad(eager_loss, [method.value, method.query])
        fast = accelerate(method, EngineOptions(compile=True))
        assert fast.layer_read is not ARMT.layer_read and fast.memory_write is not ARMT.memory_write
        compiled_loss = score_segments(fast, batch)[0].sum()
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-4)
        for compiled, reference in zip(torch.autograd.grad(compiled_loss, [fast.value, fast.query]), eager,
                                       strict=True):
            assert (compiled - reference).norm() <= 1e-5 * reference.norm()  # float rounding, summed differently
        frames[depth] = counters["frames"]["ok"]
    # one block forward, the loss, ARMT's read and its write twice each (the first segment's zero state needs no
    # gradient, the later ones do: one guard each), whatever the depth
    assert frames[2] == frames[4] <= 6
