import pytest
import torch
from torch import nn

import hamburger as hb
from hamburger.bench.ham import saved_bytes as _saved_bytes


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
@pytest.mark.parametrize("version", ["v1", "v2", "v2+"])
@pytest.mark.parametrize("shape", [(2, 16, 9), (2, 16, 5, 7), (1, 16, 3, 4, 5)])
def test_block_shapes_and_residual(ham, version, shape):
    block = hb.Hamburger(16, ham=ham, version=version, rank=4, ham_channels=8)
    x = torch.randn(*shape)
    y = block(x)
    assert y.shape == x.shape and (y >= 0).all()  # ReLU(x + ·)
    if version == "v2+":  # the ham branch starts switched off: the block is ReLU(x)
        torch.testing.assert_close(y, torch.relu(x))


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_every_parameter_gets_a_gradient_buffers_none(ham, norm):
    block = hb.Hamburger(16, ham=ham, rank=4, norm_layer=norm)
    block(torch.randn(2, 16, 6, 6)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, b in block.named_buffers():
        assert not b.requires_grad, name


def test_v1_structure_and_init():
    block = hb.Hamburger(8, ham="nmf", ham_channels=6)
    assert block.lower_bread.bias is not None and block.upper_bread.bias is None
    assert isinstance(block.norm, nn.BatchNorm1d)
    assert torch.all(block.norm.weight == 1) and torch.all(block.norm.bias == 0)
    assert torch.all(block.lower_bread.bias == 0)
    # He-normal, fan-out: std = sqrt(2 / out_channels) for a 1x1 conv
    big = hb.Hamburger(256, ham_channels=512)
    assert abs(big.lower_bread.weight.std().item() - (2 / 512) ** 0.5) < 0.003
    assert isinstance(hb.Hamburger(8, norm_layer="group").norm, nn.GroupNorm)
    v2 = hb.Hamburger(8, version="v2")
    assert not hasattr(v2, "norm") and isinstance(v2.cheese.norm, nn.BatchNorm1d)


def test_state_dict_keys_stable_and_save_load(tmp_path):
    block = hb.Hamburger(8, ham="vq", rank=3, init="online")
    keys = list(block.state_dict())
    block(torch.randn(2, 8, 5, 5))
    assert list(block.state_dict()) == keys
    torch.save(block.state_dict(), tmp_path / "b.pt")
    other = hb.Hamburger(8, ham="vq", rank=3, init="online", seed=5)
    other.load_state_dict(torch.load(tmp_path / "b.pt"))
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(other.eval()(x), block.eval()(x))


def test_same_block_serves_1d_2d_3d():
    block = hb.Hamburger(8, rank=3).eval()
    x = torch.randn(2, 8, 4, 6)
    torch.testing.assert_close(block(x), block(x.reshape(2, 8, 24)).reshape_as(x))
    torch.testing.assert_close(block(x), block(x.reshape(2, 8, 2, 2, 6)).reshape_as(x))


def test_convert_official_and_mmseg_2d_checkpoints():
    # official Enjoy-Hamburger V1 (NMF): lower_bread = Sequential(Conv2d, ReLU), upper_bread = Sequential(Conv2d, BN)
    official = {
        "lower_bread.0.weight": torch.randn(6, 8, 1, 1),
        "lower_bread.0.bias": torch.randn(6),
        "upper_bread.0.weight": torch.randn(8, 6, 1, 1),
        "upper_bread.1.weight": torch.randn(8),
        "upper_bread.1.bias": torch.randn(8),
        "upper_bread.1.running_mean": torch.randn(8),
        "upper_bread.1.running_var": torch.rand(8) + 0.5,
        "upper_bread.1.num_batches_tracked": torch.tensor(3),
    }
    block = hb.Hamburger(8, ham_channels=6, rank=2)
    block.load_state_dict(hb.convert_2d_checkpoint(official))
    torch.testing.assert_close(block.lower_bread.weight[..., 0], official["lower_bread.0.weight"][..., 0, 0])
    torch.testing.assert_close(block.norm.running_var, official["upper_bread.1.running_var"])
    # the converted 1D block computes what a 2D-conv block with those weights computes
    block.eval()
    x = torch.randn(1, 8, 5, 5)
    h = torch.relu(nn.functional.conv2d(x, official["lower_bread.0.weight"], official["lower_bread.0.bias"]))
    h = block.ham(h)
    h = nn.functional.conv2d(h, official["upper_bread.0.weight"])
    bn = (h - official["upper_bread.1.running_mean"].view(1, -1, 1, 1)) / (
        official["upper_bread.1.running_var"].view(1, -1, 1, 1) + 1e-5
    ).sqrt()
    h = bn * official["upper_bread.1.weight"].view(1, -1, 1, 1) + official["upper_bread.1.bias"].view(1, -1, 1, 1)
    torch.testing.assert_close(block(x), torch.relu(x + h), rtol=1e-5, atol=1e-5)
    # mmseg LightHamHead names under decode_head.hamburger.
    mm = {
        "decode_head.hamburger.ham_in.conv.weight": torch.randn(6, 8, 1, 1),
        "decode_head.hamburger.ham_in.conv.bias": torch.randn(6),
        "decode_head.hamburger.ham_out.conv.weight": torch.randn(8, 6, 1, 1),
        "decode_head.hamburger.ham_out.gn.weight": torch.randn(8),
        "decode_head.hamburger.ham_out.gn.bias": torch.randn(8),
        "decode_head.conv_seg.weight": torch.randn(3, 8, 1, 1),
    }
    gn = hb.Hamburger(8, ham_channels=6, rank=2, norm_layer="group")
    gn.load_state_dict(hb.convert_2d_checkpoint(mm, prefix="decode_head.hamburger."))
    with pytest.raises(ValueError, match="expected a 1x1 conv weight"):
        hb.convert_2d_checkpoint({"lower_bread.0.weight": torch.randn(6, 8, 3, 3)})


def test_one_step_training_memory_does_not_grow_with_steps():
    x = torch.randn(1, 32, 16, 16)
    saved = {}
    for grad in ("one-step", "bptt"):
        for k in (1, 6, 30):
            block = hb.Hamburger(32, rank=8, train_steps=k, grad=grad)
            saved[grad, k] = _saved_bytes(lambda: block(x).sum())  # noqa: B023
    assert saved["one-step", 1] == saved["one-step", 6] == saved["one-step", 30]
    assert saved["bptt", 1] < saved["bptt", 6] < saved["bptt", 30]
    assert saved["bptt", 30] > 5 * saved["one-step", 30]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"ham": "pca"}, "ham must be one of"),
        ({"version": "v3"}, "version must be one of"),
        ({"norm_layer": "layer"}, "norm_layer must be"),
        ({"channels_last": True}, "channels_last is an option of the hams only"),
        ({"inv_t": 10.0}, "NMF takes no 'inv_t'"),
    ],
)
def test_block_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        hb.Hamburger(8, **kw)


