"""What a recipe needs: Adam's betas and epsilon, PyTorch's OneCycleLR step
for step, PyTorch's initialisation, and input statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tolerances
from flax import nnx

from mnist_jax import config as config_lib
from mnist_jax import models, optim, steps
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError
from tests.conftest import toy_config


def torch_onecycle_lrs(total_steps, max_lr, pct_start=0.3, div_factor=25.0,
                       final_div_factor=1e4):
  """PyTorch 2.x OneCycleLR.get_lr (two phases, cos), transcribed in float64:
  the rate of each optimizer step k, after k calls of scheduler.step()."""
  initial_lr = max_lr / div_factor
  min_lr = initial_lr / final_div_factor
  phases = [(float(pct_start * total_steps) - 1, initial_lr, max_lr),
            (total_steps - 1, max_lr, min_lr)]
  cos = lambda start, end, pct: end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
  lrs = []
  for step in range(total_steps):
    start_step = 0.0
    for i, (end_step, start_lr, end_lr) in enumerate(phases):
      if step <= end_step or i == len(phases) - 1:
        lrs.append(cos(start_lr, end_lr, (step - start_step) / (end_step - start_step)))
        break
      start_step = end_step
  return np.array(lrs)


@pytest.mark.parametrize("total_steps,pct_start,div,final_div", [
    (235, 0.3, 25.0, 1e4),   # The speedrun: one epoch of MNIST at batch 256.
    (100, 0.25, 10.0, 100.0),
    (7, 0.5, 25.0, 1e4),
])
def test_onecycle_matches_pytorch_formula_step_for_step(total_steps, pct_start, div,
                                                        final_div):
  # Catches optax.cosine_onecycle_schedule (peaks one step later) and div
  # factors that are ignored.
  schedule = optim.onecycle_schedule(total_steps, 0.01, pct_start, div, final_div)
  ours = np.asarray(jax.vmap(schedule)(jnp.arange(total_steps)), np.float64)
  # float32 against float64 (tolerances.onecycle). The rates of neighbouring
  # steps differ by far more.
  np.testing.assert_allclose(ours, torch_onecycle_lrs(total_steps, 0.01, pct_start,
                                                      div, final_div),
                             rtol=0, atol=tolerances.onecycle(0.01))


@pytest.mark.torch  # The benchmark extra: CI's second environment runs it.
def test_onecycle_matches_pytorch_itself():
  import torch  # pylint: disable=g-import-not-at-top
  total = 235
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.Adam([param], lr=0.01)
  sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=total,
                                              cycle_momentum=False)
  torch_lrs = []
  for _ in range(total):
    torch_lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    sched.step()
  config = toy_config("unused", lr_schedule="onecycle", learning_rate=0.01,
                      num_epochs=1)
  schedule = optim.schedule(config, steps_per_epoch=total)
  ours = np.asarray(jax.vmap(schedule)(jnp.arange(total)), np.float64)
  # float32 against PyTorch's float64 (tolerances.onecycle).
  np.testing.assert_allclose(ours, torch_lrs, rtol=0, atol=tolerances.onecycle(0.01))


def adam_reference(grads, lr, b1, b2, eps):
  """Adam's updates for a sequence of gradients, by hand (float64)."""
  m = v = 0.0
  updates = []
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    updates.append(-lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps))
  return np.array(updates)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_takes_the_configs_betas_and_eps(name):
  # Catches b1/b2/eps ignored (optax's defaults 0.9, 0.999, 1e-8 used).
  config = toy_config("unused", optimizer=name, lr_schedule="constant",
                      learning_rate=0.1, adam_b1=0.7, adam_b2=0.9, adam_eps=1e-3)
  tx = optim.create(config, steps_per_epoch=10)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  grads_TN = np.array([[0.5, -0.01, 2.0], [0.1, 0.03, -1.0], [-0.2, 0.0, 0.5]])
  ours = []
  for g in grads_TN:
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    ours.append(np.asarray(updates["w"]))
  # float32 against float64: some 10 roundings a step (the moments, their
  # corrections, the root, eps, the ratio, lr), each relative to terms whose
  # sum |m_hat| / sqrt(v_hat) stays under about 1 (tolerances.adam_step_bound):
  # at most lr x 30 eps after 3 steps. Optax's default betas and eps would
  # be off by 1e-3 to 1e-1.
  np.testing.assert_allclose(np.array(ours), adam_reference(grads_TN, 0.1, 0.7, 0.9, 1e-3),
                             rtol=0, atol=0.1 * tolerances.float32_relative(3 * 10))


def _layers(module):
  return [(path, node) for path, node in nnx.iter_graph(module)
          if isinstance(node, (nnx.Conv, nnx.Linear))]


