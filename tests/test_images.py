"""Image files shared by the tasks: high bit depths are scaled, not clipped (issue 25: 16-bit PNGs were near-white)."""

import numpy as np
import pytest
from PIL import Image

from hamburger.data.images import load_image


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768], [65535, 1000, 50000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8
    assert image[..., 0].tolist() == [[0, 1, 128], [255, 4, 195]]  # round(v * 255 / 65535); convert("RGB") gave 255s
    assert (image[..., 0] == image[..., 2]).all()
    eight = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    assert load_image(tmp_path / "eight.png")[..., 1].tolist() == [[0, 128, 255]]


def test_float_and_out_of_range_images_are_refused_naming_the_file(tmp_path):
    Image.fromarray(np.ones((2, 2), dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=r"cannot read image .*float.tiff: floating-point pixels"):
        load_image(tmp_path / "float.tiff")
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tiff")
    with pytest.raises(ValueError, match=r"wide.tiff.*outside 0..65535"):
        load_image(tmp_path / "wide.tiff")
