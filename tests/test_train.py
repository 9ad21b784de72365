import dataclasses
import gc
import json
import logging
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import toy_config
from flax import nnx

import test_steps
import tolerances
from mnist_jax import data, feed, models, outputs, sharding, steps, training
from mnist_jax.errors import UserError

EPOCH_KEYS = {"epoch", "train_loss", "train_accuracy", "test_loss",
              "test_accuracy", "images_per_sec", "epoch_seconds"}
SUMMARY_KEYS = {"dataset", "model", "num_epochs", "final_test_accuracy",
                "best_test_accuracy", "train_seconds", "compile_seconds",
                "backend", "device_count", "jax_version", "config"}


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_learns_and_writes_metrics_and_summary(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, num_epochs=4)
  result = training.train_and_evaluate(config, tmp_path / "run")
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]
  assert all(EPOCH_KEYS <= set(r) for r in records)
  assert records[-1]["train_loss"] < records[0]["train_loss"]
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert SUMMARY_KEYS <= set(summary)
  assert summary == json.loads(json.dumps(result.summary))
  assert summary["final_test_accuracy"] == records[-1]["test_accuracy"] >= 0.95
  assert summary["config"]["dataset"] == "toy"
  assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in records)


def test_evaluation_counts_every_test_image_once(synthetic_data, tmp_path):
  # 100 test images in batches of 16: 7 batches, 12 padded slots masked out.
  config = toy_config(synthetic_data, num_epochs=1, eval_batch_size=16)
  result = training.train_and_evaluate(config, tmp_path / "run")
  ds = data.load("toy", synthetic_data)
  module = nnx.merge(result.graphs.eval, result.state.params,
                     result.state.rest)
  logits = module(models.normalize(jnp.asarray(ds.test_images)))
  expected = float(np.mean(np.argmax(logits, -1) == ds.test_labels))
  # Both the division of the same two counts: exactly equal.
  assert result.summary["final_test_accuracy"] == expected
  mesh = sharding.make_mesh()
  totals, ensembles = steps.make_evaluate(result.graphs, result.recipe, mesh, 16, 7)(
      result.state, feed.place_data(ds, mesh, 16))
  assert ensembles is None  # One member.
  assert int(totals.count) == 100


def test_same_seed_same_numbers_other_seed_other_numbers(synthetic_data, tmp_path):
  runs = [training.train_and_evaluate(toy_config(synthetic_data, seed=seed),
                                   tmp_path / f"run{i}")
          for i, seed in enumerate((3, 3, 4))]
  metrics = [(tmp_path / f"run{i}" / "metrics.jsonl").read_text().splitlines()
             for i in range(3)]
  strip = lambda lines: [{k: v for k, v in json.loads(l).items()
                          if "seconds" not in k and "per_sec" not in k}
                         for l in lines]
  assert strip(metrics[0]) == strip(metrics[1])
  for a, b in zip(_leaves(runs[0].state), _leaves(runs[1].state)):
    np.testing.assert_array_equal(a, b)
  assert strip(metrics[0]) != strip(metrics[2])


@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled", "scanned"])
def test_several_steps_a_call_match_single_steps(synthetic_data, tmp_path,
                                                 monkeypatch, unroll):
  # 256 / 32 = 8 steps: calls of 3, 3 and a remainder of 2. CPU unrolls a
  # call's steps; GPU and TPU scan them, which is forced here on the CPU.
  make_train_chunk = steps.make_train_chunk
  monkeypatch.setattr(steps, "make_train_chunk",
                      lambda *args: make_train_chunk(*args[:5], unroll=unroll))
  single = training.train_and_evaluate(
      toy_config(synthetic_data, model="cnn", steps_per_call=1), tmp_path / "a")
  scanned = training.train_and_evaluate(
      toy_config(synthetic_data, model="cnn", steps_per_call=3), tmp_path / "b")
  assert scanned.summary["steps_per_call"] == 3
  # 3 epochs of 8 Adam steps, each compiled otherwise (a scan or not): their
  # sums, of up to 32 x 28 x 28 terms (a kernel's gradient), may round
  # otherwise (tolerances.float32_steps; a step moves at most about lr).
  # Catches a scan that repeats or skips a batch (a move of about lr).
  params = single.state.params
  bound = tolerances.float32_steps(
      24, tolerances.sums_of(params, batch=32, positions=28 * 28),
      1e-3 * tolerances.adam_step_bound(24))
  for a, b in zip(_leaves(single.state), _leaves(scanned.state)):
    tolerances.assert_within(a, b, bound)


