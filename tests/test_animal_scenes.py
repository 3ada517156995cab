import io
import pickle

import numpy as np
import pytest

from hamburger.data import silhouettes
from hamburger.seg import scenes as A
from hamburger.seg.data import build_dataset

# sha256 of generate(seed=0, counts=SMALL): integer and nearest-neighbour operations only, so every machine
# produces these bytes; a change to the generator must bump VERSION and this digest together.
SMALL = {"train": 4, "val": 2, "test": 2}
DIGEST = "9c25f8ad7af296032254c1483b6b334f11ce0a751313523a6ef26afe51167367"


@pytest.fixture(scope="module")
def small():
    return A.generate(seed=0, counts=SMALL)


def test_generation_is_byte_identical(small):
    assert A.digest(small) == DIGEST
    assert A.VERSION == "animal-scenes-v1"


def test_scenes_hold_3_to_5_objects_of_one_class_some_blobs(small):
    from scipy import ndimage

    for split, n in SMALL.items():
        images, masks = small[f"{split}_images"], small[f"{split}_masks"]
        assert images.shape == (n, 128, 128, 3) and images.dtype == np.uint8 and masks.shape == (n, 128, 128)
        for img, mask in zip(images, masks):
            classes = set(np.unique(mask).tolist()) - {0}
            assert len(classes) == 1 and classes <= set(range(1, 11))
            _, parts = ndimage.label(mask > 0)
            assert parts >= 1 and 300 <= (mask > 0).sum() <= 5 * 48 * 48  # 3-5 objects, longest side 30-48
            assert (img[..., 0] == img[..., 1]).all()  # greyscale fills: no colour cue
            # objects are brighter than the background on average, but the fill carries no class information
            assert img[mask > 0, 0].mean() > img[mask == 0, 0].mean()


def test_blob_is_shapeless_and_keeps_the_region():
    sil = np.zeros((40, 20), dtype=bool)
    sil[:, 8:12] = True  # a thin bar
    sil[5:10, :] = True
    b = A.blob(sil)
    assert b.sum() > 0 and abs(b.shape[0] - b.shape[1]) < max(b.shape)  # rounder than the bar


def test_splits_use_disjoint_silhouettes():
    pools = A.split_sources(seed=0)
    keys = {s: {m.tobytes() + bytes(m.shape) for m, _ in pools[s]} for s in pools}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert min(len(v) for v in pools.values()) > 500
    assert {c for _, c in pools["test"]} == set(range(10))


def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        silhouettes.NumpyUnpickler(io.BytesIO(payload)).load()


def test_registered_dataset_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(A, "SPLITS", SMALL)
    ds = build_dataset("animal-scenes", tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.class_names[10] == "zebra"
    image, mask = ds[0]
    assert image.shape == (3, 128, 128) and mask.shape == (128, 128)
    assert (tmp_path / "animal-scenes-v1-seed0.npz").is_file()
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("animal-scenes", tmp_path, "holdout")
