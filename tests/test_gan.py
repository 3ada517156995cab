"""HamGAN models: every registered G/D and arm, σ-gated identity at init, spectral norm, cBN and projection, EMA."""

import pytest
import torch
from torch import nn

from hamburger.gan.blocks import ARMS, ConditionalBatchNorm2d, GANHamburger, SAGANAttention, create_gan_context, sn_conv
from hamburger.gan.models import GANPair, create_gan, list_gans, standing_statistics


def _pair(name="gan32", arm="ham_nmf", **kw):
    torch.manual_seed(0)
    kw = {"ch": 8, "num_classes": 3, "image_channels": 1, **kw}
    return create_gan(name, arm=arm, **kw)


def test_registry():
    assert list_gans() == ["gan128", "gan32", "gan64"]
    with pytest.raises(ValueError, match="unknown GAN 'gan16'"):
        create_gan("gan16")
    with pytest.raises(ValueError, match="arm must be one of"):
        create_gan("gan32", arm="transformer")
    with pytest.raises(ValueError, match="context_resolution must be"):
        create_gan("gan32", context_resolution=32)


@pytest.mark.parametrize("name", ["gan32", "gan64", "gan128"])
@pytest.mark.parametrize("arm", ARMS)
def test_every_gan_and_arm_trains_every_parameter(name, arm):
    pair = _pair(name, arm, image_channels=3, ch=16)  # R = d/8 >= 2: with one basis VQ's codes are constant
    res = int(name[3:])
    for m in pair.modules():  # σ = 0 stops the context block's gradient: move it off zero for this check
        if hasattr(m, "sigma"):
            nn.init.constant_(m.sigma, 0.5)
    z, y = torch.randn(2, 128), torch.tensor([0, 2])
    x = pair.generator(z, y)
    assert x.shape == (2, 3, res, res) and x.abs().max() <= 1
    logits = pair.discriminator(x, y)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    logits.sum().backward()
    missing = [n for n, p in pair.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    has_context = arm != "none"
    assert (pair.generator.context is not None) == has_context == (pair.discriminator.context is not None)


def test_context_slot_resolution_and_widths():
    seen = {}
    pair = _pair("gan128", "sagan", ch=8, image_channels=3)
    pair.generator.context.register_forward_hook(lambda m, i, o: seen.update(g=o.shape))  # returns None
    pair.discriminator.context.register_forward_hook(lambda m, i, o: seen.update(d=o.shape))
    y = torch.tensor([1])
    pair.discriminator(pair.generator(torch.randn(1, 128), y), y)
    assert seen == {"g": (1, 32, 32, 32), "d": (1, 16, 32, 32)}  # 4ch at 32² in G, 2ch at 32² in D (the paper)
    ham = _pair("gan32", "ham_nmf", ch=16)
    assert ham.generator.context.ham.channels == 32 and ham.generator.context.ham.rank == 4  # d = 2ch, R = d/8
    assert ham.discriminator.context.ham.channels == 16 and ham.discriminator.context.ham.rank == 2


@pytest.mark.parametrize("arm", [a for a in ARMS if a != "none"])
def test_context_block_is_the_identity_at_init(arm):
    torch.manual_seed(0)
    block = create_gan_context(arm, 16, discriminator=False, num_classes=3)
    x = torch.randn(2, 16, 8, 8)
    y = torch.tensor([0, 1])
    assert block.sigma.item() == 0.0
    torch.testing.assert_close(block(x, y), x, rtol=0, atol=0)
    with torch.no_grad():
        block.sigma.fill_(1.0)
    assert (block(x, y) - x).abs().max() > 1e-3  # and not once σ moves


def test_discriminator_blocks_carry_no_batchnorm():
    for arm in ARMS:
        d = _pair(arm=arm).discriminator
        assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in d.modules()), arm
    g = _pair(arm="ham_nmf").generator
    assert isinstance(g.context.norm, ConditionalBatchNorm2d)


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    conv = sn_conv(6, 10, 3)
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(50)
    conv.train()
    for _ in range(30):  # the power iteration converges over forwards
        conv(torch.randn(1, 6, 5, 5))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(10, -1), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-3
    keys = set(conv.state_dict())
    assert {"parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"} <= keys


