import pytest
import torch
import torch.nn.functional as F

import hamburger as hb
from hamburger.seg.heads import LightHamHead
from hamburger.seg.models import convert_lightham_checkpoint, create_model, list_models

VARIANTS = list_models()


def test_registry_has_the_papers_variants_and_one_per_context():
    names = set(VARIANTS)
    assert {"hamnet_r101_d8", "hamnet_r50_d8", "fcn_r50_d8", "lightham_r50", "hamnet_r18_d8", "fcn_r18_d8"} <= names
    for ctx in hb.list_contexts():
        assert f"{ctx}_r50_d8" in names and f"{ctx}_r18_d8" in names
    with pytest.raises(ValueError, match="unknown model 'segformer'"):
        create_model("segformer")


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_at_a_tiny_size(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    x = torch.randn(2, 3, 32, 40)
    target = torch.randint(0, 5, (2, 32, 40))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):  # zero-initialised gates (γ = 0) open after one step
        opt.zero_grad()
        out = model(x)
        assert out["out"].shape == (2, 5, 32, 40)
        loss = F.cross_entropy(out["out"], target)
        if "aux" in out:
            assert out["aux"].shape == (2, 5, 32, 40)
            loss = loss + 0.4 * F.cross_entropy(out["aux"], target)
        loss.backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        y1, y2 = model(x)["out"], model(x)["out"]
    assert torch.equal(y1, y2)


def test_paper_head_structure():
    model = create_model("hamnet_r18_d8", num_classes=21)
    head = model.head
    assert head.squeeze.conv.kernel_size == (3, 3) and head.squeeze.conv.out_channels == 512
    assert isinstance(head.context, hb.Hamburger) and head.context.version == "v2"
    assert head.context.ham.rank == 64 and head.context.ham.train_steps == 6 and head.context.ham.eval_steps == 6
    assert head.align.conv.kernel_size == (3, 3) and head.align.conv.out_channels == 256
    assert head.dropout.p == 0.1 and head.classifier.out_channels == 21
    assert model.aux_head.conv.conv.in_channels == 256  # stage 3 of a ResNet-18
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]  # output stride 8: dilated last stages


def test_fcn_baseline_matches_the_hamburger_parameter_count():
    ham = sum(p.numel() for p in create_model("hamnet_r18_d8").head.parameters())
    fcn = sum(p.numel() for p in create_model("fcn_r18_d8").head.parameters())
    assert abs(fcn - ham) / ham < 0.05, (fcn, ham)


def test_lightham_on_any_timm_backbone_and_checkpoint_conversion():
    model = create_model("lightham_r18", num_classes=7, rank=8)
    out = model(torch.randn(1, 3, 64, 64))
    assert out["out"].shape == (1, 7, 64, 64) and "aux" not in out
    k, c = 7, 512
    mm = {  # a SegNeXt / mmseg LightHamHead checkpoint's head, with exactly its names and shapes
        "decode_head.squeeze.conv.weight": torch.randn(c, 128 + 256 + 512, 1, 1),
        "decode_head.squeeze.gn.weight": torch.randn(c),
        "decode_head.squeeze.gn.bias": torch.randn(c),
        "decode_head.hamburger.ham_in.conv.weight": torch.randn(c, c, 1, 1),
        "decode_head.hamburger.ham_in.conv.bias": torch.randn(c),
        "decode_head.hamburger.ham_out.conv.weight": torch.randn(c, c, 1, 1),
        "decode_head.hamburger.ham_out.gn.weight": torch.randn(c),
        "decode_head.hamburger.ham_out.gn.bias": torch.randn(c),
        "decode_head.align.conv.weight": torch.randn(c, c, 1, 1),
        "decode_head.align.gn.weight": torch.randn(c),
        "decode_head.align.gn.bias": torch.randn(c),
        "decode_head.conv_seg.weight": torch.randn(k, c, 1, 1),
        "decode_head.conv_seg.bias": torch.randn(k),
        "backbone.stem.weight": torch.randn(3),
    }
    converted = convert_lightham_checkpoint({"state_dict": mm})
    model.head.load_state_dict(converted, strict=True)
    torch.testing.assert_close(model.head.hamburger.norm.weight, mm["decode_head.hamburger.ham_out.gn.weight"])
    torch.testing.assert_close(model.head.conv_seg.weight, mm["decode_head.conv_seg.weight"])
    assert isinstance(model.head, LightHamHead)
    other = create_model("lightham_resnet18", num_classes=3, rank=4)  # any timm features backbone by its name
    assert other.eval()(torch.randn(1, 3, 32, 32))["out"].shape == (1, 3, 32, 32)


def test_pretrained_from_a_local_file_and_a_clear_error_offline(tmp_path, monkeypatch):
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("resnet18d", pretrained=False)
    path = tmp_path / "resnet18d.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    model = create_model("hamnet_r18_d8", num_classes=3, pretrained=str(path))
    torch.testing.assert_close(model.backbone.conv1[0].weight, full.conv1[0].weight)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="pass a local file"):
        create_model("hamnet_r18_d8", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match="not found"):
        create_model("hamnet_r18_d8", pretrained=str(tmp_path / "missing.pth"))


def test_model_input_error():
    model = create_model("fcn_r18_d8", num_classes=3)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
