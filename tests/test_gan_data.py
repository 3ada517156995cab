"""GAN datasets: the embedded silhouettes and digits, and fixtures in the exact image-folder and CIFAR-10 layouts."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hamburger.gan.data import build_gan_dataset


def test_silhouettes_split_is_disjoint_deduplicated_and_deterministic():
    train = build_gan_dataset("silhouettes", None, "train")
    ref = build_gan_dataset("silhouettes", None, "reference")
    assert train.classes[0] == "bear" and train.num_classes == 10 and train.channels == 1
    assert len(train) == 7095 and len(ref) == 2365  # 9,460 representatives of near-duplicate groups, 25% held out
    assert np.bincount(ref.labels).min() >= 200
    x, y = train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() < x.max() <= 1
    a = {train.image(i).tobytes() for i in range(len(train))}
    b = {ref.image(i).tobytes() for i in range(len(ref))}
    assert not a & b  # no image on both sides
    zebra = ref.labels == 9
    assert set(np.unique(np.stack([ref.image(i) for i in np.nonzero(zebra)[0][:20]]))) <= {0, 255}  # masks
    again = build_gan_dataset("silhouettes", None, "reference")
    assert np.array_equal(again.labels, ref.labels) and np.array_equal(again.image(5), ref.image(5))
    assert np.abs(ref.image(0)[:2]).sum() == 0  # padded 28² -> 32²


def test_digits_split_and_resize():
    train = build_gan_dataset("digits", None, "train", size=16)
    ref = build_gan_dataset("digits", None, "reference", size=16)
    assert len(train) + len(ref) == 1797 and len(ref) == 450
    assert train[0][0].shape == (1, 16, 16) and train.classes == tuple("0123456789")
    images, labels = ref.tensors()
    assert images.shape == (450, 1, 16, 16) and labels.dtype == torch.int64


def _write_folder(root, sizes=((40, 30), (20, 50), (33, 33), (64, 48))):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        for i, (h, w) in enumerate(sizes):
            arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            arr[..., 0] = 200 if c else 10  # a class cue in the red channel
            ext = "png" if i % 2 else "jpg"
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / name / f"img{i}.{ext}")
    return root


def test_image_folder_layout(tmp_path):
    root = _write_folder(tmp_path / "pets")
    train = build_gan_dataset("folder", root, "train", size=16)
    ref = build_gan_dataset("folder", root, "reference", size=16)
    assert train.classes == ("cat", "dog") and len(train) == 6 and len(ref) == 2 and sorted(ref.labels) == [0, 1]
    x, y = train[0]
    assert x.shape == (3, 16, 16)
    reds = {int(lab): float(train[i][0][0].mean()) for i, lab in enumerate(train.labels)}
    assert reds[0] < -0.8 and reds[1] > 0.4  # labels follow the sorted folder names


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="image folder .* not found; expected layout"):
        build_gan_dataset("folder", tmp_path / "missing", "train")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        build_gan_dataset("folder", tmp_path / "flat", "train")
    root = _write_folder(tmp_path / "pets")
    (root / "emu").mkdir()
    with pytest.raises(ValueError, match="class folder .*emu holds no images"):
        build_gan_dataset("folder", root, "train")
    (root / "emu" / "broken.png").write_bytes(b"\x89PNG not really")
    data = build_gan_dataset("folder", root, "train")  # a class of one image keeps it for training
    broken = [i for i in range(len(data)) if data.images[i].name == "broken.png"]
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        data[broken[0]]
    with pytest.raises(ValueError, match="split must be one of"):
        build_gan_dataset("folder", root, "val")
    with pytest.raises(ValueError, match="unknown GAN dataset 'mnist'"):
        build_gan_dataset("mnist", root, "train")


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"fixture", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, labels


def _write_cifar(root):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    batches = [_cifar_batch(base / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test = _cifar_batch(base / "test_batch", 5, 9)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return batches, test


def test_cifar10_python_layout(tmp_path):
    batches, (test_data, test_labels) = _write_cifar(tmp_path)
    train = build_gan_dataset("cifar10", tmp_path, "train")
    ref = build_gan_dataset("cifar10", tmp_path / "cifar-10-batches-py", "reference")  # the folder itself works
    assert len(train) == 20 and len(ref) == 5 and train.classes[9] == "truck" and train.channels == 3
    assert list(ref.labels) == test_labels
    img = ref.image(2)  # channel planes of 1024 values each, row-major
    assert img.shape == (32, 32, 3)
    assert img[1, 3, 0] == test_data[2, 1 * 32 + 3] and img[1, 3, 2] == test_data[2, 2048 + 35]
    assert build_gan_dataset("cifar10", tmp_path, "train", size=16)[0][0].shape == (3, 16, 16)


def test_cifar10_missing_and_corrupt_files_are_named(tmp_path):
    _write_cifar(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    (base / "test_batch").unlink()
    with pytest.raises(ValueError, match="CIFAR-10 file .*test_batch not found; expected layout"):
        build_gan_dataset("cifar10", tmp_path, "reference")
    (base / "data_batch_3").write_bytes((base / "data_batch_3").read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read CIFAR-10 batch .*data_batch_3"):
        build_gan_dataset("cifar10", tmp_path, "train")
    with pytest.raises(ValueError, match="CIFAR-10 folder .* not found"):
        build_gan_dataset("cifar10", tmp_path / "nope", "train")
    evil = base / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": Image.new("L", (2, 2))}))  # not a primitive: refused, not executed
    with pytest.raises(ValueError, match="cannot read CIFAR-10 batch .*data_batch_1.*refusing to unpickle"):
        build_gan_dataset("cifar10", tmp_path, "train")


def test_a_corrupt_image_in_a_folder_stops_gan_train_before_it_starts(tmp_path):
    """Issue 25: a corrupt image stopped a run at the step that first drew it (a short run exited 0)."""
    from hamburger.cli import main

    root = _write_folder(tmp_path / "pets")
    (root / "dog" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = [
        "gan",
        "train",
        "--dataset",
        "folder",
        "--data-root",
        str(root),
        "--ch",
        "4",
        "--batch-size",
        "2",
        "--iters",
        "1",
        "--no-tensorboard",
        "--quiet",
    ]
    with pytest.raises(SystemExit, match=r"(?s)the data check found 1 bad sample.*cannot read image .*dog/img1.png"):
        main([*args, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "checkpoint.json").exists()