def test_block_input_errors():
    block = hb.Hamburger(8)
    with pytest.raises(ValueError, match="built for 8 channels, input has 4"):
        block(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="at least one spatial dim"):
        block(torch.randn(1, 8))
    with pytest.raises(ValueError, match="non-finite"):
        block(torch.full((1, 8, 3, 3), float("inf")))


@pytest.mark.parametrize("ham", ["nmf", "vq", "cd"])
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("groups", [1, 2])
def test_folded_conv_equals_conv_after_reconstruction(ham, version, groups):
    # the block computes W·(DC) as (W·D)·C; compare with the plain order: reconstruct, then convolve — in float64,
    # since the two orders round differently and VQ's sharp softmax amplifies float32's rounding in the gradient
    torch.manual_seed(0)
    block = hb.Hamburger(16, ham=ham, version=version, rank=3, groups=groups, ham_channels=8).double()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64, requires_grad=True)

    def plain(x):
        z = x.reshape(2, 16, -1)
        h = block.lower_bread(z)
        h = torch.relu(h) if ham == "nmf" else h
        h = block.ham(h)
        if version == "v1":
            h = block.norm(block.upper_bread(h))
        else:
            h = block.upper_bread(torch.relu(block.cheese.norm(block.cheese.conv(h))))
        return torch.relu(z + h).reshape_as(x)

    for training in (False, True):
        block.train(training)
        block.ham.generator = torch.Generator().manual_seed(3)
        ours = block(x)
        block.ham.generator = torch.Generator().manual_seed(3)
        ref = plain(x)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
        w = torch.randn_like(ours)
        g1 = torch.autograd.grad((ours * w).sum(), [x, block.lower_bread.weight, block.upper_bread.weight])
        g2 = torch.autograd.grad((ref * w).sum(), [x, block.lower_bread.weight, block.upper_bread.weight])
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("version", ["v1", "v2", "v2+"])
@pytest.mark.parametrize("breads", ["lower", "upper", "none"])
def test_bread_ablation_drops_exactly_the_named_convs(version, breads):
    torch.manual_seed(0)
    full = hb.Hamburger(16, ham="nmf", rank=4, version=version)
    cut = hb.Hamburger(16, ham="nmf", rank=4, version=version, breads=breads)
    assert isinstance(cut.lower_bread, torch.nn.Identity) == (breads in ("upper", "none"))
    assert (cut.upper_bread is None) == (breads in ("lower", "none"))
    conv = 16 * 16
    dropped = conv * (breads in ("upper", "none")) + 16 * (breads in ("upper", "none")) + conv * (breads != "upper")
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in cut.parameters()) == dropped
    x = torch.rand(2, 16, 5, 5) - 0.5
    before = x.clone()
    cut(x).sum().backward()
    assert torch.equal(x, before)  # the NMF ReLU never runs in place on the caller's tensor
    if breads == "none" and version == "v1":  # no breads: ReLU(x + norm(ham(ReLU(x))))
        cut.eval()
        z = x.reshape(2, 16, 25)
        want = torch.relu(z + cut.norm(cut.ham(torch.relu(z)))).reshape(x.shape)
        torch.testing.assert_close(cut(x), want)
    with pytest.raises(ValueError, match="needs ham_channels == channels"):
        hb.Hamburger(16, ham_channels=8, breads=breads)
    with pytest.raises(ValueError, match="breads must be one of"):
        hb.Hamburger(16, breads="top")
