"""On-device augmentation: what each transformation does, and its refusals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import toy_config
import tolerances
from mnist_jax import augment, steps, training
from mnist_jax.errors import UserError


def _images(n=64, border=3, seed=0, channels=1):
  """Random uint8 images [n, 28, 28, channels] that are black within
  `border` pixels of the edge."""
  rng = np.random.default_rng(seed)
  images = np.zeros((n, 28, 28, channels), np.uint8)
  images[:, border:-border, border:-border] = rng.integers(
      1, 256, (n, 28 - 2 * border, 28 - 2 * border, channels))
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
  plain = training.train_and_evaluate(toy_config(synthetic_data), tmp_path / "plain")
  shifted = training.train_and_evaluate(
      toy_config(synthetic_data, augment="translate", translate_pixels=1),
      tmp_path / "shifted")
  assert shifted.summary["final_test_accuracy"] > 0.5
  # Same seed, same data order: only the augmentation differs.
  assert plain.summary["final_test_loss"] != shifted.summary["final_test_loss"]


def test_erase_blanks_one_rectangle_in_about_half_of_the_images():
  images = jnp.full((64, 28, 28, 1), 200, jnp.uint8)
  erased = np.asarray(augment.erase(jax.random.key(5), images))
  zero_B = (erased == 0).reshape(64, -1).sum(axis=1)
  assert 16 <= (zero_B > 0).sum() <= 48
  for image, zeros in zip(erased, zero_B):
    if zeros:
      rows, cols, _ = np.nonzero(image == 0)
      # One solid rectangle of 2% to 25% of the image (rounding aside).
      assert zeros == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
      assert 0.01 * 784 <= zeros <= 0.3 * 784


def test_rgb_images_are_augmented_alike_in_every_channel():
  # Catches an augmentation that draws per channel, or moves only one of them.
  gray = _images(n=32, channels=1)
  rgb = jnp.concatenate([gray, gray // 2, gray // 3], axis=-1)
  fn = augment.make(("flip", "translate", "erase"), 2)
  out_gray, out_rgb = fn(jax.random.key(7), gray), fn(jax.random.key(7), rgb)
  assert out_rgb.shape == (32, 28, 28, 3)
  np.testing.assert_array_equal(out_rgb[..., :1], out_gray)
  np.testing.assert_array_equal(out_rgb[..., 1:2], fn(jax.random.key(7), gray // 2))
  views = augment.test_time_views(("flip", "translate"), rgb)
  assert all(v.shape == rgb.shape for v in views)


def test_mixup_and_cutmix_blend_each_image_with_its_partner():
  x_BHWC = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
  # Two products and a sum of non-negative terms, 0.3 and 1 - 0.7 each
  # within u of 0.3: 4 u, 2 eps, relative.
  np.testing.assert_allclose(augment.mixup(0.7, x_BHWC)[0],
                             0.7 * x_BHWC[0] + 0.3 * x_BHWC[-1],
                             rtol=tolerances.float32_relative(2))
  mixed, kept = augment.cutmix(jax.random.key(1), jnp.float32(0.75), x_BHWC)
  # A box of the partner's pixels, copied exactly; `kept`, the rest's share
  # of the area, is a float32 ratio of counts: one rounding.
  from_partner = (mixed[0] == x_BHWC[-1]) & (mixed[0] != x_BHWC[0])
  assert from_partner.mean() == pytest.approx(1 - float(kept),
                                              abs=tolerances.float32_relative(1))
  assert 0.5 < float(kept) < 1
  mix = augment.make_mix(("mixup", "cutmix"), alpha=1.0)
  out, lam = mix(jax.random.key(2), x_BHWC)
  assert out.shape == x_BHWC.shape and 0 <= float(lam) <= 1
  assert augment.make_mix(("flip",), 1.0) is None


def test_test_time_views_and_their_refusals():
  images = _images(n=4)
  views = augment.test_time_views(("flip", "translate"), images)
  assert len(views) == 6
  assert (views[1] == images[:, :, ::-1]).all()
  assert (np.asarray(views[2])[:, 1:] == np.asarray(images)[:, :-1]).all()  # Down 1.
  with pytest.raises(UserError, match="config.tta: 'flip' mirrors images"):
    augment.parse_tta("flip", "mnist")
  with pytest.raises(UserError, match="unknown test-time view 'rotate'"):
    augment.parse_tta("rotate", "fashion_mnist")


def test_mixing_erasing_and_test_time_views_train_and_evaluate(synthetic_data, tmp_path):
  result = training.train_and_evaluate(
      toy_config(synthetic_data, augment="erase,mixup,cutmix", tta="translate",
                 num_epochs=3), tmp_path / "run")
  assert result.summary["final_test_accuracy"] > 0.5
  # The evaluation averages views: it differs from the plain logits.
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 28, 28, 1)), jnp.uint8)
  plain = dataclasses.replace(result.recipe, tta=())
  # (The translated views move the logits by their own size, not a rounding.)
  assert not np.allclose(steps.eval_logits(result.graphs, result.recipe, result.state, images),
                         steps.eval_logits(result.graphs, plain, result.state, images))
