import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tolerances
from flax import nnx

from mnist_jax import models, registry
from mnist_jax.errors import UserError


def test_cnn_matches_the_flax_example_architecture():
  model = models.create("cnn", 10, nnx.Rngs(0))
  # conv 3x3x1x32 + conv 3x3x32x64 + dense 3136x256 + dense 256x10, with biases.
  assert models.num_params(nnx.state(model, nnx.Param)) == (
      (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3136 * 256 + 256) + (256 * 10 + 10))
  assert model(jnp.zeros((3, 28, 28, 1))).shape == (3, 10)


@pytest.mark.parametrize("name", registry.names("model"))
def test_models_take_the_number_of_classes(name):
  model = models.create(name, 7, nnx.Rngs(0))
  assert model(jnp.zeros((2, 28, 28, 1))).shape == (2, 7)


@pytest.mark.parametrize("name", registry.names("model"))
def test_width_scales_every_hidden_layer(name):
  count = lambda width: models.num_params(
      nnx.state(models.create(name, 10, nnx.Rngs(0), width=width), nnx.Param))
  # Hidden-to-hidden weights grow with the square of the width: more than 2x.
  assert count(2.0) > 2.5 * count(1.0) > 2.5 * 2.5 * count(0.4)
  wide = models.create("speedrun", 10, nnx.Rngs(0), width=1.5)
  assert (wide.conv1.out_features, wide.conv2.out_features,
          wide.dense1.out_features) == (36, 48, 384)


def test_unknown_model():
  # Model names are checked once, with the config (not again in models.create).
  from mnist_jax import config as config_lib
  config = config_lib.defaults()
  config.model = "resnet9000"
  with pytest.raises(UserError, match="unknown model 'resnet9000'; choose one of cnn"):
    config_lib.validate(config)


def test_reshape_pooling_equals_reduce_window_pooling():
  x = jax.random.normal(jax.random.key(0), (2, 28, 28, 3))
  # Means of 4 terms summed in another order (dividing by 4 is exact).
  window_abs_mean = nnx.avg_pool(jnp.abs(x), (2, 2), strides=(2, 2))
  tolerances.assert_within(models.avg_pool_2x2(x), nnx.avg_pool(x, (2, 2), strides=(2, 2)),
                           tolerances.float32_sum(4, window_abs_mean))


def test_normalize_maps_uint8_to_unit_interval():
  x = jnp.array([[[[0], [255]]]], jnp.uint8)
  out = models.normalize(x)
  assert out.dtype == jnp.float32 and out.shape == (1, 1, 2, 1)
  np.testing.assert_array_equal(out[..., 0], [[[0.0, 1.0]]])


def test_a_model_added_as_the_readme_says_trains(synthetic_data, tmp_path, monkeypatch):
  from conftest import toy_config
  from mnist_jax import training

  class Linear(nnx.Module):
    def __init__(self, num_classes, *, rngs):
      self.out = nnx.Linear(28 * 28, num_classes, rngs=rngs)

    def __call__(self, x_BHWC):
      return self.out(x_BHWC.reshape(x_BHWC.shape[0], -1))

  monkeypatch.setitem(registry.entries("model"), "linear", None)  # Forgotten after.
  models.register("linear", classifier="out")(Linear)
  result = training.train_and_evaluate(toy_config(synthetic_data, model="linear"),
                                    tmp_path / "run")
  assert result.summary["model"] == "linear"
  assert result.summary["final_test_accuracy"] > 0.5


def test_reshape_max_pooling_equals_reduce_window_max_pooling():
  x = jax.random.normal(jax.random.key(1), (2, 24, 24, 3))
  np.testing.assert_array_equal(models.max_pool_2x2(x),
                                nnx.max_pool(x, (2, 2), strides=(2, 2)))


def test_speedrun_model_matches_the_recipe():
  model = models.create("speedrun", 10, nnx.Rngs(0))
  assert models.num_params(nnx.state(model, nnx.Param)) == (
      (25 * 24 + 24) + (9 * 24 * 32 + 32) + (800 * 256 + 256) + (256 * 10 + 10))
  assert model(jnp.zeros((3, 28, 28, 1))).shape == (3, 10)