def test_logs_the_dropped_partial_batch(synthetic_data, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  training.train_and_evaluate(toy_config(synthetic_data, batch_size=48,
                                      num_epochs=1), tmp_path / "run")
  # 256 = 5 * 48 + 16.
  assert "5 steps of 48" in caplog.text
  assert "last partial batch (16 images" in caplog.text


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"num_epochs": -1}, "num_epochs must be a positive integer"),
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"lr_schedule": "linear"}, "unknown lr_schedule 'linear'"),
    ({"batch_size": 512}, "exceeds the 256 training images"),
    ({"data_source": "hdf5"}, "unknown data_source 'hdf5'"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"grad_clip_norm": -1.0}, "grad_clip_norm must be 0 .off. or positive"),
    ({"lr_schedule": "step", "lr_step_epochs": "two"}, "expected epochs separated by commas"),
    ({"model": "mlp", "depth": 16}, "model 'mlp' has no depth to set"),
    ({"model": "resnet", "depth": 12}, "a wide ResNet has 6n . 4 layers"),
    ({"augment": "flip", "dataset": "mnist"}, "drop it for mnist"),
    ({"cpu_devices": -2}, "cpu_devices must be 0 .automatic. or a positive"),
    ({"dtype": "float16"}, "config.dtype='float16': choose one of float32, bfloat16"),
    ({"dropout": 1.0}, r"config.dropout must be in \[0, 1\), got 1.0"),
])
def test_bad_config_values_are_user_errors(synthetic_data, tmp_path,
                                           overrides, message):
  with pytest.raises(UserError, match=message):
    training.train_and_evaluate(toy_config(synthetic_data, **overrides),
                             tmp_path / "run")


def test_diverging_loss_stops_the_run(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, optimizer="sgd", learning_rate=1e6,
                      lr_schedule="constant", num_epochs=5)
  with pytest.raises(UserError, match=r"became nan in epoch 1 \(learning rate 1e\+06\)"):
    training.train_and_evaluate(config, tmp_path / "run")
  assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_unwritable_workdir(synthetic_data, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(UserError, match="cannot write to workdir"):
    training.train_and_evaluate(toy_config(synthetic_data), blocker / "run")


def test_onecycle_schedule_rises_then_falls():
  from mnist_jax import optim
  config = toy_config("unused", lr_schedule="onecycle", learning_rate=0.01,
                      num_epochs=2)
  # 100 steps, peak at 0.3 * 100 - 1 = 29, as PyTorch's OneCycleLR.
  schedule = optim.schedule(config, steps_per_epoch=50)
  lrs = [float(schedule(step)) for step in range(100)]
  close = lambda x: pytest.approx(x, abs=tolerances.onecycle(0.01))  # float32.
  assert lrs[0] == close(0.01 / 25)
  assert max(lrs) == close(0.01) and lrs.index(max(lrs)) == 29
  assert lrs[-1] < 0.01 / 1000


def test_step_schedule_drops_at_the_given_epochs():
  from mnist_jax import optim
  config = toy_config("unused", lr_schedule="step", learning_rate=0.1,
                      lr_step_epochs="1,2.5", lr_step_factor=0.1, num_epochs=4)
  schedule = optim.schedule(config, steps_per_epoch=10)
  # float32: 0.1, each factor 0.1 and their products, rounded (5 u < 3 eps).
  assert [float(schedule(s)) for s in (0, 9, 10, 24, 25, 39)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=tolerances.float32_relative(3))


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam",
                                       "adamw", "lion", "muon"])
def test_every_optimizer_learns(synthetic_data, tmp_path, optimizer):
  lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "lion": 3e-4,
        "muon": 0.02}.get(optimizer, 1e-3)
  result = training.train_and_evaluate(
      toy_config(synthetic_data, optimizer=optimizer, learning_rate=lr,
                 weight_decay=1e-4, num_epochs=2), tmp_path / "run")
  history = outputs.read_metrics(tmp_path / "run")
  assert history[-1]["train_loss"] < history[0]["train_loss"]
  assert result.summary["final_test_accuracy"] > 0.5


