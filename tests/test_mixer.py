"""HamMixer and the sequence stacks: causality, parallel == recurrent, masks, any N, gradients, compile, determinism."""

import pytest
import torch

import hamburger as hb
from hamburger.sequence import MIXERS, create_mixer


def _tokens(b=2, n=11, c=16, seed=0):
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("n", [3, 8, 11])  # N < L, N a multiple of L, N not a multiple
def test_causal_outputs_ignore_the_future(ham, n):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=4).eval()
    x = _tokens(n=n)
    y = mixer(x)
    for t in range(n - 1):
        later = x.clone()
        later[:, t + 1 :] += torch.randn_like(later[:, t + 1 :])
        torch.testing.assert_close(mixer(later)[:, : t + 1], y[:, : t + 1], rtol=0, atol=0)
    # and it does mix: tokens of an earlier chunk move a later token's output
    if n > 4:
        earlier = x.clone()
        earlier[:, 0] += 3.0
        assert not torch.allclose(mixer(earlier)[:, -1], y[:, -1])


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("n, chunk", [(11, 4), (3, 4), (8, 1), (9, 3)])
def test_recurrent_form_equals_the_parallel_form(ham, n, chunk):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=True, chunk=chunk).eval()
    x = _tokens(n=n)
    state, ys = mixer.init_state(2), []
    for t in range(n):
        y, state = mixer.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), mixer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_padded_tokens_change_nothing(ham, causal):
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=causal, chunk=4).eval()
    x = _tokens(n=9)
    padded = torch.cat([x, torch.randn(2, 5, 16)], 1)
    mask = torch.zeros(2, 14, dtype=torch.bool)
    mask[:, :9] = True
    y = mixer(padded, mask)
    torch.testing.assert_close(y[:, :9], mixer(x), rtol=1e-5, atol=1e-5)  # right padding == no padding
    other = padded.clone()
    other[:, 9:] = 100 * torch.randn(2, 5, 16)
    torch.testing.assert_close(mixer(other, mask)[:, :9], y[:, :9], rtol=0, atol=0)
    # padding inside the sequence: the padded values still do not matter
    mask[0, 2] = False
    inner = padded.clone()
    inner[0, 2] = 50.0
    torch.testing.assert_close(mixer(inner, mask)[mask], mixer(padded, mask)[mask], rtol=0, atol=0)


@pytest.mark.parametrize("ham", ["nmf", "vq"])
def test_non_causal_mixer_is_permutation_equivariant_and_global(ham):
    mixer = hb.HamMixer(16, ham=ham, rank=4).eval()
    x = _tokens(n=10)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mixer(x[:, perm]), mixer(x)[:, perm], rtol=1e-5, atol=1e-5)
    moved = x.clone()
    moved[:, -1] += 3.0
    assert not torch.allclose(mixer(moved)[:, 0], mixer(x)[:, 0])  # the last token reaches the first


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("causal", [False, True])
def test_every_mixer_in_a_stack_gets_gradients_and_is_deterministic(name, causal):
    torch.manual_seed(0)
    cls = hb.HamDecoder if causal else hb.HamEncoder
    kw = {"rank": 4, "chunk": 4} if name.startswith("ham_") else {}
    model = cls(16, depth=2, mixer=name, heads=2, max_len=32, **kw)
    x = _tokens(n=13)
    mask = torch.ones(2, 13, dtype=torch.bool)
    mask[1, 10:] = False
    model(x, mask).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if name == "none":  # no mixer: its blocks' first LayerNorm feeds nothing
        missing = [n for n in missing if "norm1" not in n]
    assert not missing, missing
    model.eval()
    assert torch.equal(model(x, mask), model(x, mask))


@pytest.mark.parametrize("name", MIXERS)
def test_decoder_recurrent_form_matches_teacher_forcing(name):
    kw = {"rank": 4, "chunk": 3} if name.startswith("ham_") else {}
    model = hb.HamDecoder(16, depth=2, mixer=name, heads=2, max_len=16, **kw).eval()
    x = _tokens(n=10)
    state, ys = model.init_state(2), []
    for t in range(10):
        y, state = model.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), model(x), rtol=1e-4, atol=1e-4)


def test_arms_have_the_same_parameter_count():
    counts = {m: sum(p.numel() for p in hb.HamTransformerBlock(64, mixer=m, heads=4).parameters()) for m in MIXERS}
    assert max(counts.values()) / min(counts.values()) < 1.01, counts


@pytest.mark.parametrize("ham", ["nmf", "vq"])
@pytest.mark.parametrize("causal", [False, True])
def test_compile_matches_eager(ham, causal):
    torch._dynamo.reset()
    mixer = hb.HamMixer(16, ham=ham, rank=4, heads=2, causal=causal, chunk=4).eval()
    x = _tokens(n=10)
    torch.testing.assert_close(torch.compile(mixer, dynamic=False)(x), mixer(x), rtol=1e-5, atol=1e-5)


def test_bptt_and_one_step_agree_forward_and_differ_backward():
    x = _tokens(n=8).requires_grad_()
    one = hb.HamMixer(16, rank=4, causal=True, chunk=4)
    full = hb.HamMixer(16, rank=4, causal=True, chunk=4, grad="bptt")
    full.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(x), full(x))
    g1 = torch.autograd.grad(one(x).sum(), x)[0]
    g2 = torch.autograd.grad(full(x).sum(), x)[0]
    assert not torch.allclose(g1, g2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="ham must be one of"):
        hb.HamMixer(16, ham="cd")
    with pytest.raises(ValueError, match="divisible by heads"):
        hb.HamMixer(16, heads=3)
    with pytest.raises(ValueError, match=r"expects \(B, N, 16\)"):
        hb.HamMixer(16)(torch.randn(2, 16))
    with pytest.raises(ValueError, match="empty sequence"):
        hb.HamMixer(16)(torch.randn(2, 0, 16))
    with pytest.raises(ValueError, match="mask must be a bool"):
        hb.HamMixer(16)(torch.randn(2, 5, 16), torch.ones(2, 5))
    with pytest.raises(ValueError, match="causal mixer"):
        hb.HamMixer(16).init_state(1)
    with pytest.raises(ValueError, match="longer than max_len"):
        hb.HamEncoder(16, max_len=4)(torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match="unknown mixer"):
        create_mixer("mamba", 16)
