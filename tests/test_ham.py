import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import hamburger as hb
import hamburger.functional as HF

HAMS = {"nmf": hb.NMF, "vq": hb.VQ, "cd": hb.CD}


def _input(name, *shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) if name == "nmf" else torch.randn(*shape, generator=g)


@pytest.mark.parametrize("name", list(HAMS))
@pytest.mark.parametrize("shape", [(2, 8, 11), (1, 8, 5, 7), (3, 8, 3, 4, 5), (2, 8, 1, 1)])
def test_any_spatial_rank_keeps_shape(name, shape):
    ham = HAMS[name](8, rank=3)
    x = _input(name, *shape)
    for mode in (True, False):
        ham.train(mode)
        y = ham(x)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", list(HAMS))
def test_module_equals_functional(name):
    ham = HAMS[name](12, rank=4, groups=3, eval_steps=5).eval()
    x = _input(name, 2, 12, 6, 5)
    fn = getattr(HF, name)
    xs = x.reshape(2 * 3, 4, 30)  # (B*S, D, N): contiguous groups of D = C/S
    kw = {} if name == "nmf" else {"inv_t": 100.0}
    expected = fn(xs, ham.eval_bases.repeat(2, 1, 1), 5, **kw).recon.reshape_as(x)
    torch.testing.assert_close(ham(x), expected)


@pytest.mark.parametrize("name", list(HAMS))
def test_groups_are_decomposed_separately(name):
    ham = HAMS[name](8, rank=2, groups=2).eval()
    x = _input(name, 1, 8, 5, 5)
    y = ham(x)
    x2 = x.clone()
    x2[:, 4:] = _input(name, 1, 4, 5, 5, seed=7)  # change only the second group
    torch.testing.assert_close(ham(x2)[:, :4], y[:, :4])


@pytest.mark.parametrize("name", list(HAMS))
def test_channels_last_and_channel_variant(name):
    ham = HAMS[name](6, rank=2).eval()
    tokens = _input(name, 2, 10, 6)  # (B, N, C)
    ham_cl = HAMS[name](6, rank=2, channels_last=True).eval()
    torch.testing.assert_close(ham_cl(tokens), ham(tokens.mT.contiguous()).mT)
    chan = HAMS[name](6, rank=2, spatial=False).eval()
    x = _input(name, 2, 6, 4, 5)
    fn = getattr(HF, name)
    gen = torch.Generator().manual_seed(0)
    start = F.normalize((torch.rand if name == "nmf" else torch.randn)((1, 20, 2), generator=gen), dim=1)
    expected = fn(x.reshape(2, 6, 20).mT, start.repeat(2, 1, 1), 7).recon.mT.reshape_as(x)
    torch.testing.assert_close(chan(x), expected)


@pytest.mark.parametrize("name", list(HAMS))
def test_eval_is_deterministic_across_calls_and_batches(name):
    ham = HAMS[name](8, rank=3, seed=3).eval()
    x = _input(name, 4, 8, 6, 6)
    y = ham(x)
    torch.testing.assert_close(ham(x), y, rtol=0, atol=0)
    torch.testing.assert_close(ham(x[2:3]), y[2:3], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ham(torch.cat([x[3:], x[:1]])), torch.cat([y[3:], y[:1]]), rtol=1e-6, atol=1e-6)
    other = HAMS[name](8, rank=3, seed=4).eval()
    assert not torch.allclose(other(x), y)


def test_eval_is_deterministic_in_a_fresh_process():
    code = (
        "import torch, hamburger as hb;"
        "torch.manual_seed(123);"
        "h = hb.NMF(8, rank=3).eval();"
        "x = torch.arange(8 * 25, dtype=torch.float32).reshape(1, 8, 5, 5) % 7;"
        "print(repr(h(x).sum().item()))"
    )
    torch.manual_seed(999)  # the global RNG must not matter
    x = torch.arange(8 * 25, dtype=torch.float32).reshape(1, 8, 5, 5) % 7
    here = hb.NMF(8, rank=3).eval()(x).sum().item()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) == here


