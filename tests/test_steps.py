"""The pure steps (steps.py), called directly: no run, no files.

Each test computes what a step must give by other means (textbook formulas,
another dtype) and compares.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_split, toy_config
from flax import nnx

from mnist_jax import data as data_lib
from mnist_jax import feed, models, sharding, steps
from mnist_jax import state as state_lib


def _hand_computed_step(config, mix=None):
  """One training step of `config`'s model (SGD, no momentum) on a fixed
  batch, and the same step computed here from the textbook formulas: the
  cross-entropy against (1 - a) one_hot + a / K for label smoothing a, and
  for mixed images lam times the loss on the own label plus 1 - lam times
  the loss on the partner's (example B-1-i).

  Returns ((step's mean loss, hand's), (step's new params, hand's)).
  """
  built = state_lib.build(config, 10, 8)
  recipe, state = built.recipe, built.state
  if mix is not None:
    recipe = dataclasses.replace(recipe, mix=mix)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (16, 28, 28)), jnp.uint8)
  labels = jnp.asarray(rng.permutation(16) % 10, jnp.int32)
  new_state, (loss_sum, _, count) = jax.jit(
      lambda s: steps.train_step(built.graphs, recipe, built.tx, s, images, labels))(state)

  a = config.label_smoothing
  def hand_loss(params):
    x, lam = models.normalize(images), 1.0
    if mix is not None:
      x, lam = mix(None, x)
    log_p = jax.nn.log_softmax(nnx.merge(built.graphs.train, params, state.rest,
                                         copy=True)(x))
    cross_entropy = lambda y: -jnp.sum(
        ((1 - a) * jax.nn.one_hot(y, 10) + a / 10) * log_p, axis=-1)
    return jnp.mean(lam * cross_entropy(labels) + (1 - lam) * cross_entropy(labels[::-1]))

  loss, grads = jax.value_and_grad(hand_loss)(state.params)
  hand_params = jax.tree.map(lambda p, g: p - config.learning_rate * g,
                             state.params, grads)
  return (float(loss_sum / count), float(loss)), (new_state.params, hand_params)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("mix", [None, "mixup", "cutmix"])
def test_the_training_loss_smooths_labels_and_weighs_the_partners_labels(
    smoothing, mix):
  from mnist_jax import augment  # pylint: disable=g-import-not-at-top
  config = toy_config("unused", optimizer="sgd", momentum=0.0, learning_rate=0.5,
                      lr_schedule="constant", width=0.1, label_smoothing=smoothing)
  mixes = {"mixup": lambda key, x: (augment.mixup(jnp.float32(0.3), x), 0.3),
           # A fixed box: the kept fraction of area is the own label's weight.
           "cutmix": lambda key, x: augment.cutmix(jax.random.key(1),
                                                   jnp.float32(0.6), x)}
  (step_loss, hand_loss), (step_params, hand_params) = _hand_computed_step(
      config, mixes.get(mix))
  assert step_loss == pytest.approx(hand_loss, rel=1e-5)
  for got, want in zip(jax.tree.leaves(step_params), jax.tree.leaves(hand_params),
                       strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if smoothing or mix:  # Not the plain step: by the same tolerance, the twin differs.
    plain = toy_config("unused", optimizer="sgd", momentum=0.0, learning_rate=0.5,
                       lr_schedule="constant", width=0.1)
    _, (plain_params, _) = _hand_computed_step(plain)
    assert not all(np.allclose(got, want, rtol=1e-5, atol=1e-6) for got, want in zip(
        jax.tree.leaves(step_params), jax.tree.leaves(plain_params), strict=True))


def test_update_ema_warms_up_then_averages_weights_and_statistics():
  params, rest = {"w": jnp.array([1.0, 2.0])}, {"mean": jnp.array([0.5]),
                                                 "count": jnp.array([7], jnp.uint32)}
  ema = {"count": jnp.int32(0), "params": params, "rest": rest}
  new_params, new_rest = {"w": jnp.array([2.0, 1.0])}, {"mean": jnp.array([1.5]),
                                                         "count": jnp.array([8], jnp.uint32)}
  ema = steps.update_ema(ema, new_params, new_rest, 0.9)
  # The first update's decay is min(0.9, 1/10): mostly the new values.
  np.testing.assert_allclose(ema["params"]["w"], [1.9, 1.1], rtol=1e-6)
  np.testing.assert_allclose(ema["rest"]["mean"], [1.4], rtol=1e-6)
  assert int(ema["rest"]["count"][0]) == 8  # Integers are taken as they are.
  for _ in range(200):  # Later ones use the full decay.
    previous = ema["params"]["w"]
    ema = steps.update_ema(ema, {"w": jnp.array([5.0, 5.0])}, new_rest, 0.9)
  np.testing.assert_allclose(ema["params"]["w"], 0.9 * previous + 0.1 * 5.0, rtol=1e-6)


def matmul_dtypes(stablehlo: str) -> set[str]:
  """The element types of the operands of a program's convolutions and
  matrix products (StableHLO text): where a model spends its arithmetic."""
  return set(re.findall(
      r"stablehlo\.(?:convolution|dot_general).*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x\w+>\)",
      stablehlo))


def test_a_bfloat16_step_computes_in_bf16_and_keeps_float32_state():
  config = toy_config("unused", model="cnn", width=0.25, dtype="bfloat16")
  in_f32 = lambda recipe: dataclasses.replace(recipe, dtype=jnp.float32)
  images_NHW, labels_N = synthetic_split(32, 10, seed=1)
  # A training step: every convolution and matrix product (forward and
  # backward) in bf16; the loss close to float32's but not the same bits.
  built = state_lib.build(config, 10, 8)
  recipe, state = built.recipe, built.state
  images, labels = jnp.asarray(images_NHW), jnp.asarray(labels_N)
  step = lambda r: jax.jit(lambda s: steps.train_step(built.graphs, r, built.tx, s,
                                                      images, labels))
  assert matmul_dtypes(step(recipe).lower(state).as_text()) == {"bf16"}
  assert matmul_dtypes(step(in_f32(recipe)).lower(state).as_text()) == {"f32"}
  (new_state, (loss, _, _)), (_, (loss_f32, _, _)) = (step(recipe)(state),
                                                      step(in_f32(recipe))(state))
  assert float(loss) != float(loss_f32)
  assert float(loss) == pytest.approx(float(loss_f32), rel=1e-3)
  assert {x.dtype for x in jax.tree.leaves(new_state.params)} == {np.dtype("float32")}


def test_the_evaluation_scan_counts_every_test_image_once_and_masks_the_padding():
  # 100 test images in batches of 16: 7 batches, the 12 padded slots masked.
  config = toy_config("unused", num_epochs=1, eval_batch_size=16)
  built = state_lib.build(config, 10, 8)
  images_NHW, labels_N = synthetic_split(100, 10, seed=2)
  dataset = data_lib.Dataset("toy", tuple(map(str, range(10))), images_NHW[:16],
                             labels_N[:16], images_NHW, labels_N)
  mesh = sharding.make_mesh()
  device_data = feed.place_data(dataset, mesh, 16)
  totals, ensembles = steps.make_evaluate(built.graphs, built.recipe, mesh, 16, 7)(
      built.state, device_data)
  assert ensembles is None  # One member.
  assert int(totals.count) == 100
  logits = steps.eval_logits(built.graphs, built.recipe, built.state,
                             jnp.asarray(images_NHW))
  loss_sum, correct, count = steps.loss_and_metrics(logits, jnp.asarray(labels_N))
  assert int(totals.correct) == int(correct) and int(count) == 100
  np.testing.assert_allclose(float(totals.loss), float(loss_sum), rtol=1e-5)