def _two_updates(optimizer, **overrides):
  """The first two updates of `optimizer` (lr 0.1, weight decay 0.01, constant
  schedule) on params of ones, for gradients G1 then G2; and G1, G2.

  G1 is a 16x8 matrix of singular values 10 down to 0.5 (its polar factor
  U V^T is what Muon steps along) and a bias gradient.
  """
  from mnist_jax import optim  # pylint: disable=g-import-not-at-top
  config = toy_config("unused", optimizer=optimizer, learning_rate=0.1,
                      weight_decay=0.01, lr_schedule="constant", **overrides)
  rng = np.random.default_rng(0)
  u, _ = np.linalg.qr(rng.normal(size=(16, 8)))
  v, _ = np.linalg.qr(rng.normal(size=(8, 8)))
  g1 = {"b": jnp.asarray(rng.normal(size=8), jnp.float32),
        "w": jnp.asarray(u @ np.diag(np.geomspace(10, 0.5, 8)) @ v.T, jnp.float32)}
  g2 = jax.tree.map(lambda g: jnp.asarray(rng.normal(size=g.shape), jnp.float32), g1)
  params = jax.tree.map(jnp.ones_like, g1)
  tx = optim.create(config, steps_per_epoch=10)
  state = tx.init(params)
  first, state = tx.update(g1, state, params)
  params = optax.apply_updates(params, first)
  second, _ = tx.update(g2, state, params)
  as_np = lambda tree: {k: np.asarray(x, np.float64) for k, x in tree.items()}
  return as_np(first), as_np(second), as_np(g1), as_np(g2), u @ v.T


def test_each_optimizer_takes_its_own_first_steps():
  lr, wd = 0.1, 0.01
  # float32 against float64 formulas on the same float32 gradients: at most
  # 6 roundings an update (sums, products, the rate), of terms up to lr x
  # 10 (the largest singular value) where they cancel. Adam's own eps (1e-8)
  # shrinks its first step from the sign by 1e-8 / |g|, relatively.
  def close(a, b, extra=0.0):
    np.testing.assert_allclose(a, b, rtol=tolerances.float32_relative(6) + extra,
                               atol=lr * 10 * tolerances.float32_relative(6))
  # SGD: the decayed gradient; momentum adds 0.9 of the last step's.
  first, second, g1, g2, _ = _two_updates("sgd", momentum=0.0)
  close(first["w"], -lr * (g1["w"] + wd))
  close(second["w"], -lr * (g2["w"] + wd * (1 + first["w"])))
  momentum, momentum2, *_ = _two_updates("momentum")
  close(momentum["w"], first["w"])
  close(momentum2["w"], -lr * (g2["w"] + wd * (1 + first["w"]) + 0.9 * (g1["w"] + wd)))
  # Nesterov looks ahead: its first step is (1 + 0.9) times momentum's.
  for nesterov in (_two_updates("nesterov")[0], _two_updates("sgd", nesterov=True)[0]):
    close(nesterov["w"], 1.9 * momentum["w"])
  # Adam's first step is lr times the gradient's sign; adamw adds decoupled decay.
  adam, adam2, *_ = _two_updates("adam")
  adam_eps = 1e-8 / np.abs(g1["w"]).min()
  close(adam["w"], -lr * np.sign(g1["w"]), adam_eps)
  close(_two_updates("adamw")[0]["w"], -lr * (np.sign(g1["w"]) + wd), adam_eps)
  # Lion steps by the sign every time; Adam's second step is not a sign.
  lion, lion2, *_ = _two_updates("lion")
  close(lion["w"], -lr * (np.sign(g1["w"]) + wd))
  close(np.abs(lion2["w"] + lr * wd * (1 + lion["w"])), lr)
  assert np.ptp(np.abs(adam2["w"])) > 0.1 * lr
  # Muon orthogonalises the matrix's step: along the polar factor U V^T of
  # the gradient, with its singular values (10 to 0.5) nearly equalised.
  # Adam's sign and SGD's gradient point elsewhere.
  muon, *_, polar = _two_updates("muon")
  cosine = lambda step: float(np.sum(-step * polar) / np.linalg.norm(step)
                              / np.linalg.norm(polar))
  singular = np.linalg.svd(muon["w"], compute_uv=False)
  assert cosine(muon["w"]) > 0.95 and singular.min() > 0.4 * singular.max()
  assert cosine(adam["w"]) < 0.9 and cosine(first["w"]) < 0.9


