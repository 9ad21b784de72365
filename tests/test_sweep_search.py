"""Random search: sweep fields drawn from distributions, `sweep_samples` times."""

import json
import logging
import math
import re
import shutil

import numpy as np
import pytest
import tolerances

from conftest import REPO, run_module, toy_config
from mnist_jax import config as config_lib
from mnist_jax import members, outputs, training
from mnist_jax.errors import UserError


def _config(samples=0, sweep_seed=0, optimizer="sgd", **sweep):
  config = toy_config("unused", optimizer=optimizer, sweep_samples=samples,
                      sweep_seed=sweep_seed)
  for field, text in sweep.items():
    config.sweep[field] = text
  return config


@pytest.mark.parametrize("text, kind, values", [
    ("loguniform(1e-4, 1e-1)", "loguniform", (1e-4, 0.1)),
    (" uniform( 0.01 ,0.5 ) ", "uniform", (0.01, 0.5)),
    ("choice(0.1, 0.3,1)", "choice", (0.1, 0.3, 1.0)),
    ("choice(0.2)", "choice", (0.2,)),
    ("0.01,0.03,", "grid", (0.01, 0.03)),  # Today's grid, as before.
])
def test_a_sweep_field_reads_as_a_grid_or_a_distribution(text, kind, values):
  assert members.parse_sweep("sweep.learning_rate", text) == members.Sweep(kind, values)
  assert members.parse_sweep("sweep.learning_rate", "") is None


# (config.sweep fields, sweep_samples, optimizer): the message's end.
BAD = [
    ({"learning_rate": "lognormal(1,2)"}, 3, "sgd",
     "'lognormal(1,2)': unknown distribution 'lognormal'; choose one of "
     "loguniform(a, b), uniform(a, b), choice(x, y, ...)"),
    ({"learning_rate": "loguniform(0.1, 1e-4)"}, 3, "sgd",
     "the lower bound must come first and be less than the upper"),
    ({"learning_rate": "loguniform(0.1, 0.1)"}, 3, "sgd",
     "the lower bound must come first and be less than the upper"),
    ({"weight_decay": "loguniform(0, 0.1)"}, 3, "sgd",
     "loguniform's bounds must be positive"),
    ({"weight_decay": "loguniform(-1e-3, 0.1)"}, 3, "sgd",
     "loguniform's bounds must be positive"),
    ({"learning_rate": "uniform(0, 0.1)"}, 3, "sgd", "learning rates must be positive"),
    ({"momentum": "uniform(0.8, 0.9, 0.99)"}, 3, "sgd",
     "uniform takes two numbers, its bounds a < b"),
    ({"momentum": "choice(0.8, fast)"}, 3, "sgd",
     "choice's arguments must be numbers separated by commas"),
    ({"momentum": "choice(0.8,,0.9)"}, 3, "sgd",
     "choice's arguments must be numbers separated by commas"),
    ({"learning_rate": "loguniform(1e-4, 1e-1"}, 3, "sgd",
     "expected one of loguniform(a, b), uniform(a, b), choice(x, y, ...)"),
    ({"learning_rate": "choice()"}, 3, "sgd", "choice needs at least one value"),
    ({"learning_rate": "0.01,0.1"}, 3, "sgd",
     "config.sweep_samples=3 draws sweep points, but no sweep.<field> is a "
     "distribution"),
    ({"learning_rate": "loguniform(1e-4, 1e-1)"}, 0, "sgd",
     "is drawn at random: set sweep_samples=N"),
    ({"learning_rate": "loguniform(1e-4, 1e-1)", "weight_decay": "0, 1e-4"}, 3, "sgd",
     "config.sweep.weight_decay='0, 1e-4' is a grid, but sweep_samples=3 draws the "
     "points: write it as 'choice(0, 1e-4)' to draw it too"),
    ({"momentum": "uniform(0.8, 0.99)"}, 3, "adamw",
     "config.sweep.momentum: only sgd, momentum and nesterov take config.momentum"),
]


@pytest.mark.parametrize("sweep, samples, optimizer, message", BAD)
def test_a_bad_random_search_is_one_line_before_anything_trains(
    synthetic_data, tmp_path, sweep, samples, optimizer, message):
  config = _config(samples, optimizer=optimizer, **sweep)
  with pytest.raises(UserError) as error:
    config_lib.validate(config)
  assert message in str(error.value) and "\n" not in str(error.value)
  config.data_dir = str(synthetic_data)
  with pytest.raises(UserError, match=re.escape(message)):
    training.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sweep, samples, optimizer, message", BAD)
