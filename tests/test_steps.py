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
from conftest import small_dataset, toy_config
from flax import nnx
import tolerances

from mnist_jax import feed, models, sharding, steps
from mnist_jax import state as state_lib


def _hand_computed_step(config, mix=None):
  """One training step of `config`'s model (SGD, no momentum) on a fixed
  batch, and the same step computed here from the textbook formulas: the
  cross-entropy against (1 - a) one_hot + a / K for label smoothing a, and
  for mixed images lam times the loss on the own label plus 1 - lam times
  the loss on the partner's (example B-1-i).

  Returns ((step's mean loss, hand's, a bound of their difference),
  (step's new params, hand's, close(params, params) -> bool)).
  """
  built = state_lib.build(config, 10, 8)
  recipe, state = built.recipe, built.state
  if mix is not None:
    recipe = dataclasses.replace(recipe, mix=mix)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (16, 28, 28, 1)), jnp.uint8)
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
  # One step's sums, of up to 16 (a kernel's gradient) plus the chain's
  # terms, may round otherwise in the compiled step: tolerances.float32_steps
  # relative to the step's move, plus the rounding of p - lr g (eps |p|).
  n_terms = tolerances.sums_of(state.params, batch=16)
  def close(new, want) -> bool:
    return all(
        (np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) <= (
            tolerances.float32_steps(1, n_terms, float(np.abs(np.asarray(b) - p).max()))
            + tolerances.float32_relative(1) * np.abs(np.asarray(p)))).all()
        for a, b, p in zip(jax.tree.leaves(new), jax.tree.leaves(want),
                           jax.tree.leaves(state.params), strict=True))
  loss_bound = tolerances.mean_loss(float(loss), 16, state.params, 10)
  return ((float(loss_sum / count), float(loss), loss_bound),
          (new_state.params, hand_params, close))


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
  (step_loss, hand_loss, loss_bound), (step_params, hand_params, close) = (
      _hand_computed_step(config, mixes.get(mix)))
  # Compiled and by hand: two programs (tolerances.mean_loss, and the step's
  # rounding in `close`).
  assert step_loss == pytest.approx(hand_loss, abs=loss_bound)
  assert close(step_params, hand_params)
  if smoothing or mix:  # Not the plain step: by the same tolerance, the twin differs.
    plain = toy_config("unused", optimizer="sgd", momentum=0.0, learning_rate=0.5,
                       lr_schedule="constant", width=0.1)
    _, (plain_params, _, _) = _hand_computed_step(plain)
    assert not close(step_params, plain_params)


def test_update_ema_warms_up_then_averages_weights_and_statistics():
  params, rest = {"w": jnp.array([1.0, 2.0])}, {"mean": jnp.array([0.5]),
                                                 "count": jnp.array([7], jnp.uint32)}
  ema = {"count": jnp.int32(0), "params": params, "rest": rest}
  new_params, new_rest = {"w": jnp.array([2.0, 1.0])}, {"mean": jnp.array([1.5]),
                                                         "count": jnp.array([8], jnp.uint32)}
  ema = steps.update_ema(ema, new_params, new_rest, 0.9)
  # The first update's decay is min(0.9, 1/10): mostly the new values. In
  # float32: d, 1 - d, two products and a positive sum, each within u: 6 u.
  float32_average = tolerances.float32_relative(3)
  np.testing.assert_allclose(ema["params"]["w"], [1.9, 1.1], rtol=float32_average)
  np.testing.assert_allclose(ema["rest"]["mean"], [1.4], rtol=float32_average)
  assert int(ema["rest"]["count"][0]) == 8  # Integers are taken as they are.
  for _ in range(200):  # Later ones use the full decay.
    previous = ema["params"]["w"]
    ema = steps.update_ema(ema, {"w": jnp.array([5.0, 5.0])}, new_rest, 0.9)
  np.testing.assert_allclose(ema["params"]["w"], 0.9 * previous + 0.1 * 5.0,
                             rtol=float32_average)


def matmul_dtypes(stablehlo: str) -> set[str]:
  """The element types of the operands of a program's convolutions and
  matrix products (StableHLO text): where a model spends its arithmetic."""
  return set(re.findall(
      r"stablehlo\.(?:convolution|dot_general).*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x\w+>\)",
      stablehlo))


