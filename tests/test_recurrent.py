"""The fixed-state causal mixers of hamburger.recurrent: their chunkwise forms against their token-by-token
recurrences (float64), causality, padding, the state measured by stepping, and values the maths fixes."""

import pytest
import torch

from conftest import stepped
from hamburger.recurrent import (
    BasedMixer,
    DeltaNetMixer,
    GatedDeltaNetMixer,
    Mamba2Mixer,
    SlidingWindowMixer,
    delta_chunkwise,
    delta_step,
    taylor_features,
)
from hamburger.sequence import MIXERS, RECURRENT, HamTransformerBlock, create_mixer, state_floats

SMALL = {
    "deltanet": lambda h: DeltaNetMixer(8, heads=h, chunk=4),
    "gated_deltanet": lambda h: GatedDeltaNetMixer(8, heads=h, chunk=4),
    "mamba2": lambda h: Mamba2Mixer(8, heads=h, chunk=4),
    "based": lambda h: BasedMixer(8, heads=h, features=3, chunk=4),
    "swa": lambda h: SlidingWindowMixer(8, heads=h, window=5),
}


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("name", list(SMALL))
def test_the_chunkwise_form_equals_the_recurrence(name, heads):
    torch.manual_seed(0)
    mixer = SMALL[name](heads).double()
    x = torch.randn(2, 13, 8, dtype=torch.float64)  # 13 tokens: a partial last chunk (4) and window block (5)
    torch.testing.assert_close(mixer(x), stepped(mixer, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(SMALL))
def test_a_late_loss_reaches_no_later_token(name):
    torch.manual_seed(0)
    mixer = SMALL[name](2).double()
    x = torch.randn(1, 11, 8, dtype=torch.float64, requires_grad=True)
    mixer(x)[:, :6].sum().backward()
    assert x.grad[:, 6:].abs().max() == 0 and x.grad[:, :6].abs().max() > 0


@pytest.mark.parametrize("name", list(SMALL))
def test_right_padding_leaves_the_real_tokens_as_they_were(name):
    torch.manual_seed(0)
    mixer = SMALL[name](2).double()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    torch.testing.assert_close(mixer(x, mask)[1, :7], mixer(x[1:, :7])[0], rtol=0, atol=1e-12)


def test_the_chunk_length_and_a_carried_state_change_nothing():
    torch.manual_seed(0)
    q, k = torch.nn.functional.normalize(torch.randn(2, 2, 2, 20, 4, dtype=torch.float64), dim=-1)
    v = torch.randn(2, 2, 20, 3, dtype=torch.float64)
    beta, g = torch.rand(2, 2, 20, dtype=torch.float64), -torch.rand(2, 2, 20, dtype=torch.float64)
    whole, end = delta_chunkwise(q, k, v, beta, g, chunk=20)
    for chunk in (1, 3, 8):
        torch.testing.assert_close(delta_chunkwise(q, k, v, beta, g, chunk=chunk)[0], whole, rtol=0, atol=1e-12)
    first, mid = delta_chunkwise(q[:, :, :9], k[:, :, :9], v[:, :, :9], beta[..., :9], g[..., :9], chunk=4)
    second, last = delta_chunkwise(q[:, :, 9:], k[:, :, 9:], v[:, :, 9:], beta[..., 9:], g[..., 9:], chunk=4, state=mid)
    torch.testing.assert_close(torch.cat([first, second], 2), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, end, rtol=0, atol=1e-12)


def test_the_delta_rule_overwrites_what_a_key_holds():
    # orthonormal keys, β = 1: a second write under a key replaces its value (linear attention would add them),
    # and reading with the key returns exactly the last value written
    keys = torch.eye(4, dtype=torch.float64)[None, None]  # (1, 1, 4, 4)
    k = torch.cat([keys, keys[:, :, :1]], 2)  # keys 0, 1, 2, 3, then 0 again
    v = torch.arange(15, dtype=torch.float64).reshape(1, 1, 5, 3)
    _, state = delta_chunkwise(k, k, v, torch.ones(1, 1, 5, dtype=torch.float64), None, chunk=2)
    torch.testing.assert_close(state[0, 0], torch.cat([v[0, 0, 4:], v[0, 0, 1:4]]))
    _, added = delta_chunkwise(k, k, v, None, None, chunk=2)
    torch.testing.assert_close(added[0, 0, 0], v[0, 0, 0] + v[0, 0, 4])
    # a decay of log 0.5 per token halves the state at every step
    state = torch.ones(1, 1, 4, 3, dtype=torch.float64)
    zero = torch.zeros(1, 1, 4, dtype=torch.float64)
    _, halved = delta_step(zero, zero, zero[..., :3], None, torch.full((1, 1), -0.6931471805599453), state)
    torch.testing.assert_close(halved, state / 2)


def test_the_taylor_features_give_the_second_order_expansion_of_exp():
    torch.manual_seed(0)
    x, y = torch.randn(2, 16, dtype=torch.float64)
    fx, fy = taylor_features(x), taylor_features(y)
    assert fx.shape == (153,)  # 1 + 16 + 136
    dot = x @ y
    torch.testing.assert_close(fx @ fy, 1 + dot + dot**2 / 2, rtol=1e-13, atol=1e-13)


def test_the_state_measured_by_stepping():
    c, h = 16, 2
    d = c // h
    assert state_floats(DeltaNetMixer(c, heads=h), 40) == h * d * d
    assert state_floats(GatedDeltaNetMixer(c, heads=h), 40) == h * d * d
    assert state_floats(Mamba2Mixer(c, heads=h), 40) == h * d * d
    assert state_floats(BasedMixer(c, heads=h, features=16), 40) == h * 153 * (d + 1)
    assert state_floats(SlidingWindowMixer(c, heads=h, window=8), 40) == 2 * 7 * c  # the last w - 1 keys and values
    assert state_floats(SlidingWindowMixer(c, heads=h, window=8), 3) == 2 * 3 * c  # fewer tokens than the window


def test_the_mixers_are_named_in_the_sequence_interface_with_matched_parameters():
    assert set(RECURRENT) <= set(MIXERS)
    sizes = {m: sum(p.numel() for p in HamTransformerBlock(64, mixer=m, causal=True).parameters()) for m in MIXERS}
    for name in RECURRENT:
        assert abs(sizes[name] / sizes["softmax"] - 1) < 0.01, (name, sizes)
        with pytest.raises(ValueError, match="causal mixer"):
            create_mixer(name, 16, causal=False)
    with pytest.raises(TypeError, match="takes no options"):
        create_mixer("deltanet", 16, causal=True, rank=4)


def test_a_hybrid_alternates_its_mixer_with_sliding_window_attention():
    from hamburger.sequence import HYBRIDS, HamDecoder, block_mixers, model_state_floats

    assert "ham_nmf+swa" in HYBRIDS and block_mixers("deltanet+swa", 3) == ["deltanet", "swa", "deltanet"]
    with pytest.raises(ValueError, match="unknown mixer"):
        block_mixers("softmax+swa", 2)
    torch.manual_seed(0)
    model = HamDecoder(16, depth=2, max_len=40, mixer="gated_deltanet+swa", heads=2).double()
    assert [type(b.mixer).__name__ for b in model.blocks] == ["GatedDeltaNetMixer", "SlidingWindowMixer"]
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x), stepped(model, x), rtol=0, atol=1e-12)
    # the state per layer counts the window's keys and values: (8·8·2 + 2·63·16) / 2 after 100 tokens
    assert model_state_floats("deltanet+swa", 100, dim=16, depth=2, heads=2) == (2 * 8 * 8 + 2 * 63 * 16) / 2
    ham = HamDecoder(16, depth=2, max_len=40, mixer="ham_nmf+swa", rank=4, chunk=4)  # the Ham's options: its blocks
    assert ham.blocks[0].mixer.rank == 4 and type(ham.blocks[1].mixer).__name__ == "SlidingWindowMixer"