def test_the_command_line_prints_a_bad_random_search_as_one_error_line(
    tmp_path, sweep, samples, optimizer, message):
  result = run_module(
      "mnist_jax.main", f"--config={REPO}/configs/mnist.py", "--config.dataset=mnist160",
      f"--config.optimizer={optimizer}", f"--config.sweep_samples={samples}",
      *[f"--config.sweep.{field}={text}" for field, text in sweep.items()],
      f"--workdir={tmp_path / 'run'}")
  assert result.returncode == UserError("").exit_status, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0]
  assert not (tmp_path / "run").exists()


def test_a_field_that_cannot_be_swept_names_those_that_can(tmp_path):
  config = _config(3, learning_rate="loguniform(1e-4, 1e-1)")
  config.sweep.dropout = "choice(0.1, 0.3)"  # A config file can write it.
  message = ("config.sweep.dropout: only learning_rate, weight_decay, momentum "
             "can be swept in one compiled run")
  with pytest.raises(UserError, match=message):
    config_lib.validate(config)
  path = tmp_path / "my_config.py"
  path.write_text("from configs import mnist160\n\n\ndef get_config():\n"
                  "  config = mnist160.get_config()\n"
                  "  config.sweep_samples = 3\n"
                  "  config.sweep.dropout = 'choice(0.1, 0.3)'\n"
                  "  return config\n")
  result = run_module("mnist_jax.main", f"--config={path}",
                      f"--workdir={tmp_path / 'run'}")
  assert result.returncode == UserError("").exit_status
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == f"error: {message}"
  assert not (tmp_path / "run").exists()


def test_the_draws_follow_sweep_seed_alone():
  sweep = dict(learning_rate="loguniform(1e-4, 1e-1)",
               momentum="choice(0.8, 0.9, 0.99)")
  draw = lambda samples, sweep_seed: members.Members.from_config(
      _config(samples, sweep_seed=sweep_seed, **sweep)).points
  points = draw(5, 7)
  assert len(points) == 5
  assert all(list(p) == ["learning_rate", "momentum"] for p in points)
  # Python floats, as JSON and the HParams tab take them.
  assert {type(v) for p in points for v in p.values()} == {float}
  # The same sweep_seed: the same points (a resume draws what the run drew),
  # whatever `seed`; N points are the first N of more.
  assert draw(5, 7) == points
  other_seed = _config(5, sweep_seed=7, **sweep)
  other_seed.seed = 3
  assert members.Members.from_config(other_seed).points == points
  assert draw(3, 7) == points[:3]
  # Another sweep_seed: other learning rates (continuous: no two alike).
  others = draw(5, 8)
  assert not {p["learning_rate"] for p in points} & {p["learning_rate"] for p in others}
  # Member p * num_seeds + s: point p, seed `seed + s`.
  config = _config(5, sweep_seed=7, **sweep)
  config.num_seeds, config.seed = 2, 10
  run = members.Members.from_config(config)
  assert run.count == 10 and run.swept == ("learning_rate", "momentum")
  assert run.describe(7) == {"seed": 11, **points[3]}
  assert run.configs(config)[7].learning_rate == points[3]["learning_rate"]


def _fractions_near(counts, expected, n):
  """Each bin's share of `n` draws within 5 standard deviations of a
  binomial share `expected` (p(|z| > 5) < 1e-6 per bin): a wrong
  distribution moves some bin by far more."""
  for count, p in zip(counts, expected, strict=True):
    assert abs(count / n - p) < 5 * math.sqrt(p * (1 - p) / n), (counts, expected)


def test_draws_stay_inside_their_ranges_with_the_distributions_shapes():
  n = 4000
  points = members.Members.from_config(_config(
      n, sweep_seed=3, learning_rate="loguniform(1e-4, 1)",
      weight_decay="uniform(1e-4, 1e-3)", momentum="choice(0.8, 0.9, 0.99)")).points
  rates = np.array([p["learning_rate"] for p in points])
  decays = np.array([p["weight_decay"] for p in points])
  momenta = [p["momentum"] for p in points]
  assert 1e-4 <= rates.min() and rates.max() <= 1
  assert 1e-4 <= decays.min() and decays.max() <= 1e-3
  assert set(momenta) == {0.8, 0.9, 0.99}
  # Log-uniform: a quarter of the draws in each of the 4 decades (a uniform
  # draw would put 90% in the top one).
  _fractions_near(np.histogram(np.log10(rates), bins=4, range=(-4, 0))[0], [0.25] * 4, n)
  # Uniform: a quarter in each quarter of the range (log-uniform: 51% in the first).
  _fractions_near(np.histogram(decays, bins=4, range=(1e-4, 1e-3))[0], [0.25] * 4, n)
  _fractions_near([momenta.count(v) for v in (0.8, 0.9, 0.99)], [1 / 3] * 3, n)


