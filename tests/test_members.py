"""Many models in one compiled run: num_seeds, sweeps, ensembles."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tolerances

from conftest import toy_config
from mnist_jax import data, members, outputs, steps, training
from mnist_jax import loop as loop_lib
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)
          if np.issubdtype(np.asarray(x).dtype, np.floating)]


def _assert_close(member_tree, single_tree, start_tree, n_terms):
  # Two steps whose sums of up to `n_terms` terms round in another order
  # (vmapped convolutions): tolerances.float32_steps, relative to what the
  # two steps moved each leaf. Catches another learning rate (a 3 times
  # longer move), initialisation, data order or key.
  for got, want, start in zip(_leaves(member_tree), _leaves(single_tree),
                              _leaves(start_tree), strict=True):
    moved = float(np.abs(want - start).max())
    tolerances.assert_within(got, want, tolerances.float32_steps(2, n_terms, moved))


# A batch-normalised convolutional model with augmentation and dropout:
# the members' steps must carry each member's own initialisation, data order,
# augmentation and dropout keys, batch statistics and learning rate. Two
# steps: vmapped convolutions round differently, and over more steps
# max-pooling's near-ties turn that into visible differences (measured: 1e-5
# relative after 2 steps, 1e-2 after 4).
MEMBERS_COMMON = dict(model="bn_cnn", width=0.25, optimizer="momentum", num_epochs=1,
                      augment="translate", dropout=0.3, batch_size=128)
SINGLES = {1: (1, 0.01), 2: (0, 0.03)}  # member: (seed, learning rate)


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
  """The toy data, and the single runs that members 1 and 2 must match."""
  from conftest import synthetic_split, write_dataset  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("singles")
  data_dir = write_dataset(root / "data" / "toy", *synthetic_split(256, 10, seed=1),
                           *synthetic_split(100, 10, seed=2)).parent
  return data_dir, {
      member: training.train_and_evaluate(
          toy_config(data_dir, seed=seed, learning_rate=lr, **MEMBERS_COMMON),
          root / f"single{member}")
      for member, (seed, lr) in SINGLES.items()}


@pytest.mark.parametrize("loop, steps_per_call", [
    ("unroll", 1),  # CPU's path: each member's step written out, a step per call.
    ("vmap", 1),
    # GPU and TPU's path: vmapped members inside a scan over the whole epoch.
    ("vmap", 2),
])
def test_each_member_matches_the_single_run_of_its_seed_and_hyperparameters(
    single_runs, tmp_path, loop, steps_per_call):
  data_dir, singles = single_runs
  config = toy_config(data_dir, num_seeds=2, member_loop=loop,
                      steps_per_call=steps_per_call, **MEMBERS_COMMON)
  config.sweep.learning_rate = "0.01,0.03"
  vectorised = training.train_and_evaluate(config, tmp_path / "vectorised")
  assert jax.tree.leaves(vectorised.state.params)[0].shape[0] == 4
  assert vectorised.summary["steps_per_call"] == steps_per_call  # 256 / 128 = 2 steps.
  if steps_per_call == 2:  # What a GPU or TPU picks by itself.
    assert loop_lib.default_steps_per_call("gpu", 2) == 2
    assert members.member_loop("auto", "tpu") == "vmap"

  for member, (seed, lr) in SINGLES.items():
    assert members.Members.from_config(config).describe(member) == {
        "seed": seed, "learning_rate": lr}
    mine = members.select(vectorised.state, member)
    start = state_lib.build(toy_config(data_dir, seed=seed, learning_rate=lr,
                                       **MEMBERS_COMMON), 10, 2).state
    # A kernel's gradient and batch norm's statistics: 128 x 28 x 28 terms.
    n_terms = tolerances.sums_of(start.params, batch=128, positions=28 * 28)
    _assert_close(mine.params, singles[member].state.params, start.params, n_terms)
    _assert_close(mine.rest, singles[member].state.rest, start.rest,  # Batch statistics.
                  n_terms)
    assert (vectorised.summary["members"][member]["final_test_accuracy"]
            == singles[member].summary["final_test_accuracy"])


def test_summary_gives_members_spread_and_ensemble(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, num_seeds=3, num_epochs=2, seed=5)
  result = training.train_and_evaluate(config, tmp_path / "run")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  finals = [m["final_test_accuracy"] for m in summary["members"]]
  assert [m["seed"] for m in summary["members"]] == [5, 6, 7]
  first_kernel = [_leaves(members.select(result.state.params, k))[0] for k in range(3)]
  # Own initialisation: other draws differ by their own size, far beyond
  # allclose's 1e-5 relative.
  assert not np.allclose(first_kernel[0], first_kernel[1])
  # The mean and std of the same 3 floats, summed in another order
  # (statistics against numpy): float64 rounding of n + 1 operations, for
  # the mean and again for the deviations from it.
  near = lambda x: pytest.approx(x, abs=tolerances.float64_sum(8, max(finals)))
  assert summary["final_test_accuracy"] == near(np.mean(finals))
  spread = summary["final_test_accuracy_over_members"]
  assert spread["min"] == min(finals) and spread["max"] == max(finals)
  assert spread["std"] == near(np.std(finals, ddof=1))

  # The ensemble: the argmax of the members' mean probabilities.
  ds = data.load("toy", synthetic_data)
  logits_fn = steps.make_logits_fn(result.graphs, result.recipe)
  probs = np.mean([jax.nn.softmax(logits_fn(members.select(result.state, k),
                                            ds.test_images)) for k in range(3)], 0)
  expected = float(np.mean(np.argmax(probs, -1) == ds.test_labels))
  # Accuracies: the division of the same two counts, exactly equal.
  assert summary["final_ensemble_test_accuracy"] == expected
  assert summary["points"][0]["final_ensemble_test_accuracy"] == expected

  records = outputs.read_metrics(tmp_path / "run")
  assert [len(r["members"]) for r in records] == [3, 3]
  assert records[-1]["ensembles"][0]["test_accuracy"] == expected
  # members.count * images_per_sec, both written as JSON (repr: exact).
  assert records[-1]["images_per_sec_all_members"] == 3 * records[-1]["images_per_sec"]


def test_a_sweep_reports_each_point_and_a_diverged_member_does_not_stop_the_others(
    synthetic_data, tmp_path):
  config = toy_config(synthetic_data, optimizer="sgd", momentum=0.9, num_epochs=2)
  config.sweep.learning_rate = "0.05,1e12"
  config.sweep.weight_decay = "0,0.0001"
  result = training.train_and_evaluate(config, tmp_path / "run")
  points = result.summary["points"]
  assert [(p["learning_rate"], p["weight_decay"]) for p in points] == [
      (0.05, 0.0), (0.05, 0.0001), (1e12, 0.0), (1e12, 0.0001)]
  assert "final_ensemble_test_accuracy" not in points[0]  # One seed each.
  losses = [m["final_test_loss"] for m in result.summary["members"]]
  assert np.isfinite(losses[:2]).all() and not np.isfinite(losses[2:]).any()
  assert min(m["final_test_accuracy"] for m in result.summary["members"][:2]) > 0.5
  # The injected values are the members' own, in their optimizer states.
  hyperparams = result.state.opt_state.hyperparams
  # Held as float32: one rounding of the values given.
  assert list(hyperparams["learning_rate"]) == tolerances.stored32([0.05, 0.05, 1e12, 1e12])
  assert list(hyperparams["weight_decay"]) == tolerances.stored32([0, 1e-4, 0, 1e-4])


def test_a_members_run_resumes_exactly_and_refuses_other_members(
    synthetic_data, tmp_path):
  # A constant schedule: a cosine one would change with num_epochs.
  config = toy_config(synthetic_data, num_seeds=2, num_epochs=2,
                      lr_schedule="constant")
  config.sweep.learning_rate = "0.001,0.003"
  straight = training.train_and_evaluate(config, tmp_path / "straight")
  config.num_epochs = 1
  training.train_and_evaluate(config, tmp_path / "resumed")
  config.num_epochs = 2
  resumed = training.train_and_evaluate(config, tmp_path / "resumed")
  assert resumed.summary["resumed_from_epoch"] == 1
  for a, b in zip(_leaves(resumed.state), _leaves(straight.state), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed.summary["members"] == straight.summary["members"]
  assert list(resumed.state.opt_state.hyperparams["learning_rate"]) == tolerances.stored32(
      [0.001, 0.001, 0.003, 0.003])

  before = (tmp_path / "resumed" / "metrics.jsonl").read_text()
  config.num_epochs = 3
  config.num_seeds = 3
  with pytest.raises(UserError, match="num_seeds=2 there, 3 now"):
    training.train_and_evaluate(config, tmp_path / "resumed")
  # The same number of members, other values: the checkpoint's learning
  # rates would silently win.
  config.num_seeds = 2
  config.sweep.learning_rate = "0.001,0.01"
  with pytest.raises(UserError, match="sweep.learning_rate='0.001,0.003' there, "
                     "'0.001,0.01' now"):
    training.train_and_evaluate(config, tmp_path / "resumed")
  assert (tmp_path / "resumed" / "metrics.jsonl").read_text() == before


def test_a_trained_member_loads_with_its_own_seed(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, num_seeds=2, num_epochs=1)
  result = training.train_and_evaluate(config, tmp_path / "run")
  trained = load_trained(tmp_path / "run", member=1)
  assert trained.config.seed == 1
  # A checkpoint holds the bits: restored exactly.
  for got, want in zip(_leaves(trained.state.params),
                       _leaves(members.select(result.state.params, 1)), strict=True):
    np.testing.assert_array_equal(got, want)
  with pytest.raises(UserError, match="members 0 to 1"):
    load_trained(tmp_path / "run", member=2)
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1),
                           tmp_path / "single")
  with pytest.raises(UserError, match="this run trained one model; drop --member"):
    load_trained(tmp_path / "single", member=1)


def _run_command(module, *args) -> str:
  """`mnist-jax <module> args`, run in this process: its flags parsed, then
  reset, and the absl logger's level with them (unparse_flags sets it to
  WARNING, which hid later tests' INFO lines from caplog)."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  level = logging.get_absl_logger().level
  try:
    module.main(flags.FLAGS(["mnist-jax", *map(str, args)]))
  finally:
    flags.FLAGS.unparse_flags()
    logging.get_absl_logger().setLevel(level)


