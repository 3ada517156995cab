"""The causal Ham with the delta-rule dictionary (fit="delta"): the chunkwise form equals the token-by-token
recurrence (float64), causality, the write rule by hand, the state measured by stepping, padding, errors."""

import pytest
import torch

import hamburger as hb
from conftest import assert_ignores_the_future, stepped
from hamburger.seq.config import SeqTrainConfig
from hamburger.seq.experiments.arena import formula_state
from hamburger.sequence import model_state_floats, state_floats


def _tokens(b=2, n=11, c=16, seed=0):
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mixer(**kw):
    torch.manual_seed(0)
    return hb.HamMixer(16, **{"rank": 4, "heads": 2, "causal": True, "chunk": 4, "fit": "delta", **kw}).double()


@pytest.mark.parametrize("n, chunk", [(11, 4), (3, 4), (8, 1), (9, 3), (16, 16)])
@pytest.mark.parametrize("grad, decay", [("chunkwise", None), ("one-step", None), ("truncated:2", 0.8)])
def test_the_chunkwise_form_equals_the_recurrence(n, chunk, grad, decay):
    mixer = _mixer(chunk=chunk, grad=grad, decay=decay)
    x = _tokens(n=n)
    torch.testing.assert_close(stepped(mixer, x), mixer(x), rtol=1e-10, atol=1e-10)


def test_a_write_erases_what_the_code_reads_then_writes_the_token():
    """Token by token by hand: the code c_t of h_t against the chunk-start dictionary (clipped, unit columns), the key
    k = c/‖c‖, Sᵀ ← Sᵀ + β k (h − Sk)ᵀ... written here as D ← D + β (h − D k) kᵀ, the output D k. With β = 1 a token
    reads back exactly what it wrote: the delta rule's erase, not linear attention's blend."""
    mixer = _mixer(chunk=3)
    x = _tokens(n=7)
    with torch.no_grad():
        h = mixer._groups(x)  # (G, N, D)
        beta = mixer._beta(x)  # (G, N)
        d = mixer._start(h.shape[0], h)  # (G, D, R)
        coding, outs = d, []
        for t in range(7):
            if t % 3 == 0:
                coding = d.clamp_min(0) / (d.clamp_min(0).norm(dim=1, keepdim=True) + mixer.eps)
            c = mixer._code(h[:, t : t + 1], coding)[:, 0]  # (G, R)
            k = c / c.norm(dim=-1, keepdim=True)
            read = (d @ k[..., None])[..., 0]  # (G, D)
            d = d + beta[:, t, None, None] * (h[:, t] - read)[..., None] * k[:, None, :]
            outs.append((d @ k[..., None])[..., 0])
        expected = mixer._ungroup(torch.stack(outs, 1), 2)
        torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)
        mixer.beta_proj.weight.zero_()
        mixer.beta_proj.bias.fill_(40.0)  # β = 1 to rounding
        h_out = mixer._delta(h, mixer._beta(x), None)
        torch.testing.assert_close(h_out, h, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [5, 11])
def test_outputs_ignore_the_future_and_a_late_loss_reaches_only_earlier_tokens(n):
    mixer = _mixer()
    x = _tokens(n=n)
    assert_ignores_the_future(mixer, x)
    x = x.clone().requires_grad_(True)
    mixer(x)[:, 2].sum().backward()
    assert (x.grad[:, 3:] == 0).all() and (x.grad[:, :2].abs().sum(-1) > 0).all()
    assert mixer.beta_proj.weight.grad is not None and mixer.beta_proj.weight.grad.abs().sum() > 0


def test_padded_tokens_write_nothing():
    mixer = _mixer()
    x = _tokens(n=10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False
    y = mixer(x, mask)
    torch.testing.assert_close(y[0, :6], mixer(x[:1, :6])[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y[0, 6:], mixer.out_proj.bias.expand(4, -1), rtol=0, atol=0)  # zero before it


def test_the_state_is_two_dictionaries_whatever_the_length():
    """2·D·R floats per head (the dictionary now and at the chunk's start), the same after 5 or 50 tokens; the
    arena's formula counts the same."""
    mixer = hb.HamMixer(32, rank=8, heads=2, causal=True, chunk=4, fit="delta")
    assert state_floats(mixer, 5) == state_floats(mixer, 50) == 2 * 2 * 16 * 8
    config = SeqTrainConfig(mixer="ham_nmf", dim=32, heads=2, rank=8, chunk=4, ham_fit="delta", depth=2)
    kw = dict(rank=8, chunk=4, fit="delta")
    assert formula_state("ham_nmf", 64, config) == model_state_floats("ham_nmf", 64, dim=32, depth=2, heads=2, **kw)
    # no pending chunk: at seq train's chunk 16, fewer floats than the statistics form's D·R + R² + 15·D
    stats = state_floats(hb.HamMixer(32, rank=8, heads=2, causal=True, chunk=16), 50)
    assert stats == 2 * (16 * 8 + 8 * 8 + 15 * 16) > state_floats(mixer, 50)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ham": "vq", "causal": True}, "fits the causal NMF mixer's dictionary"),
        ({"causal": False}, "fits the causal NMF mixer's dictionary"),
        ({"causal": True, "memory": "dict"}, "carries the dictionary itself"),
        ({"causal": True, "local": "chunk"}, "carries the dictionary itself"),
    ],
)
def test_options_the_delta_rule_has_no_use_for_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hb.HamMixer(16, fit="delta", **kwargs)
    with pytest.raises(ValueError, match="query reads the delta-rule dictionary"):
        hb.HamMixer(16, causal=True, query=True)