def test_clipping_changes_training_and_keeps_the_optimizer_state(
    synthetic_data, tmp_path):
  from mnist_jax import optim
  base = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1),
                                  tmp_path / "base").summary
  clipped = training.train_and_evaluate(
      toy_config(synthetic_data, num_epochs=1, grad_clip_norm=1e-3),
      tmp_path / "clipped").summary
  # Steps of at most 1e-3 in norm barely move the model.
  assert clipped["final_test_loss"] > base["final_test_loss"]
  # Clipping on or off keeps the optimizer state's structure (safe to resume).
  states = [optim.create(toy_config("unused", grad_clip_norm=c), 10).init(
      {"w": jnp.zeros(3)}) for c in (0.0, 1.0)]
  assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])


def test_label_smoothing_trains_differently_and_evaluates_unsmoothed(
    synthetic_data, tmp_path):
  base = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1),
                                  tmp_path / "base")
  smoothed = training.train_and_evaluate(
      toy_config(synthetic_data, num_epochs=1, label_smoothing=0.2),
      tmp_path / "smoothed")
  # Same seed and data order: only the loss differs.
  assert (outputs.read_metrics(tmp_path / "smoothed")[0]["train_loss"]
          != outputs.read_metrics(tmp_path / "base")[0]["train_loss"])
  # The reported test loss is the plain cross-entropy of the model's logits.
  ds = data.load("toy", synthetic_data)
  logits = steps.eval_logits(smoothed.graphs, smoothed.recipe, smoothed.state,
                             jnp.asarray(ds.test_images))
  plain = float(jnp.mean(-jnp.take_along_axis(
      jax.nn.log_softmax(logits), jnp.asarray(ds.test_labels)[:, None], -1)))
  # Training's evaluation and this one are two programs (tolerances.mean_loss).
  assert smoothed.summary["final_test_loss"] == pytest.approx(plain, abs=tolerances.mean_loss(
      plain, len(ds.test_labels), smoothed.state.params, 10))
  assert base.summary["final_test_loss"] != smoothed.summary["final_test_loss"]


def test_ema_is_evaluated_each_epoch_checkpointed_and_evaluated_on_demand(
    synthetic_data, tmp_path):
  import json
  from conftest import run_module
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(
      toy_config(synthetic_data, ema_decay=0.9, num_epochs=2), workdir)
  history = outputs.read_metrics(workdir)
  assert all(0 <= r["ema_test_accuracy"] <= 1 for r in history)
  assert result.summary["final_ema_test_accuracy"] == history[-1]["ema_test_accuracy"]
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(result.state.ema["params"]), jax.tree.leaves(result.state.params)))
  evaluated = run_module("mnist_jax.evaluate", f"--workdir={workdir}", "--ema")
  assert evaluated.returncode == 0, evaluated.stderr
  report = json.loads((workdir / "eval.json").read_text())
  assert report["weights"] == "moving average"
  assert report["test_accuracy"] == history[-1]["ema_test_accuracy"]
  # Turning the average off changes the optimizer state: refused.
  with pytest.raises(UserError, match="ema_decay=0.9 there, 0.0 now"):
    training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3), workdir)
  plain = tmp_path / "plain"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), plain)
  refused = run_module("mnist_jax.evaluate", f"--workdir={plain}", "--ema")
  assert refused.returncode == 1
  assert "kept no moving average" in refused.stderr