def test_evaluate_predict_and_export_use_the_member_asked_for(
    synthetic_data, tmp_path, capsys):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from mnist_jax import evaluate, export, predict  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(toy_config(synthetic_data, num_seeds=2, num_epochs=1),
                                    workdir)
  finals = result.summary["members"]
  ds = data.load("toy", synthetic_data)
  paths = []
  for i in range(4):
    paths.append(tmp_path / f"{i}.png")
    Image.fromarray(ds.test_images[i, ..., 0]).save(paths[-1])
  # [B, H, W], the exported module's signature; the step takes [B, H, W, 1].
  inputs = np.stack([predict.to_mnist_format(p, "auto", "whole") for p in paths])
  logits_fn = load_trained(workdir, member=0).logits_fn
  logits = [np.asarray(logits_fn(members.select(result.state, k), inputs[..., None]))
            for k in (0, 1)]
  capsys.readouterr()

  _run_command(evaluate, f"--workdir={workdir}", "--member=1")
  report = json.loads((workdir / "eval.json").read_text())
  # Another program for member 1's evaluation (tolerances.mean_loss);
  # member 0's loss is another model's.
  same = lambda loss: pytest.approx(loss, abs=tolerances.mean_loss(
      loss, len(ds.test_labels), members.select(result.state.params, 1), 10))
  assert report["test_loss"] == same(finals[1]["final_test_loss"])
  assert report["test_loss"] != same(finals[0]["final_test_loss"])

  capsys.readouterr()
  _run_command(predict, f"--workdir={workdir}", "--member=1", "--fit=whole",
               "--top=10", *paths)
  printed = capsys.readouterr().out.splitlines()
  def lines(logits_NK):
    """predict's output for these logits: classes by probability, in %."""
    out = []
    for path, probabilities in zip(paths, np.asarray(jax.nn.softmax(logits_NK))):
      order = np.argsort(-probabilities)
      out.append(f"{path}\t" + "\t".join(
          f"{ds.class_names[k]} {100 * probabilities[k]:.1f}%" for k in order))
    return out
  assert printed == lines(logits[1]) != lines(logits[0])

  _run_command(export, f"--workdir={workdir}", "--member=1", "--platforms=cpu",
               f"--out={tmp_path / 'member1'}")
  exported = jax.export.deserialize(bytearray((tmp_path / "member1").read_bytes()))
  # Member 1 in another program (tolerances.logits); not member 0.
  bound = tolerances.logits(logits[1], members.select(result.state.params, 1))
  tolerances.assert_within(exported.call(inputs), logits[1], bound)
  assert (np.abs(exported.call(inputs) - logits[0]) > bound).any()