SWEEP = dict(learning_rate="loguniform(1e-4, 1e-2)", weight_decay="choice(0, 1e-4, 1e-3)")


class _Messages(logging.Handler):

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
  """A random search of 3 points on mnist160, 1 epoch: its config, workdir,
  result and logged lines."""
  from configs import mnist160  # pylint: disable=g-import-not-at-top
  config = mnist160.get_config()
  config.update(model="mlp", optimizer="adamw", num_epochs=1, batch_size=16,
                plots=False, sweep_samples=3, sweep_seed=4, num_seeds=1)
  config.sweep.update(SWEEP)
  workdir = tmp_path_factory.mktemp("search") / "run"
  handler, logger = _Messages(), logging.getLogger()
  logger.addHandler(handler)
  level = logger.level
  logger.setLevel(logging.INFO)
  try:
    result = training.train_and_evaluate(config, workdir)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  return config, workdir, result, handler.messages


def test_a_random_search_trains_and_records_the_drawn_values(searched):
  from test_tensorboard import _session  # pylint: disable=g-import-not-at-top
  config, workdir, result, messages = searched
  points = members.Members.from_config(config).points
  assert len(points) == 3 and len({p["learning_rate"] for p in points}) == 3
  for p in points:
    assert 1e-4 <= p["learning_rate"] <= 1e-2 and p["weight_decay"] in (0, 1e-4, 1e-3)
  # Trained with them: each member's injected hyperparameters (float32).
  hyperparams = result.state.opt_state.hyperparams
  for field in SWEEP:
    assert list(hyperparams[field]) == tolerances.stored32([p[field] for p in points])

  summary = json.loads((workdir / "summary.json").read_text())
  assert [{f: m[f] for f in ("seed", *SWEEP)} for m in summary["members"]] == [
      {"seed": 0, **p} for p in points]
  assert [{f: p[f] for f in SWEEP} for p in summary["points"]] == list(points)
  (record,) = outputs.read_metrics(workdir)
  assert [{f: m[f] for f in ("seed", *SWEEP)} for m in record["members"]] == [
      {"seed": 0, **p} for p in points]
  for k, point in enumerate(points):
    hparams, _ = _session(workdir / "tensorboard" / f"member_{k}")
    assert {f: hparams[f] for f in SWEEP} == point  # Doubles in the proto: exact.
    assert hparams["sweep.learning_rate"] == SWEEP["learning_rate"]
  # The members' table: a line per point, naming its drawn values.
  for point in points:
    head = ", ".join(f"{f}={v:g}" for f, v in point.items()) + ": final test accuracy"
    assert sum(m.startswith(head) for m in messages) == 1, (head, messages)


def test_a_resume_draws_the_same_points_and_refuses_another_sweep_seed(
    searched, tmp_path):
  config, workdir, result, _ = searched
  resumed_dir = tmp_path / "run"
  shutil.copytree(workdir, resumed_dir)
  before = (resumed_dir / "metrics.jsonl").read_text()
  config = config.copy_and_resolve_references()
  config.num_epochs = 2
  for field, value, message in [
      ("sweep_seed", 5, "sweep_seed=4 there, 5 now"),
      ("sweep_samples", 4, "sweep_samples=3 there, 4 now")]:
    changed = config.copy_and_resolve_references()
    changed[field] = value
    with pytest.raises(UserError, match=message):
      training.train_and_evaluate(changed, resumed_dir)
    assert (resumed_dir / "metrics.jsonl").read_text() == before
  resumed = training.train_and_evaluate(config, resumed_dir)
  assert resumed.summary["resumed_from_epoch"] == 1
  # Trained on with the points it drew: recorded, and in its optimizer state.
  swept = lambda rows: [{f: row[f] for f in SWEEP} for row in rows]
  assert swept(resumed.summary["points"]) == swept(result.summary["points"])
  assert swept(outputs.read_metrics(resumed_dir)[-1]["members"]) == swept(
      result.summary["members"])
  for field in SWEEP:
    np.testing.assert_array_equal(resumed.state.opt_state.hyperparams[field],
                                  result.state.opt_state.hyperparams[field])