def test_bfloat16_trains_checkpoints_evaluates_predicts_and_exports_in_bf16(
    synthetic_data, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from mnist_jax import evaluate, export, predict  # pylint: disable=g-import-not-at-top
  from mnist_jax.trained import load_trained  # pylint: disable=g-import-not-at-top
  config = toy_config(synthetic_data, model="cnn", width=0.25, dtype="bfloat16")
  in_f32 = lambda recipe: dataclasses.replace(recipe, dtype=jnp.float32)
  ds = data.load("toy", synthetic_data)

  # A run: float32 state, checkpointed with its dtype.
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(config, workdir)
  assert result.summary["final_test_accuracy"] > 0.5
  assert {x.dtype for x in jax.tree.leaves(result.state.params)} == {np.dtype("float32")}
  assert {x.dtype for x in jax.tree.leaves(result.state.opt_state)
          if jnp.issubdtype(x.dtype, jnp.floating)} == {np.dtype("float32")}
  trained = load_trained(workdir)
  assert trained.recipe.dtype == jnp.bfloat16

  # Evaluate: the numbers training reported (in bf16), which float32 misses.
  # Two programs that round to bf16 at the same places and sum in float32
  # (tolerances.mean_loss); float32's loss, rounded nowhere, lies further.
  trained_loss = result.summary["final_test_loss"]
  report = evaluate.evaluate_trained(trained, ds)
  assert report["test_loss"] == pytest.approx(trained_loss, abs=tolerances.mean_loss(
      trained_loss, len(ds.test_labels), trained.state.params, 10))
  f32_report = evaluate.evaluate_trained(
      dataclasses.replace(trained, recipe=in_f32(trained.recipe)), ds)
  assert abs(f32_report["test_loss"] - trained_loss) > abs(report["test_loss"] - trained_loss)

  # Predict: the probabilities of the bf16 logits.
  paths = []
  for i in range(3):
    paths.append(tmp_path / f"{i}.png")
    Image.fromarray(ds.test_images[i, ..., 0]).save(paths[-1])
  predicted = np.array([[dict(ranked)[name] for name in trained.class_names]
                        for _, ranked in predict.predict(workdir, paths, fit="whole",
                                                         top=10)])
  # [B, H, W], the exported module's signature; the step takes [B, H, W, 1].
  inputs = np.stack([predict.to_mnist_format(p, "auto", "whole") for p in paths])
  # Nearer bf16's probabilities than float32's (two bf16 programs round at the
  # same places; float32 nowhere).
  distance = lambda recipe: np.abs(predicted - jax.nn.softmax(
      steps.make_logits_fn(trained.graphs, recipe)(trained.state, inputs[..., None]))).sum()
  assert distance(trained.recipe) < distance(in_f32(trained.recipe))

  # Export: a module whose arithmetic is bf16, computing the same logits.
  path = export.export(trained, tmp_path / "model.jax_export", ["cpu"])
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert test_steps.matmul_dtypes(exported.mlir_module()) == {"bf16"}
  in_bf16 = steps.eval_logits(trained.graphs, trained.recipe, trained.state,
                            inputs[..., None])
  # The same model in another bf16 program, which may keep float32's excess
  # precision elsewhere (the export does, at its end): at most one bf16
  # rounding apart at each of the cnn's ~16 bf16 results along the chain
  # (the input, each layer's product and bias, each pool), each relative to
  # what it rounds, carried to the logits (first order). Catches an export
  # of other weights or preprocessing.
  bf16_eps = float(jnp.finfo(jnp.bfloat16).eps)
  np.testing.assert_allclose(exported.call(inputs), in_bf16,
                             atol=16 * bf16_eps * float(jnp.abs(in_bf16).max()))


def test_dropout_changes_training_repeats_exactly_and_resumes_exactly(
    synthetic_data, tmp_path):
  # A constant schedule: a cosine one would change with num_epochs.
  config = lambda **kw: toy_config(synthetic_data, lr_schedule="constant", **kw)
  plain = training.train_and_evaluate(config(num_epochs=2), tmp_path / "plain")
  straight = training.train_and_evaluate(config(num_epochs=2, dropout=0.5),
                                      tmp_path / "straight")
  again = training.train_and_evaluate(config(num_epochs=2, dropout=0.5),
                                   tmp_path / "again")
  training.train_and_evaluate(config(num_epochs=1, dropout=0.5), tmp_path / "resumed")
  resumed = training.train_and_evaluate(config(num_epochs=2, dropout=0.5),
                                     tmp_path / "resumed")
  assert resumed.summary["resumed_from_epoch"] == 1
  for a, b, c in zip(_leaves(straight.state), _leaves(again.state),
                     _leaves(resumed.state), strict=True):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  # Dropout's masks raise the training loss above the plain run's.
  loss = lambda name: outputs.read_metrics(tmp_path / name)[-1]["train_loss"]
  assert loss("straight") > loss("plain")
  assert straight.summary["final_test_accuracy"] > 0.5


def test_the_host_lets_go_of_the_training_images_once_the_devices_hold_them(
    synthetic_data, tmp_path, monkeypatch):
  # On CPU every device's copy is in host memory too: a host copy kept after
  # placement is one more copy of the largest split.
  loaded = {}
  real_load = data.load

  def load(*args, **kwargs):
    dataset = real_load(*args, **kwargs)
    loaded["train_images"] = weakref.ref(dataset.train_images)
    return dataset

  monkeypatch.setattr(data, "load", load)
  alive = []

  def callback(record):
    gc.collect()
    alive.append(loaded["train_images"]() is not None)

  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2),
                                    tmp_path / "run", callbacks=[callback])
  assert alive == [False, False]
  assert result.summary["final_test_accuracy"] > 0.5  # It trained on them.
