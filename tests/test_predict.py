"""predict's reading of image files: depth, transparency and polarity give
the same 28x28 input as the plain 8-bit grayscale file of the same drawing."""

import numpy as np
import pytest
from PIL import Image

from mnist_jax import predict
from mnist_jax.errors import UserError


def _ink(size=40) -> np.ndarray:
  """A drawn stroke (an "L" with soft edges): uint8 [size, size], 0 = none."""
  ink = np.zeros((size, size), np.float32)
  ink[8:32, 12:18] = 255
  ink[26:32, 12:30] = 255
  soft = sum(np.roll(ink, shift, axis) for shift in (-1, 0, 1) for axis in (0, 1)) / 6
  return soft.round().astype(np.uint8)


def _save(tmp_path, name, image: Image.Image):
  path = tmp_path / name
  image.save(path)
  return path


@pytest.fixture
def reference(tmp_path) -> np.ndarray:
  """What predict makes of the drawing as 8-bit grayscale, light on dark."""
  path = _save(tmp_path, "reference.png", Image.fromarray(_ink(), "L"))
  return predict.to_mnist_format(path, "auto", "digit")


def _rgba(rgb, alpha) -> Image.Image:
  return Image.fromarray(np.dstack([*rgb, alpha]).astype(np.uint8), "RGBA")


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, reference):
  ink = _ink()
  path = _save(tmp_path, "deep.png", Image.fromarray(ink.astype(np.uint16) * 257))
  with Image.open(path) as image:
    assert image.mode == "I;16"  # Really 16 bits on disk.
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"),
                                reference)


@pytest.mark.parametrize("make", [
    # Dark strokes on a transparent sheet (a drawing app's export): paper is white.
    lambda ink: _rgba([np.zeros_like(ink)] * 3, ink),
    # Light strokes on a transparent sheet whose hidden colour is black or
    # white: paper is black.
    lambda ink: _rgba([np.full_like(ink, 255)] * 3, ink),
    lambda ink: _rgba([np.where(ink > 0, 255, 0)] * 3, ink),
    lambda ink: Image.fromarray(np.dstack([np.full_like(ink, 255), ink]), "LA"),
], ids=["dark_on_transparent", "light_on_transparent_white",
        "light_on_transparent_black", "light_on_transparent_LA"])
def test_strokes_on_a_transparent_sheet_read_as_the_drawing(tmp_path, reference, make):
  path = _save(tmp_path, "drawn.png", make(_ink()))
  got = predict.to_mnist_format(path, "auto", "digit")
  np.testing.assert_allclose(got, reference, atol=1)


def test_a_palette_image_with_a_transparent_colour(tmp_path):
  binary = np.where(_ink() > 127, 255, 0).astype(np.uint8)
  expected = predict.to_mnist_format(
      _save(tmp_path, "binary.png", Image.fromarray(binary, "L")), "auto", "digit")
  # Index 0 (black) is transparent, index 1 is white ink.
  image = Image.fromarray((binary > 0).astype(np.uint8), "P")
  image.putpalette([0, 0, 0, 255, 255, 255])
  path = tmp_path / "palette.png"
  image.save(path, transparency=0)
  with Image.open(path) as reread:
    assert reread.mode == "P" and reread.info["transparency"] == 0
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"),
                                expected)


def test_transparent_margins_of_an_opaque_scan_take_the_papers_shade(tmp_path):
  paper = 255 - _ink()  # Dark ink on white paper.
  opaque = predict.to_mnist_format(
      _save(tmp_path, "scan.png", Image.fromarray(paper, "L")), "auto", "digit")
  alpha = np.full_like(paper, 255)
  alpha[:3], alpha[-3:], alpha[:, :3], alpha[:, -3:] = 0, 0, 0, 0
  rgb = np.where(alpha > 0, paper, 0)  # Hidden black behind the margins.
  path = _save(tmp_path, "cropped.png", _rgba([rgb] * 3, alpha))
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"), opaque)


def test_a_fully_transparent_image_is_blank(tmp_path):
  path = _save(tmp_path, "empty.png", _rgba([np.full((20, 20), 255)] * 3,
                                            np.zeros((20, 20))))
  with pytest.raises(UserError, match="is blank"):
    predict.to_mnist_format(path, "auto", "digit")
