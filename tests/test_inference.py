"""inference.py: batched, padded class probabilities of host-side images."""

import jax
import numpy as np
import pytest
import tolerances

from mnist_jax import inference


class Recorder:
  """A logits function (a fixed linear map of the pixels) that records the
  shapes it is called with: one shape is one compilation."""

  def __init__(self, num_classes=4):
    self.weights = np.random.default_rng(0).normal(size=(28 * 28, num_classes))
    self.shapes = []

  def __call__(self, images_BHWC):
    self.shapes.append(images_BHWC.shape)
    return jax.numpy.asarray(images_BHWC.reshape(len(images_BHWC), -1) / 255.0
                             @ self.weights, np.float32)

  def expected(self, images_NHWC):
    logits = images_NHWC.reshape(len(images_NHWC), -1) / 255.0 @ self.weights
    return np.asarray(jax.nn.softmax(logits, axis=-1))

  def bound(self, images_NHWC):
    """How far batched probabilities may be from `expected`: the float64
    logits of another batch size, rounded to float32, may be an ulp apart
    (eps |z|); then two softmax programs (tolerances.probabilities)."""
    logits = images_NHWC.reshape(len(images_NHWC), -1) / 255.0 @ self.weights
    return tolerances.probabilities(self.expected(images_NHWC), tolerances.float32_relative(1)
                                    * np.abs(logits).max(-1, keepdims=True))


def _images(n):
  return np.random.default_rng(1).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


def test_every_batch_has_one_shape_and_the_padding_is_dropped():
  # Catches: a last batch of its own size (a second compilation), padding
  # rows returned as images, or batches out of order.
  images = _images(7)
  logits_fn = Recorder()
  got = inference.probabilities(logits_fn, images, batch_size=3)
  assert set(logits_fn.shapes) == {(3, 28, 28, 1)} and len(logits_fn.shapes) == 3
  assert got.shape == (7, 4)
  tolerances.assert_within(got, logits_fn.expected(images), logits_fn.bound(images))


def test_fewer_images_than_a_batch_are_one_unpadded_batch():
  logits_fn = Recorder()
  inference.probabilities(logits_fn, _images(2), batch_size=500)
  assert logits_fn.shapes == [(2, 28, 28, 1)]


def test_stream_keeps_each_batch_with_its_key():
  images = _images(5)
  batches = [("a", images[:2]), ("b", images[2:4]), ("c", images[4:])]
  logits_fn = Recorder()
  out = list(inference.stream(logits_fn, iter(batches), batch_size=2))
  assert [key for key, _ in out] == ["a", "b", "c"]
  assert [len(p) for _, p in out] == [2, 2, 1]
  tolerances.assert_within(np.concatenate([p for _, p in out]),
                           logits_fn.expected(images), logits_fn.bound(images))


def test_a_batch_larger_than_batch_size_is_refused():
  with pytest.raises(ValueError, match="a batch of 3 images"):
    list(inference.stream(Recorder(), [(None, _images(3))], batch_size=2))