def test_a_decoder_with_the_delta_ham_trains_and_its_recurrent_form_matches():
    torch.manual_seed(0)
    dec = hb.sequence.HamDecoder(16, depth=2, max_len=32, mixer="ham_nmf", rank=4, chunk=4, fit="delta").double()
    x = _tokens(n=9)
    torch.testing.assert_close(stepped(dec, x), dec(x), rtol=1e-9, atol=1e-9)
    assert "fit='delta'" in repr(dec)


def test_decay_shrinks_the_dictionary_by_gamma_per_token():
    """decay=γ_0 under fit="delta": D_t = γ D_{t-1}(I − β k kᵀ) + β x kᵀ with a learned γ per head. With β = 0 (no
    writes) the output is γ^(t+1) D_0 k_t — the codes do not change, a positive scale leaves the coding dictionary's
    unit columns as they are (to ε). γ gets a gradient; a padded token does not decay the dictionary."""
    mixer = _mixer(chunk=3, decay=0.7)
    x = _tokens(n=7)
    with torch.no_grad():
        mixer.decay_logit.copy_(torch.tensor([0.5, 0.9], dtype=torch.float64).logit())
        mixer.beta_proj.weight.zero_()
        mixer.beta_proj.bias.fill_(-60.0)  # β = 0 to rounding
        h = mixer._groups(x)
        start = mixer._start(h.shape[0], h)  # (G, D, R), unit non-negative columns
        k = torch.nn.functional.normalize(mixer._code(h, start), dim=-1)  # (G, N, R)
        gamma = torch.tensor([0.5, 0.9], dtype=torch.float64).repeat(2)[:, None]  # (G, 1)
        scale = gamma ** torch.arange(1, 8, dtype=torch.float64)  # (G, N)
        expected = scale[..., None] * (k @ start.mT)  # (G, N, D)
        # to ε: the coding dictionary's columns are divided by ‖·‖ + ε, and γ^j shrinks ‖·‖
        torch.testing.assert_close(mixer._delta(h, mixer._beta(x), None), expected, rtol=1e-4, atol=1e-7)
    assert "decay=0.7" in repr(mixer)
    mixer = _mixer(decay=0.7)
    mixer(x)[:, 6].sum().backward()
    assert mixer.decay_logit.grad is not None and (mixer.decay_logit.grad != 0).all()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    torch.testing.assert_close(mixer(x, mask)[0, :5], mixer(x[:1, :5])[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("keys", [None, 3])
def test_a_separate_query_reads_what_the_writes_stored(keys):
    """query=True: a token writes with its own code and reads with its query's (a C -> S·keys projection coded
    against the same dictionary's key rows): by hand, D_t q_t with q_t the unit code of the query; the twin forms
    agree; the query projection learns."""
    mixer = _mixer(chunk=3, query=True, keys=keys, decay=0.9)
    x = _tokens(n=8)
    assert "query" in repr(mixer) and mixer.query_proj.out_features == 2 * (keys or 8)
    torch.testing.assert_close(stepped(mixer, x), mixer(x), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        h, beta = mixer._groups(x), mixer._beta(x)
        q = mixer._groups(x, mixer.query_proj)  # (G, N, keys)
        d = mixer._start(h.shape[0], h)
        gamma = torch.sigmoid(mixer.decay_logit).repeat(2)[:, None, None]  # (G, 1, 1)
        coding, outs = d, []
        for t in range(8):
            if t % 3 == 0:
                coding = d.clamp_min(0) / (d.clamp_min(0).norm(dim=1, keepdim=True) + mixer.eps)
            k = torch.nn.functional.normalize(mixer._code(h[:, t : t + 1], coding)[:, 0], dim=-1)  # (G, R)
            qt = torch.nn.functional.normalize(mixer._code(q[:, t : t + 1], coding)[:, 0], dim=-1)
            d = gamma * d
            d = d + beta[:, t, None, None] * (h[:, t] - (d @ k[..., None])[..., 0])[..., None] * k[:, None, :]
            outs.append((d @ qt[..., None])[..., 0])
        torch.testing.assert_close(mixer(x), mixer._ungroup(torch.stack(outs, 1), 2), rtol=1e-10, atol=1e-10)
    mixer(x)[:, 7].sum().backward()
    assert mixer.query_proj.weight.grad.abs().sum() > 0