def test_members_with_a_moving_average_and_test_time_views_evaluate_as_alone(
    synthetic_data, tmp_path):
  # configs/fashion_best.py's recipe, as in its three-seed result: batch
  # norm, a moving average of weights and statistics, a mirrored test view.
  from mnist_jax import evaluate  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(
      toy_config(synthetic_data, model="bn_cnn", width=0.25, batch_size=64,
                 num_epochs=1, num_seeds=2, ema_decay=0.9, tta="flip"), workdir)
  last = outputs.read_metrics(workdir)[-1]
  ds = data.load("toy", synthetic_data)
  probabilities = []
  for k in (0, 1):
    trained = load_trained(workdir, member=k)
    assert trained.recipe.tta == ("flip",)
    weights = evaluate.evaluate_trained(trained, ds)
    average = evaluate.evaluate_trained(trained.with_ema_weights(), ds)
    # Training's evaluation in another program (tolerances.mean_loss).
    same = lambda loss: pytest.approx(loss, abs=tolerances.mean_loss(
        loss, len(ds.test_labels), trained.state.params, 10))
    assert weights["test_loss"] == same(last["members"][k]["test_loss"])
    assert average["test_loss"] == same(last["members"][k]["ema_test_loss"])
    assert (average["test_accuracy"]
            == result.summary["members"][k]["final_ema_test_accuracy"])
    # One program, other weights: any difference is the weights'.
    assert average["test_loss"] != weights["test_loss"]
    probabilities.append(jax.nn.softmax(trained.logits_fn(trained.state, ds.test_images)))
  # The views count: without the mirrored one, another loss.
  plain = dataclasses.replace(trained, recipe=dataclasses.replace(trained.recipe, tta=()))
  assert evaluate.evaluate_trained(plain, ds)["test_loss"] != weights["test_loss"]
  # The ensemble averages the members' view-averaged predictions.
  expected = float(np.mean(np.argmax(np.mean(probabilities, 0), -1) == ds.test_labels))
  # The division of the same two counts: exactly equal.
  assert result.summary["final_ensemble_test_accuracy"] == expected