def test_conditional_batchnorm_and_projection_use_the_label():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(4, num_classes=3)
    assert torch.equal(cbn.gamma.weight, torch.ones(3, 4)) and torch.equal(cbn.beta.weight, torch.zeros(3, 4))
    with torch.no_grad():
        cbn.gamma.weight[2] = 3.0
        cbn.beta.weight[2] = 1.0
    x = torch.randn(4, 4, 5, 5)
    plain = cbn(x, torch.tensor([0, 0, 0, 0]))
    torch.testing.assert_close(cbn(x, torch.tensor([2, 2, 2, 2])), plain * 3 + 1)
    pair = _pair()
    x = torch.randn(2, 1, 32, 32)
    a = pair.discriminator(x, torch.tensor([0, 0]))
    b = pair.discriminator(x, torch.tensor([1, 1]))
    assert (a - b).abs().min() > 1e-6  # the projection term differs per class
    g0 = pair.generator(torch.zeros(1, 128), torch.tensor([0]))
    with torch.no_grad():
        pair.generator.blocks[0].bn1.beta.weight[1] += 1.0
    g1 = pair.generator(torch.zeros(1, 128), torch.tensor([1]))
    assert (g0 - g1).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs labels"):
        pair.generator(torch.zeros(1, 128))
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(1,\)"):
        pair.discriminator(x[:1], torch.tensor([0.0]))


def test_unconditional_gan_ignores_labels_and_has_no_embedding():
    pair = _pair(num_classes=None)
    assert pair.discriminator.embed is None
    x = pair.generator(torch.randn(2, 128))
    assert pair.discriminator(x).shape == (2,)


def test_bad_inputs_name_the_expected_shape():
    pair = _pair()
    with pytest.raises(ValueError, match=r"expects z of shape \(B, 128\)"):
        pair.generator(torch.randn(2, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expects images \(B, 1, 32, 32\)"):
        pair.discriminator(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mode must be"):
        pair(torch.randn(1, 128), torch.tensor([0]), mode="train")
    with pytest.raises(ValueError, match="channels >= 8"):
        SAGANAttention(4)
    with pytest.raises(ValueError, match="ham must be one of"):
        GANHamburger(8, ham="svd")


def test_ema_tracks_the_generator_and_survives_a_state_dict_round_trip():
    pair = _pair(ema=True)
    ema = pair.generator_ema
    assert all(not p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in pair.generator.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.parameters()]
    pair.update_ema(0.9)  # warm-up: the first update keeps min(0.9, 1/10) of the average
    for b, e, p in zip(before, ema.parameters(), pair.generator.parameters()):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * p)
    for e, b in zip(ema.buffers(), pair.generator.buffers()):
        assert torch.equal(e, b)
    assert int(pair.ema_updates) == 1
    pair.ema_updates.fill_(1000)  # after the warm-up the decay is the one asked for
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in pair.generator.parameters():
            p.add_(1.0)
    pair.update_ema(0.9)
    for b, e, p in zip(before, ema.parameters(), pair.generator.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    assert pair.sampler() is ema
    state = pair.state_dict()
    assert any(k.startswith("generator_ema.") and k.endswith("parametrizations.weight.original") for k in state)
    assert any(k.startswith("generator_ema.") and k.endswith("_u") for k in state)
    other = _pair(ema=True)
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="without ema=True"):
        _pair().update_ema(0.9)


def test_gan_pair_forward_modes_match_the_networks():
    pair = _pair().eval()
    z, y = torch.randn(2, 128), torch.tensor([0, 1])
    x = pair(z, y, mode="generate")
    torch.testing.assert_close(pair(x, y, mode="discriminate"), pair.discriminator(x, y))
    torch.testing.assert_close(pair(z, y, mode="generate_and_discriminate"), pair.discriminator(x, y))
    assert isinstance(pair, GANPair)


def test_standing_statistics_average_the_generators_own_batches():
    pair = _pair()
    gen = pair.generator
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    standing = standing_statistics(gen, batches=3, batch_size=6, seed=5)
    assert standing is not gen and not standing.training
    for k, v in gen.state_dict().items():  # the trained generator is untouched
        assert torch.equal(v, before[k]), k
    # by hand: the first block's first BN sees the same inputs again; its running mean is their mean
    bn = standing.blocks[0].bn1.norm
    seen = []
    hook = bn.register_forward_hook(lambda m, inputs, output: seen.append(inputs[0].detach()))
    g = torch.Generator().manual_seed(5)
    standing.eval()
    bn.train()
    with torch.no_grad():
        for i in range(3):
            z = torch.randn(6, gen.z_dim, generator=g)
            standing(z, (torch.arange(6) + 6 * i) % 3)
    hook.remove()
    x = torch.cat(seen)  # (18, C, H, W)
    mean, var = x.mean((0, 2, 3)), torch.stack([s.var((0, 2, 3)) for s in seen]).mean(0)
    again = standing_statistics(gen, batches=3, batch_size=6, seed=5)
    torch.testing.assert_close(again.blocks[0].bn1.norm.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again.blocks[0].bn1.norm.running_var, var, rtol=1e-4, atol=1e-5)
    assert int(again.blocks[0].bn1.norm.num_batches_tracked) == 3
    assert not torch.allclose(again.blocks[0].bn1.norm.running_mean, before["blocks.0.bn1.norm.running_mean"])
    sampler = pair.sampler(standing_batches=2)
    assert sampler is not gen and not sampler.training
    with pytest.raises(ValueError, match="batches >= 1"):
        standing_statistics(gen, batches=0)