def test_resnet_depth_sets_the_blocks_and_the_stages_shrink_the_image():
  assert len(models.create("resnet", 10, nnx.Rngs(0)).blocks) == 3
  deeper = models.create("resnet", 10, nnx.Rngs(0), depth=16, width=2.0)
  assert len(deeper.blocks) == 6
  assert deeper.out.in_features == 128  # 64 k, k = 2.
  assert deeper(jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


@pytest.mark.parametrize("name", ["bn_cnn", "resnet"])
def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones(
    synthetic_data, tmp_path, name):
  from conftest import toy_config
  from mnist_jax import outputs, steps, training
  # A constant schedule: a 1-epoch run then resumed to 2 trains like a 2-epoch one.
  config = toy_config(synthetic_data, model=name, width=0.5, num_epochs=2,
                      lr_schedule="constant", ema_decay=0.9)
  result = training.train_and_evaluate(config, tmp_path / "full")
  stats = [x for x in jax.tree.leaves(result.state.rest)]
  assert stats and all(np.isfinite(x).all() for x in stats)
  assert any(float(jnp.abs(x).max()) > 0 for x in stats)  # Means moved off 0.
  # Evaluation mode: an image's logits do not depend on the rest of the batch.
  logits = steps.make_logits_fn(result.graphs, result.recipe)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (8, 28, 28, 1)),
                       jnp.uint8)
  # Batch 1 and batch 8 are two programs (tolerances.logits). Catches
  # evaluation on the batch's statistics (the other 7 images move them).
  whole = logits(result.state, images)[:1]
  tolerances.assert_within(logits(result.state, images[:1]), whole,
                           tolerances.logits(whole, result.state.params))
  # The statistics are checkpointed: 1 epoch + resume == 2 epochs.
  training.train_and_evaluate(toy_config(synthetic_data, model=name, width=0.5,
                                      num_epochs=1, lr_schedule="constant",
                                      ema_decay=0.9), tmp_path / "split")
  resumed = training.train_and_evaluate(config, tmp_path / "split")
  learning = lambda run: [(r["train_loss"], r["test_loss"], r["test_accuracy"])
                          for r in outputs.read_metrics(tmp_path / run)]
  assert learning("split") == learning("full")
  # The moving average covers the statistics too, and is checkpointed.
  for a, b in zip(jax.tree.leaves((result.state.rest, result.state.ema)),
                  jax.tree.leaves((resumed.state.rest, resumed.state.ema)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(result.state.ema["rest"]), stats))


@pytest.mark.parametrize("name", registry.names("model"))
def test_dropout_masks_in_training_by_its_key_and_never_in_evaluation(name):
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  make = lambda rate: models.create(name, 10, nnx.Rngs(0), width=0.25, dropout=rate)
  # Same parameters (dropout draws none); in evaluation, the same function.
  plain, dropping = make(0.0), make(0.5)
  plain.eval(), dropping.eval()
  np.testing.assert_array_equal(dropping(x), plain(x))
  # In training, masks that the key decides.
  plain, dropping = make(0.0), make(0.5)
  key = jax.random.key(2)
  train_a, train_b = dropping(x, dropout_key=key), dropping(x, dropout_key=key)
  np.testing.assert_array_equal(train_a, train_b)
  # Other masks drop other units: apart by the units' own size, far beyond
  # allclose's 1e-5 relative (which rounding alone would stay within).
  assert not np.allclose(train_a, dropping(x, dropout_key=jax.random.key(3)))
  assert not np.allclose(train_a, plain(x))
  np.testing.assert_array_equal(plain(x), plain(x, dropout_key=key))


def test_max_pool_gradient_goes_to_each_windows_first_maximum():
  # Catches a gradient that shares ties (reduce-max's own), one that gives
  # every tied input the whole gradient, and a wrong window layout.
  x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
  dy = jax.random.normal(jax.random.key(1), (2, 3, 2, 3))
  plain = lambda v: v.reshape(2, 3, 2, 2, 2, 3).max(axis=(2, 4))
  ours = jax.vjp(models.max_pool_2x2_first, x)[1](dy)[0]
  np.testing.assert_array_equal(np.asarray(models.max_pool_2x2_first(x)),
                                np.asarray(plain(x)))
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(jax.vjp(plain, x)[1](dy)[0]))
  # Ties: a window of equal values sends it all to its top-left input; one
  # whose maximum is on the second row, to the first of those.
  tied = jnp.array([[1., 1., 0., 2.], [1., 1., 2., 2.]])[None, :, :, None]
  grad = jax.vjp(models.max_pool_2x2_first, tied)[1](jnp.array([[[[3.], [5.]]]]))[0]
  np.testing.assert_array_equal(np.asarray(grad)[0, :, :, 0],
                                [[3., 0., 0., 5.], [0., 0., 0., 0.]])


def test_speedrun_pools_before_its_relu_with_the_same_values():
  module = models.create("speedrun", 10, nnx.Rngs(params=jax.random.key(0)))
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  h = models.max_pool_2x2(jax.nn.relu(module.conv1(x)))
  h = models.max_pool_2x2(jax.nn.relu(module.conv2(h)))
  h = jax.nn.relu(module.dense1(h.reshape(4, -1)))
  np.testing.assert_array_equal(np.asarray(module(x)), np.asarray(module.dense2(h)))