def test_training_draws_fresh_bases_and_generator_controls_them():
    ham = hb.NMF(8, rank=3).train()
    x = _input("nmf", 2, 8, 5, 5)
    assert not torch.equal(ham(x), ham(x))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = hb.NMF(8, rank=3, generator=g1).train()(x)
    b = hb.NMF(8, rank=3, generator=g2).train()(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_online_bases_update_rule():
    ham = hb.VQ(6, rank=2, groups=2, init="online", eta=0.9, train_steps=2)
    before = ham.bases.clone()
    x = _input("vq", 3, 6, 4, 4)
    ham.eval()
    ham(x)
    assert torch.equal(ham.bases, before), "eval must not update the online bases"
    ham.train()
    ham(x)
    final = HF.vq(x.reshape(6, 3, 16), before.repeat(3, 1, 1), 2).bases  # (B*S, D, R)
    mean = final.reshape(3, 2, 3, 2).mean(0)
    expected = F.normalize(before + 0.9 * (mean - before), dim=1)
    torch.testing.assert_close(ham.bases, expected)
    assert "bases" in ham.state_dict()


def test_state_dict_stable_and_round_trip(tmp_path):
    ham = hb.CD(8, rank=3, init="online")
    keys = list(ham.state_dict())
    ham(_input("cd", 2, 8, 4, 4))
    assert list(ham.state_dict()) == keys
    torch.save(ham.state_dict(), tmp_path / "ham.pt")
    other = hb.CD(8, rank=3, init="online", seed=9)
    other.load_state_dict(torch.load(tmp_path / "ham.pt"))
    x = _input("cd", 2, 8, 4, 4)
    torch.testing.assert_close(other.eval()(x), ham.eval()(x))
    assert list(hb.NMF(8).state_dict()) == []  # the fixed eval start is derived from the seed, not saved


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_module_matches_float32_at_scale_100(dtype):
    ham = hb.NMF(16, rank=4).eval()
    x = _input("nmf", 2, 16, 8, 8) * 100
    ref = ham(x)
    low = ham.to(dtype)(x.to(dtype))
    assert low.dtype == dtype and torch.isfinite(low).all()
    assert ham.eval_bases.dtype == torch.float32
    tol = 2e-3 if dtype == torch.float16 else 1.6e-2
    torch.testing.assert_close(low.float(), ref, rtol=tol, atol=tol * 100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = hb.NMF(16, rank=4).eval()(x)
    torch.testing.assert_close(auto.float(), ref, rtol=1.6e-2, atol=1.6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: hb.NMF(10, groups=3), "divisible by groups"),
        (lambda: hb.NMF(8, rank=0), "rank must be an integer >= 1"),
        (lambda: hb.VQ(8, train_steps=-1), "train_steps"),
        (lambda: hb.CD(8, eval_steps=-2), "eval_steps"),
        (lambda: hb.NMF(8, grad="full"), "grad must be one of"),
        (lambda: hb.NMF(8, init="kmeans"), "init must be one of"),
        (lambda: hb.VQ(8, init="online", spatial=False), "needs spatial=True"),
    ],
)
def test_constructor_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_nmf_rejects_inv_t_and_beta():
    with pytest.raises(TypeError, match="NMF takes no 'inv_t'"):
        hb.NMF(8, inv_t=100.0)
    with pytest.raises(TypeError, match="NMF takes no 'beta'"):
        hb.NMF(8, beta=0.1)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.rand(2, 8), "at least one spatial dim"),
        (torch.rand(2, 6, 4, 4), "built for 8 channels, input has 6"),
        (torch.ones(2, 8, 4, dtype=torch.long), "floating-point"),
        (torch.full((1, 8, 3), float("nan")), "non-finite"),
        (-torch.rand(1, 8, 3), "non-negative input"),
    ],
)
def test_input_errors(x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        hb.NMF(8, rank=2)(x)


def test_input_checks_can_be_turned_off():
    y = hb.VQ(8, rank=2, check_input=False)(torch.full((1, 8, 3), float("nan")))
    assert y.shape == (1, 8, 3)


@pytest.mark.parametrize("cls", [hb.NMF, hb.VQ, hb.CD])
def test_fixed_init_trains_from_the_eval_start(cls):
    """init="fixed": training solves from the same seeded bases as evaluation (no draw, nothing updated)."""
    torch.manual_seed(0)
    x = torch.rand(2, 12, 5, 6)
    ham = cls(12, rank=3, init="fixed", train_steps=4, eval_steps=4)
    before = torch.get_rng_state()
    train_out = ham.train()(x)
    assert torch.equal(torch.get_rng_state(), before)  # no random draw in training
    torch.testing.assert_close(train_out, ham.eval()(x), rtol=0, atol=0)
    random = cls(12, rank=3, train_steps=4, eval_steps=4).train()
    assert not torch.allclose(random(x), train_out)