@pytest.mark.parametrize("name", ["speedrun", "cnn", "mlp", "bn_cnn"])
def test_torch_init_draws_uniform_weights_and_biases_within_fan_in_bound(name):
  # Catches the flax default left in place (normal weights, zero biases), a
  # bound from the wrong fan (fan_out) and one key shared by every layer.
  module = models.create(name, 10, nnx.Rngs(params=jax.random.key(0)), init="torch")
  seen = []
  for path, layer in _layers(module):
    kernel = np.asarray(layer.kernel[...])
    # bn_cnn's convolutions have no bias (batch norm's follows them).
    bias = None if layer.bias is None else np.asarray(layer.bias[...])
    bound = 1 / math.sqrt(np.prod(kernel.shape[:-1]))
    for values in (kernel, bias):
      if values is None:
        continue
      assert np.abs(values).max() <= bound, path
      if values.size >= 256:
        # Uniform on [-b, b]: |x| has mean b/2 and std b/sqrt(12); x^2 has
        # mean b^2/3 and std sqrt(4/45) b^2. Normal draws of std b (flax's
        # default) or a bound from fan-out are many standard errors away.
        n = values.size
        assert np.abs(values).mean() == pytest.approx(
            bound / 2, abs=tolerances.sample_mean(n, bound / math.sqrt(12))), path
        assert np.mean(values ** 2) == pytest.approx(
            bound ** 2 / 3, abs=tolerances.sample_mean(n, math.sqrt(4 / 45) * bound ** 2)), path
    assert bias is None or np.abs(bias).max() > 0.1 * bound, path  # Not zeros.
    seen.append(kernel.ravel()[:8])
  assert len({tuple(np.round(s, 6)) for s in seen}) == len(seen)


def test_flax_init_keeps_lecun_normal_and_zero_biases():
  module = models.create("speedrun", 10, nnx.Rngs(params=jax.random.key(0)))
  for path, layer in _layers(module):
    kernel = np.asarray(layer.kernel[...])
    assert not np.asarray(layer.bias[...]).any(), path
    if kernel.size >= 1000:
      # Truncated normal at 2 std, rescaled so its variance is 1/fan_in: x^2
      # has mean 1/fan_in and std at most sqrt(2)/fan_in (a normal's).
      fan_in = np.prod(kernel.shape[:-1])
      assert np.mean(kernel ** 2) == pytest.approx(1 / fan_in, abs=tolerances.sample_mean(
          kernel.size, math.sqrt(2) / fan_in)), path
      assert np.abs(kernel).max() > 1.5 / math.sqrt(np.prod(kernel.shape[:-1]))


def test_init_depends_on_the_seed_only():
  make = lambda seed: models.create("speedrun", 10, nnx.Rngs(params=jax.random.key(seed)),
                                    init="torch")
  a, b, c = (np.asarray(m.conv1.bias[...]) for m in (make(0), make(0), make(1)))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_pixel_statistics_normalise_inputs():
  images_BHWC = jnp.array([[[0, 255], [51, 102]]], jnp.uint8)[..., None]
  x = np.asarray(models.normalize(images_BHWC, 0.1307, 0.3081))
  expected = (np.array([[0, 255], [51, 102]]) / 255 - 0.1307) / 0.3081
  # float32: 1/255, its product and the mean (carried 3-fold by the
  # difference 0.2 - 0.1307 at 51), the difference, 1/std and its product:
  # 11 u, under 6 eps.
  np.testing.assert_allclose(x[0, ..., 0], expected, rtol=tolerances.float32_relative(6))
  # The defaults leave the [0, 1] scaling exactly as it was.
  np.testing.assert_array_equal(
      np.asarray(models.normalize(images_BHWC))[0, ..., 0],
      np.array([[0, 255], [51, 102]], np.float32) * np.float32(1 / 255))


def test_the_step_uses_the_configs_pixel_statistics(synthetic_data):
  # Catches a train or eval step that ignores pixel_mean / pixel_std.
  from mnist_jax import data as data_lib
  ds = data_lib.load("toy", str(synthetic_data))
  logits = {}
  for mean in (0.0, 0.5):
    config = toy_config(synthetic_data, pixel_mean=mean, pixel_std=0.25)
    built = state_lib.build(config, ds.num_classes, 8)
    logits[mean] = np.asarray(steps.eval_logits(built.graphs, built.recipe, built.state,
                                                jnp.asarray(ds.test_images[:4])))
    module = nnx.merge(built.graphs.eval, built.state.params, built.state.rest)
    by_hand = module(models.normalize(jnp.asarray(ds.test_images[:4]), mean, 0.25))
    # Compiled, and op by op: two programs (tolerances.logits).
    tolerances.assert_within(logits[mean], by_hand,
                             tolerances.logits(by_hand, built.state.params))
  # Inputs shifted by 0.5 / 0.25 = 2: logits apart by their own size.
  assert not np.allclose(logits[0.0], logits[0.5])


@pytest.mark.parametrize("field,value,message", [
    ("init", "kaiming", "unknown init 'kaiming'"),
    ("pixel_std", 0.0, "pixel_std must be positive"),
    ("adam_b1", 1.0, r"adam_b1 must be in \[0, 1\), got 1.0"),
    ("adam_b2", 1.0, r"adam_b2 must be in \[0, 1\), got 1.0"),
    ("adam_eps", 0.0, "adam_eps must be positive"),
    ("onecycle_pct_start", 1.0, "onecycle_pct_start must be in"),
    ("onecycle_div_factor", -1.0, "onecycle_div_factor must be positive"),
    ("onecycle_final_div_factor", 0.0, "onecycle_final_div_factor must be positive"),
])
def test_bad_recipe_fields_are_one_line_errors(field, value, message):
  config = toy_config("unused", **{field: value})
  with pytest.raises(UserError, match=message) as error:
    config_lib.validate(config)
  assert "\n" not in str(error.value)