def test_a_bfloat16_step_computes_in_bf16_and_keeps_float32_state():
  config = toy_config("unused", model="cnn", width=0.25, dtype="bfloat16")
  in_f32 = lambda recipe: dataclasses.replace(recipe, dtype=jnp.float32)
  dataset = small_dataset(32, 1, seed=1)
  # A training step: every convolution and matrix product (forward and
  # backward) in bf16; the loss close to float32's but not the same bits.
  built = state_lib.build(config, 10, 8)
  recipe, state = built.recipe, built.state
  images, labels = jnp.asarray(dataset.train_images), jnp.asarray(dataset.train_labels)
  step = lambda r: jax.jit(lambda s: steps.train_step(built.graphs, r, built.tx, s,
                                                      images, labels))
  assert matmul_dtypes(step(recipe).lower(state).as_text()) == {"bf16"}
  assert matmul_dtypes(step(in_f32(recipe)).lower(state).as_text()) == {"f32"}
  (new_state, (loss, _, _)), (_, (loss_f32, _, _)) = (step(recipe)(state),
                                                      step(in_f32(recipe))(state))
  assert float(loss) != float(loss_f32)
  # At most one bf16 rounding at each of the cnn's ~16 bf16 results along the
  # chain, each relative (as tests/test_train.py's export of bf16).
  bf16_eps = float(jnp.finfo(jnp.bfloat16).eps)
  assert float(loss) == pytest.approx(float(loss_f32), rel=16 * bf16_eps)
  assert {x.dtype for x in jax.tree.leaves(new_state.params)} == {np.dtype("float32")}


def test_the_evaluation_scan_counts_every_test_image_once_and_masks_the_padding():
  # 100 test images in batches of 16: 7 batches, the 12 padded slots masked.
  config = toy_config("unused", num_epochs=1, eval_batch_size=16)
  built = state_lib.build(config, 10, 8)
  dataset = small_dataset(16, 100, seed=2)
  mesh = sharding.make_mesh()
  device_data = feed.place_data(dataset, mesh, 16)
  totals, ensembles = steps.make_evaluate(built.graphs, built.recipe, mesh, 16, 7)(
      built.state, device_data)
  assert ensembles is None  # One member.
  assert int(totals.count) == 100
  logits = steps.eval_logits(built.graphs, built.recipe, built.state,
                             jnp.asarray(dataset.test_images))
  loss_sum, correct, count = steps.loss_and_metrics(logits, jnp.asarray(dataset.test_labels))
  assert int(totals.correct) == int(correct) and int(count) == 100
  # 7 batches of 16 against one of 100: two programs (tolerances.mean_loss).
  assert float(totals.loss) == pytest.approx(float(loss_sum), abs=tolerances.mean_loss(
      float(loss_sum), 100, built.state.params, 10))


def test_the_training_step_takes_its_loss_from_the_registry(synthetic_data):
  # The loss is a registered component (registry kind "loss"): the step
  # resolves the recipe's name. Catches a step that keeps a loss of its own:
  # with a loss that is 0 everywhere the gradient is 0, and SGD (no momentum)
  # leaves every parameter as it was, where cross-entropy moves them.
  from mnist_jax import registry  # pylint: disable=g-import-not-at-top
  assert registry.resolve("loss", "cross_entropy").target is steps.cross_entropy
  registry.register("loss", "zero_for_test")(
      lambda logits_BK, labels_BK: 0.0 * logits_BK.sum(-1))
  config = toy_config(synthetic_data, model="mlp", optimizer="sgd", momentum=0.0)
  built = state_lib.build(config, 10, 8)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1)),
                       jnp.uint8)
  labels = jnp.arange(16, dtype=jnp.int32) % 10
  def step(recipe):
    new, _ = jax.jit(lambda s: steps.train_step(
        built.graphs, recipe, built.tx, s, images, labels))(built.state)
    return [np.asarray(x) for x in jax.tree.leaves(new.params)]
  before = [np.asarray(x) for x in jax.tree.leaves(built.state.params)]
  try:
    zero = step(dataclasses.replace(built.recipe, loss="zero_for_test"))
  finally:
    registry.entries("loss").pop("zero_for_test")
  moved = step(built.recipe)
  assert all((a == b).all() for a, b in zip(zero, before))
  assert any((a != b).any() for a, b in zip(moved, before))