def test_seq_train_takes_the_new_mixers_and_hybrids_by_name(tmp_path):
    import json

    from hamburger.cli import main

    for name in ("deltanet", "ham_nmf+swa"):
        out = tmp_path / name
        argv = ["seq", "train", "--task", "mqar", "--mixer", name, "--seq-len", "32", "--pairs", "4", "--rank", "4"]
        argv += ["--train-examples", "32", "--val-examples", "8", "--iters", "2", "--val-interval", "2"]
        main([*argv, "--chunk", "8", "--batch-size", "4", "--no-tensorboard", "--quiet", "--out", str(out)])
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == 2 and 0 <= log[-1]["val_accuracy"] <= 1


def _fla(op: str):
    """flash-linear-attention's plain-PyTorch reference ``fla/ops/<op>/naive.py`` (the dev extra's fla-core), loaded
    by path: importing ``fla.ops`` would import its Triton kernels too."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (pip install 'hamburger[dev]')")
    path = Path(spec.submodule_search_locations[0]) / "ops" / op / "naive.py"
    module = importlib.util.spec_from_file_location(f"fla_naive_{op}", path)
    loaded = importlib.util.module_from_spec(module)
    module.loader.exec_module(loaded)
    return loaded


def test_the_forms_equal_flash_linear_attentions_references():
    torch.manual_seed(0)
    b, h, n, d = 2, 2, 19, 8
    q, k = torch.nn.functional.normalize(torch.randn(2, b, h, n, d, dtype=torch.float64), dim=-1)
    v = torch.randn(b, h, n, d, dtype=torch.float64)
    beta, g = torch.rand(b, h, n, dtype=torch.float64), -torch.rand(b, h, n, dtype=torch.float64)
    scale = d**-0.5  # fla scales the queries by 1/sqrt(dk)
    ours = delta_chunkwise(q * scale, k, v, beta, None, chunk=4)[0]
    theirs = _fla("delta_rule").delta_rule_recurrence(q, k, v, beta)[0]
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-5, atol=1e-5)  # fla computes in float32

    def bthd(t):
        return t.transpose(1, 2)  # (B, H, N, ·) <-> (B, N, H, ·), fla's layout for these two

    gated = _fla("gated_delta_rule").naive_recurrent_gated_delta_rule(*map(bthd, (q, k, v, beta, g)))[0]
    ours = delta_chunkwise(q * scale, k, v, beta, g, chunk=4)[0]
    torch.testing.assert_close(ours, bthd(gated).double(), rtol=1e-5, atol=1e-5)
    decayed = _fla("simple_gla").naive_recurrent_simple_gla(*map(bthd, (q, k, v, g)))[0]
    ours = delta_chunkwise(q * scale, k, v, None, g, chunk=4)[0]
    torch.testing.assert_close(ours, bthd(decayed).double(), rtol=1e-5, atol=1e-5)
    # Based: the normalised Taylor kernel 1 + a + a²/2 of a = q·k / sqrt(d), causal
    qf, kf = (torch.randn(b, h, n, 16, dtype=torch.float64) for _ in range(2))
    based = _fla("based").naive_parallel_based(qf, kf, v)
    phi_q, phi_k = (taylor_features(t * 16**-0.25) for t in (qf, kf))
    o = delta_chunkwise(phi_q, phi_k, torch.cat([v, torch.ones_like(v[..., :1])], -1), None, None, chunk=4)[0]
    torch.testing.assert_close(o[..., :-1] / (o[..., -1:] + 1e-6), based, rtol=1e-9, atol=1e-9)