@pytest.mark.parametrize("overrides, sweep, message", [
    ({"num_seeds": 0}, {}, "num_seeds must be a positive integer"),
    ({}, {"learning_rate": "0.1,fast"}, "expected numbers separated by commas"),
    ({}, {"learning_rate": "0.1,-0.1"}, "learning rates must be positive"),
    ({"optimizer": "adam"}, {"weight_decay": "0,1e-4"}, "has no weight decay"),
    ({"optimizer": "adamw"}, {"momentum": "0.8,0.9"}, "only sgd, momentum and nesterov"),
    ({"member_loop": "pmap"}, {}, "member_loop='pmap': choose one of auto, vmap, unroll"),
])
def test_bad_members_are_user_errors(synthetic_data, tmp_path, overrides, sweep,
                                     message):
  config = toy_config(synthetic_data, **overrides)
  for field, text in sweep.items():
    config.sweep[field] = text
  with pytest.raises(UserError, match=message):
    training.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam",
                                       "adamw", "lion", "muon"])
def test_injected_hyperparameters_give_the_same_updates(optimizer):
  from mnist_jax import optim  # pylint: disable=g-import-not-at-top
  config = toy_config("unused", optimizer=optimizer, learning_rate=0.01,
                      weight_decay=1e-3, lr_schedule="onecycle", num_epochs=1)
  swept = [f for f in members.SWEEPABLE
           if optimizer in ("sgd", "momentum", "nesterov") or f != "momentum"]
  params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
  grads = {"w": jnp.full((4, 3), 0.5), "b": jnp.ones(3)}
  plain, injected = optim.create(config, 5), optim.create(config, 5, tuple(swept))
  states = [plain.init(params), injected.init(params)]
  for _ in range(3):
    (a, states[0]), (b, states[1]) = (
        plain.update(grads, states[0], params), injected.update(grads, states[1], params))
    # The injected rate is lr x the unit schedule, the plain one the
    # schedule of peak lr: a few roundings apart (3), then the product (1).
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_allclose(x, y, rtol=tolerances.float32_relative(4), atol=0)
  # And another value in the state gives other updates.
  other = optim.set_hyperparameters(injected.init(params), {"learning_rate": 0.02})
  c, _ = injected.update(grads, other, params)
  first, _ = injected.update(grads, injected.init(params), params)
  # 0.02 is exactly 2 x 0.01 in float32 too; one rounding of slack.
  np.testing.assert_allclose(c["w"], 2 * first["w"], rtol=tolerances.float32_relative(1))
