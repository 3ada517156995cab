import numpy as np
import pytest
import torch
from PIL import Image

from hamburger.seg.data import build_dataset
from hamburger.seg.transforms import IGNORE_INDEX, SegTransform
from seg_fixtures import write_ade20k, write_cityscapes, write_folder, write_pascal_context, write_voc


def test_voc_palette_masks_and_sbd_trainaug(tmp_path):
    root = write_voc(tmp_path)
    train = build_dataset("voc", root / "VOCdevkit" / "VOC2012", "train")
    assert len(train) == 6 and train.num_classes == 21 and train.class_names[15] == "person"
    image, mask = train[0]
    assert image.shape == (3, 40, 48) and image.dtype == torch.uint8
    assert set(mask.unique().tolist()) <= {0, 1, 7, 15, IGNORE_INDEX} and (mask[0] == IGNORE_INDEX).all()
    # palette indices are the labels (not the RGB colours)
    raw = np.asarray(Image.open(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000000.png"))
    assert torch.equal(mask, torch.from_numpy(raw.copy()).long())
    aug = build_dataset("voc", root, "trainaug")  # the VOCdevkit parent works too
    assert len(aug) == 8 and "SegmentationClassAug" in str(aug.pairs[-1][1])
    assert len(build_dataset("voc", root, "val")) == 3


def test_pascal_context_59_reduces_zero_label(tmp_path):
    root = write_pascal_context(tmp_path)
    ds = build_dataset("pascal_context", root, "train")
    assert ds.num_classes == 59 and len(ds) == 2
    raw = np.asarray(Image.open(root / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000002.png")).astype(int)
    _, mask = ds[0]
    expected = np.where(raw == 0, 255, raw - 1)
    assert np.array_equal(mask.numpy(), expected) and mask.max() <= 255 and 58 in mask


def test_ade20k_zero_label_is_ignored(tmp_path):
    root = write_ade20k(tmp_path)
    ds = build_dataset("ade20k", root, "train")
    assert len(ds) == 3 and ds.num_classes == 150
    _, mask = ds[1]
    raw = np.asarray(Image.open(root / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png")).astype(int)
    assert np.array_equal(mask.numpy(), np.where(raw == 0, 255, raw - 1))
    assert len(build_dataset("ade20k", root / "ADEChallengeData2016", "val")) == 2


def test_cityscapes_train_ids(tmp_path):
    root = write_cityscapes(tmp_path)
    ds = build_dataset("cityscapes", root, "train")
    assert len(ds) == 4 and ds.num_classes == 19
    assert all(p[1].name.endswith("_gtFine_labelTrainIds.png") for p in ds.pairs)
    image, mask = ds[0]
    assert image.shape == (3, 32, 64) and set(mask.unique().tolist()) <= {0, 5, 18, 255}


def test_folder_dataset(tmp_path):
    root = write_folder(tmp_path)
    ds = build_dataset("folder", root, "train", num_classes=3)
    assert len(ds) == 6 and ds[0][1].max() == 255
    with pytest.raises(ValueError, match="needs num_classes"):
        build_dataset("folder", root, "train")


def test_train_transform_is_the_papers_and_deterministic(tmp_path):
    root = write_folder(tmp_path, h=20, w=24)
    t = SegTransform(train=True, crop_size=32, seed=3)
    ds = build_dataset("folder", root, "train", num_classes=3, transform=t)
    x, y = ds[(2, 0)]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32) and x.dtype == torch.float32
    x2, y2 = ds[(2, 0)]
    assert torch.equal(x, x2) and torch.equal(y, y2)  # same (seed, epoch, index) -> same crop
    x3, _ = ds[(2, 1)]
    assert not torch.equal(x, x3)  # another epoch, another draw
    # a 20x24 image scaled by at most 2 never fills a 48x48 crop: the rest is padding, label 255, image 0
    t_big = SegTransform(train=True, crop_size=48, scale_range=(1.0, 1.0), flip=False)
    image, mask = ds.read(0)
    x, y = t_big(image, mask, 0)
    assert (y[20:] == IGNORE_INDEX).all() and (x[:, 20:] == 0).all() and (y[:, 24:] == IGNORE_INDEX).all()
    # normalisation: ImageNet statistics
    xe, ye = SegTransform(train=False)(image, mask, 0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(xe, (torch.from_numpy(image).permute(2, 0, 1) / 255.0 - mean) / std)
    assert torch.equal(ye, torch.from_numpy(mask))


def test_flip_and_scale_move_image_and_mask_together(tmp_path):
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[:, :8] = 255  # white left half
    mask = np.zeros((16, 16), dtype=np.int64)
    mask[:, :8] = 1
    for index in range(12):
        x, y = SegTransform(train=True, crop_size=16, seed=0)(image, mask, index)
        white = x[0] > 0.5  # normalised white (black is about -2.1)
        valid = y != 255
        disagree = ((white != (y == 1)) & valid).sum(dim=1)  # per row
        assert disagree.max() <= 1  # at most the one-pixel seam where bilinear and nearest resizing differ


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda r: build_dataset("voc", r / "missing", "train"), "expected layout"),
        (lambda r: build_dataset("voc", write_voc(r), "test"), r"split list .*test\.txt not found"),
        (lambda r: build_dataset("ade20k", r, "train"), "ADEChallengeData2016"),
        (lambda r: build_dataset("cityscapes", r, "train"), "leftImg8bit"),
        (lambda r: build_dataset("imagenet", r, "train"), "unknown dataset"),
    ],
)
def test_missing_root_or_split(tmp_path, setup, match):
    with pytest.raises(ValueError, match=match):
        setup(tmp_path)


def test_bad_files_are_named(tmp_path):
    root = write_folder(tmp_path, n=6)
    ds = build_dataset("folder", root, "train", num_classes=3)
    # truncated image
    data = (root / "images" / "sample_0.png").read_bytes()
    (root / "images" / "sample_0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read image .*sample_0\.png"):
        ds[0]
    # size mismatch
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), mode="L").save(root / "masks" / "sample_1.png")
    with pytest.raises(ValueError, match=r"sample_1\.png is 32x32 but its mask .*sample_1\.png is 8x8"):
        ds[1]
    # labels outside the classes and the ignore index
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8), mode="L").save(root / "masks" / "sample_2.png")
    with pytest.raises(ValueError, match=r"sample_2\.png has label values \[7\] outside 0..2"):
        ds[2]
    # missing mask
    (root / "masks" / "sample_3.png").unlink()
    with pytest.raises(ValueError, match=r"cannot read mask .*sample_3\.png"):
        ds[3]
