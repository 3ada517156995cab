import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

import hamburger as hb
from hamburger.context import attention as attention_module

NAMES = hb.list_contexts()


def test_registry_lists_every_family():
    expected = {"nonlocal", "nonlocal_naive", "linear", "danet", "ccnet", "ema", "a2net", "gcnet"}
    assert expected | {"ham_nmf", "ham_vq", "ham_cd"} == set(NAMES)
    with pytest.raises(ValueError, match="unknown context 'transformer'; available: a2net"):
        hb.create_context("transformer", 16)
    assert hb.create_context("ham_vq", 16, rank=4).ham.rank == 4


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 16, 5, 7), (2, 16, 8, 8), (2, 16, 1, 9)])
def test_shapes_and_residual_at_odd_sizes(name, shape):
    m = hb.create_context(name, 16, **({"rank": 4} if name.startswith("ham") else {}))
    x = torch.randn(*shape)
    for training in (True, False):
        m.train(training)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_learns(name):
    # several modules start with a zero gate (γ = 0, a zero conv): after one SGD step every parameter has a gradient
    torch.manual_seed(0)
    m = hb.create_context(name, 16, **({"rank": 4} if name.startswith("ham") else {}))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(2, 16, 6, 5)
    target = torch.randn(2, 16, 6, 5)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(m(x), target).backward()
        opt.step()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    for bname, b in m.named_buffers():
        assert not b.requires_grad, bname


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channels_is_a_clear_error(name):
    m = hb.create_context(name, 16, **({"rank": 4} if name.startswith("ham") else {}))
    with pytest.raises(ValueError, match="16 channels, input has 8"):
        m(torch.randn(1, 8, 4, 4))


def _explicit_attention(m, x, scale):
    z = x.reshape(x.shape[0], x.shape[1], -1)
    q, k, v = (torch.einsum("oc,bcn->bno", c.weight[..., 0], z) + c.bias for c in (m.query, m.key, m.value))
    attn = torch.softmax(q @ k.mT * scale, dim=-1)
    return attn @ v


def test_nonlocal_equals_explicit_softmax_qkt_v():
    torch.manual_seed(0)
    sdpa = hb.create_context("nonlocal", 8).eval()
    naive = hb.create_context("nonlocal_naive", 8).eval()
    naive.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    sdpa.double(), naive.double()
    y = _explicit_attention(sdpa, x, 4**-0.5)  # (B, N, C/2)
    z = x.reshape(2, 8, -1)
    expected = z + sdpa.norm(sdpa.out.weight[..., 0] @ y.mT)
    torch.testing.assert_close(sdpa(x), expected.reshape_as(x))
    torch.testing.assert_close(naive(x), expected.reshape_as(x))


def test_nonlocal_runs_on_the_fused_kernel(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.is_contiguous() and k.is_contiguous() and v.is_contiguous(), torch._fused_sdp_choice(q, k, v)))
        return real(q, k, v, **kw)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    m = hb.create_context("nonlocal", 16).eval()
    with torch.nn.attention.sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the fused kernel cannot run
        m(torch.randn(2, 16, 9, 7))
    assert seen == [(True, SDPBackend.FLASH_ATTENTION.value)]


def test_linear_attention_equals_explicit_formula():
    torch.manual_seed(0)
    m = hb.create_context("linear", 8).eval().double()
    x = torch.randn(2, 8, 4, 3, dtype=torch.float64)
    z = x.reshape(2, 8, -1)
    q, k, v = (torch.einsum("oc,bcn->bno", c.weight[..., 0], z) + c.bias for c in (m.query, m.key, m.value))
    q, k = F.elu(q) + 1, F.elu(k) + 1
    sim = q @ k.mT  # (B, N, N): the kernelised attention, formed explicitly
    y = (sim / (sim.sum(-1, keepdim=True) + 1e-6)) @ v
    expected = z + m.norm(m.out.weight[..., 0] @ y.mT)
    torch.testing.assert_close(m(x), expected.reshape_as(x))


def test_ccnet_attends_only_to_row_and_column():
    torch.manual_seed(0)
    m = hb.create_context("ccnet", 16, recurrence=1).eval()
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(1, 16, 7, 6)
    x2 = x.clone()
    x2[0, :, 2, 3] += 1.0
    changed = (m(x2) - m(x)).abs().amax(dim=1)[0] > 1e-6  # (H, W)
    expected = torch.zeros(7, 6, dtype=torch.bool)
    expected[2, :] = True
    expected[:, 3] = True
    assert torch.equal(changed, expected)
    # two passes reach every pixel
    m2 = hb.create_context("ccnet", 16, recurrence=2).eval()
    m2.load_state_dict(m.state_dict())
    assert ((m2(x2) - m2(x)).abs().amax(dim=1) > 1e-6).all()


def test_ccnet_softmax_counts_self_once():
    m = hb.create_context("ccnet", 8, recurrence=1).eval()
    with torch.no_grad():
        m.gamma.fill_(1.0)
        for c in (m.query, m.key):  # zero energies: uniform attention over the H + W - 1 distinct pixels
            c.weight.zero_()
            c.bias.zero_()
    x = torch.randn(1, 8, 4, 5)
    v = m.value(x)
    out = m(x) - x
    i, j = 1, 2
    members = torch.cat([v[0, :, :, j], v[0, :, i, :]], dim=1)  # column (incl. self) + row (incl. self)
    expected = (members.sum(1) - v[0, :, i, j]) / (4 + 5 - 1)
    torch.testing.assert_close(out[0, :, i, j], expected)


def test_danet_starts_as_identity_and_channel_attention_is_explicit():
    m = hb.create_context("danet", 16).eval()
    x = torch.randn(2, 16, 4, 5)
    torch.testing.assert_close(m(x), x)
    with torch.no_grad():
        m.gamma_channel.fill_(1.0)
    z = x.reshape(2, 16, -1)
    e = z @ z.mT
    a = torch.softmax(e.max(-1, keepdim=True).values - e, dim=-1)
    torch.testing.assert_close(m(x), (z + a @ z).reshape_as(x), rtol=1e-5, atol=1e-5)


def test_ema_moving_average_only_in_training_and_deterministic_eval():
    m = hb.create_context("ema", 16, bases=4)
    mu0 = m.mu.clone()
    x = torch.randn(2, 16, 5, 5)
    m.eval()
    y = m(x)
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)
    assert torch.equal(m.mu, mu0)
    m.train()
    m(x)
    assert not torch.equal(m.mu, mu0)
    torch.testing.assert_close(m.mu.norm(dim=1), torch.ones(1, 4))


def test_a2net_double_attention_is_explicit():
    m = hb.create_context("a2net", 16).eval().double()
    x = torch.randn(1, 16, 3, 4, dtype=torch.float64)
    z = x.reshape(1, 16, -1)
    a, b, v = (c(z) for c in (m.features, m.gather, m.distribute))
    descriptors = torch.einsum("bmn,bkn->bmk", a, torch.softmax(b, -1))  # m descriptors, one per gather map
    out = torch.einsum("bmk,bkn->bmn", descriptors, torch.softmax(v, 1))
    torch.testing.assert_close(m(x), (z + m.out(out)).reshape_as(x))


def test_gcnet_starts_as_identity_and_context_is_attention_pooled():
    m = hb.create_context("gcnet", 16).eval()
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(m(x), x)
    with torch.no_grad():
        m.up.weight.fill_(0.01)
    out = m(x) - x
    # query-independent: the same vector is added at every position
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))
