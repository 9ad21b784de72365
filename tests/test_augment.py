"""On-device augmentation: what each transformation does, and its refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import toy_config
from mnist_jax import augment, train
from mnist_jax.errors import UserError


def _images(n=64, border=3, seed=0):
  """Random uint8 images that are black within `border` pixels of the edge."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, 28, 28), np.uint8)
  images[:, border:-border, border:-border] = rng.integers(
      1, 256, (n, 28 - 2 * border, 28 - 2 * border))
  return jnp.asarray(images)


def test_flip_mirrors_about_half_of_the_images_and_keeps_the_rest():
  images = _images()
  flipped = augment.flip_horizontally(jax.random.key(0), images)
  mirrored = [bool((f == x[:, ::-1]).all()) for f, x in zip(flipped, images)]
  kept = [bool((f == x).all()) for f, x in zip(flipped, images)]
  assert all(m != k for m, k in zip(mirrored, kept))
  assert 16 <= sum(mirrored) <= 48


def test_translate_moves_each_image_within_the_bounds_and_keeps_its_pixels():
  images = _images(border=3)
  shifted = np.asarray(augment.translate(jax.random.key(1), images, max_pixels=2))
  shifts = set()
  for out, image in zip(shifted, np.asarray(images)):
    # The black border is wider than the shift: no pixel falls off the image.
    assert out.sum(dtype=np.int64) == image.sum(dtype=np.int64)
    found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
             if (np.roll(image, (dy, dx), axis=(0, 1)) == out).all()]
    assert len(found) == 1
    shifts.add(found[0])
  assert len(shifts) > 5  # Each example draws its own shift.
  assert (augment.translate(jax.random.key(1), images, 0) == images).all()


def test_the_same_key_gives_the_same_augmentation():
  fn = augment.make(("flip", "translate"), 2)
  images = _images()
  a, b = fn(jax.random.key(3), images), fn(jax.random.key(3), images)
  c = fn(jax.random.key(4), images)
  assert (a == b).all() and not (a == c).all()
  assert augment.make((), 2) is None


def test_flip_is_refused_for_digits_and_unknown_names_are_refused():
  assert augment.parse("flip, translate", "fashion_mnist") == ("flip", "translate")
  assert augment.parse("", "mnist") == ()
  with pytest.raises(UserError, match="'flip' mirrors images.*drop it for mnist"):
    augment.parse("flip", "mnist")
  with pytest.raises(UserError, match="unknown augmentation 'rotate'"):
    augment.parse("rotate", "fashion_mnist")


def test_augmented_training_learns_and_changes_what_the_model_sees(synthetic_data, tmp_path):
  plain = train.train_and_evaluate(toy_config(synthetic_data), tmp_path / "plain")
  shifted = train.train_and_evaluate(
      toy_config(synthetic_data, augment="translate", translate_pixels=1),
      tmp_path / "shifted")
  assert shifted.summary["final_test_accuracy"] > 0.5
  # Same seed, same data order: only the augmentation differs.
  assert plain.summary["final_test_loss"] != shifted.summary["final_test_loss"]
