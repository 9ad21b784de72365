"""Every feature with a user's own components (plugins.py): a model with
batch norm and dropout, an optimizer with a declared hyperparameter, a loss,
an augmentation and a test-time view, written by the test into a file of its
own, as a researcher's file outside the package."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tolerances
from conftest import REPO, checkpoint_params, run_module
from test_members import _assert_close, _leaves

import mnist_jax
from mnist_jax import members, registry, training
from mnist_jax import state as state_lib

PLUGIN = '''
import jax
import jax.numpy as jnp
import optax
from flax import nnx

CALLED_WITH = []  # (dtype, given a dropout key) of each trace of Net.


class Net(nnx.Module):
  """Batch norm, dropout from the step's key; a stride-4 convolution."""
  classifier = "out"

  def __init__(self, num_classes, *, rngs, input_shape=(28, 28, 1), dropout=0.0):
    h, w, c = input_shape
    self.conv = nnx.Conv(c, 4, (3, 3), strides=(4, 4), rngs=rngs)
    self.norm = nnx.BatchNorm(4, rngs=rngs)
    self.out = nnx.Linear(4 * -(-h // 4) * -(-w // 4), num_classes, rngs=rngs)
    self.drop = nnx.Dropout(dropout)  # Its mask drawn from the step's key.

  def __call__(self, x_BHWC, dropout_key=None):
    CALLED_WITH.append((jnp.dtype(x_BHWC.dtype).name, dropout_key is not None))
    x = nnx.relu(self.norm(self.conv(x_BHWC)))
    x = x.reshape(x.shape[0], -1)
    if dropout_key is not None:
      x = self.drop(x, rngs=nnx.Rngs(dropout=dropout_key))
    return self.out(x)


def make_tx(learning_rate, config, weight_decay):
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=config.momentum))
make_tx.hyperparameters = ("weight_decay",)


def loss(logits_BK, labels_BK):
  return -jnp.sum(labels_BK * jax.nn.log_softmax(logits_BK), -1)


def jitter(key, x_BHWC):
  return x_BHWC + 0.1 * jax.random.normal(key, (x_BHWC.shape[0], 1, 1, 1))


def mirror(x_BHWC):
  return x_BHWC[:, :, ::-1, :]
'''

# The config every run here shares (mnist160: 80 train images, 80 test).
CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist160"
  config.model = "{where}plugin.py:Net"
  config.optimizer = "{where}plugin.py:make_tx"
  config.loss = "{where}plugin.py:loss"
  config.augment = "{where}plugin.py:jitter"
  config.tta = "{where}plugin.py:mirror"
  config.dropout = 0.3
  config.learning_rate = 0.05
  config.momentum = 0.9
  config.weight_decay = 1e-3
  config.batch_size = {batch_size}
  config.num_epochs = {num_epochs}
  config.plots = False
  return config
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
  """A folder with the user's plugin.py (its specs in-process name it by
  its absolute path: other tests' plugin.py files are elsewhere)."""
  folder = tmp_path_factory.mktemp("user")
  (folder / "plugin.py").write_text(PLUGIN)
  return folder


def _config(plugin_dir, batch_size=16, num_epochs=1, **overrides):
  """CONFIG's, its specs absolute. Not through config.from_file, which would
  add plugin_dir to the process's folders for file specs (plugins.py), where
  other tests' `plugin.py:...` would find this one."""
  namespace = {}
  exec(CONFIG.format(where=f"{plugin_dir}/", batch_size=batch_size,  # pylint: disable=exec-used
                     num_epochs=num_epochs), namespace)
  config = namespace["get_config"]()
  for key, value in overrides.items():
    config[key] = value
  return config


def _plugin_module(plugin_dir):
  net = registry.resolve("model", f"{plugin_dir}/plugin.py:Net").target
  return sys.modules[net.__module__]


# Members: two steps (80 images, batch 32), as tests/test_members.py's, for
# the same reason (vmapped convolutions round otherwise; over more steps
# ReLU's near-ties make that visible).
MEMBERS = dict(batch_size=32, num_epochs=1)
SINGLES = {1: (1, 0.0), 2: (0, 0.01)}  # member: (seed, weight_decay)


@pytest.fixture(scope="module")
def single_runs(plugin_dir, tmp_path_factory):
  """{member: (its single run, that run's initial state)}."""
  root = tmp_path_factory.mktemp("singles")
  runs = {}
  for member, (seed, wd) in SINGLES.items():
    config = _config(plugin_dir, seed=seed, weight_decay=wd, **MEMBERS)
    runs[member] = (training.train_and_evaluate(config, root / f"single{member}"),
                    state_lib.build(config, 10, 2).state)
  return runs


@pytest.mark.parametrize("loop, steps_per_call, sweep", [
    ("unroll", 1, ""),        # CPU's path: seeds 0 and 1.
    ("vmap", 2, "0,0.01"),    # GPU and TPU's: 2 seeds x 2 points, in a scan.
])
def test_members_of_plugins_match_the_single_runs(plugin_dir, single_runs, tmp_path,
                                                  loop, steps_per_call, sweep):
  config = _config(plugin_dir, num_seeds=2, member_loop=loop,
                   steps_per_call=steps_per_call, weight_decay=0.0, **MEMBERS)
  # The plugin optimizer's declared hyperparameter is sweepable.
  config.sweep.weight_decay = sweep
  result = training.train_and_evaluate(config, tmp_path / "members")
  count = 4 if sweep else 2
  assert jax.tree.leaves(result.state.params)[0].shape[0] == count
  assert result.recipe.member_loop == loop and result.recipe.dropout_key
  assert result.summary["steps_per_call"] == steps_per_call
  if sweep:  # Each member's own weight decay, in its optimizer state.
    assert list(result.state.opt_state.hyperparams["weight_decay"]) == (
        tolerances.stored32([0, 0, 0.01, 0.01]))
  described = members.Members.from_config(config)
  for member, (seed, wd) in SINGLES.items():
    if member >= count:
      continue
    assert described.describe(member) == {"seed": seed, **(
        {"weight_decay": wd} if sweep else {})}
    mine = members.select(result.state, member)
    single, start = single_runs[member]
    # A kernel's gradient and batch norm's statistics: 32 images x 7 x 7
    # positions of the stride-4 convolution.
    n_terms = tolerances.sums_of(start.params, batch=32, positions=7 * 7)
    _assert_close(mine.params, single.state.params, start.params, n_terms)
    _assert_close(mine.rest, single.state.rest, start.rest, n_terms)
    assert (result.summary["members"][member]["final_test_accuracy"]
            == single.summary["final_test_accuracy"])


KILL_EPOCHS = 6


def _train_command(config_path, workdir):
  return [sys.executable, "-m", "mnist_jax.main", f"--config={config_path}",
          f"--workdir={workdir}"]


def _learning_metrics(workdir):
  """metrics.jsonl without the timings, which differ run to run."""
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if "seconds" not in k and "per_sec" not in k}
          for r in records]


def test_plugins_on_four_devices_match_one_and_resume_bitwise_after_sigkill(
    plugin_dir, tmp_path):
  # A config file beside plugin.py naming it relatively; the commands run
  # in the repository, so plugin.py is found in the config's folder. The
  # model is named as a module on the path (module:attribute).
  folder = tmp_path / "cfg"
  folder.mkdir()
  (folder / "plugin.py").write_text(PLUGIN)
  (tmp_path / "packages").mkdir()
  (tmp_path / "packages" / "user_models.py").write_text(PLUGIN)
  config_path = folder / "plugin_run.py"
  config_path.write_text(CONFIG.format(
      where="", batch_size=16, num_epochs=KILL_EPOCHS).replace(
          '"plugin.py:Net"', '"user_models:Net"'))
  assert '"user_models:Net"' in config_path.read_text()
  env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path / 'packages'}",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  reference = subprocess.run(_train_command(config_path, tmp_path / "reference"),
                             env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=300)
  assert reference.returncode == 0, reference.stderr[-3000:]
  assert "4 device(s)" in reference.stderr

  workdir = tmp_path / "killed"
  proc = subprocess.Popen(_train_command(config_path, workdir), env=env, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  # orbax renames a checkpoint's folder to its epoch only once it is complete.
  while not (workdir / "checkpoints" / "1").is_dir():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no checkpoint within 120 s"
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert len(_learning_metrics(workdir)) < KILL_EPOCHS  # Really interrupted.
  resumed = subprocess.run(_train_command(config_path, workdir), env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from the checkpoint of epoch" in resumed.stderr
  assert _learning_metrics(workdir) == _learning_metrics(tmp_path / "reference")
  final = lambda w: checkpoint_params(w / "checkpoints" / str(KILL_EPOCHS) / "state",
                                      part=())
  for a, b in zip(final(workdir), final(tmp_path / "reference"), strict=True):
    np.testing.assert_array_equal(a, b)  # Bitwise, batch statistics included.

  # The same run on this process's one device: the 4 devices' split batch
  # sums in another order. KILL_EPOCHS x 5 steps of sums of up to 16 x 7 x 7
  # terms (a kernel's gradient, batch norm's statistics):
  # tolerances.float32_steps, a step moving a loss by less than the loss, as
  # tests/test_sharding.py. Catches a loss or batch statistics of one
  # device's share (4 images of 16).
  one = training.train_and_evaluate(_config(plugin_dir, num_epochs=KILL_EPOCHS),
                                    tmp_path / "one")
  assert one.summary["device_count"] == 1
  n_terms = tolerances.sums_of(one.state.params, batch=16, positions=7 * 7)
  steps = KILL_EPOCHS * 5
  for single, four in zip(_learning_metrics(tmp_path / "one"),
                          _learning_metrics(tmp_path / "reference"), strict=True):
    for key in ("train_loss", "test_loss"):
      assert abs(single[key] - four[key]) <= tolerances.float32_steps(
          steps, n_terms, abs(single[key])), key
    assert single["test_accuracy"] == four["test_accuracy"]


def test_bfloat16_validation_and_early_stopping_with_plugins(plugin_dir, tmp_path):
  # An improvement of more than 1 is impossible after the first epoch: the
  # run stops after 1 + patience epochs whatever it learns.
  config = _config(plugin_dir, num_epochs=6, dtype="bfloat16", validation_size=20,
                   early_stopping_patience=2, early_stopping_min_delta=1.0)
  called_with = _plugin_module(plugin_dir).CALLED_WITH
  called_with.clear()
  result = training.train_and_evaluate(config, tmp_path / "run")
  # The plugin model computes in bfloat16: training with a dropout key,
  # evaluation without.
  assert {("bfloat16", True), ("bfloat16", False)} <= set(called_with)
  assert result.summary["stopped_early_at_epoch"] == 3
  history = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text(
  ).splitlines()]
  assert [r["epoch"] for r in history] == [1, 2, 3]
  assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["validation_loss"])
             for r in history)
  assert result.summary["selected_on"] == "validation"
  best = max(history, key=lambda r: (r["validation_accuracy"], -r["validation_loss"]))
  assert result.summary["best_epoch"] == best["epoch"]
  assert (tmp_path / "run" / "best_checkpoint" / str(best["epoch"])).is_dir()
  # Parameters stay float32, and they moved (60 images, batch 16: 3 steps
  # an epoch).
  assert {x.dtype for x in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
  start = state_lib.build(config, 10, 3).state
  assert any(not np.array_equal(a, b) for a, b in zip(
      _leaves(result.state.params), _leaves(start.params), strict=True))


def test_objects_and_the_loss_protocol(plugin_dir, tmp_path):
  """mnist_jax.train with objects; the loss is the plugin's, given one-hot
  labels smoothed by label_smoothing and mixed by mixup; the augmentation's
  images are the model's; the view sees the test images."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("user_objects", plugin_dir / "plugin.py")
  user = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(user)  # A module no import finds: this process only.
  seen = {"labels": [], "logits": [], "views": []}

  def record(name, value):
    jax.debug.callback(lambda v: seen[name].append(np.asarray(v)), value)

  def zero_loss(logits_BK, labels_BK):
    record("labels", labels_BK)
    record("logits", logits_BK)
    return 0.0 * jnp.sum(logits_BK * labels_BK, -1)

  def plain_sgd(learning_rate, config):
    import optax  # pylint: disable=g-import-not-at-top
    return optax.sgd(learning_rate)

  def blank(key, x_BHWC):
    return jnp.zeros_like(x_BHWC)

  def view(x_BHWC):
    record("views", x_BHWC)
    return x_BHWC[:, :, ::-1, :]

  config = _config(plugin_dir, num_epochs=1, label_smoothing=0.1, mix_alpha=1.0,
                   dropout=0.0)
  result = mnist_jax.train(config, tmp_path / "run", model=user.Net,
                           optimizer=plain_sgd, loss=zero_loss,
                           augment=["mixup", blank], tta=[view])
  trained = result.model.trained
  assert trained.config.model.startswith("user_objects:Net@")
  # A loss of 0 has no gradient: SGD leaves the weights as they started
  # (bitwise: each update is exactly 0). Batch norm's statistics move.
  start = state_lib.build(trained.config, 10, 5).state
  for got, want in zip(_leaves(trained.state.params), _leaves(start.params), strict=True):
    np.testing.assert_array_equal(got, want)
  assert any(not np.array_equal(a, b) for a, b in zip(
      _leaves(trained.state.rest), _leaves(start.rest), strict=True))
  assert [r["train_loss"] for r in result.history] == [0.0]

  # 5 steps of 16 one-hot rows, smoothed (0.1 / 10 at least, 1 - 0.1 + 0.01
  # at most) and mixed (most rows two classes, each by its weight).
  labels = np.concatenate(seen["labels"])
  assert labels.shape == (5 * 16, 10)
  # Each row a sum of 10 float32 terms of at most 1.
  assert np.abs(labels.sum(-1) - 1).max() <= tolerances.float32_sum(10, 1.0)
  floor = 0.1 / 10
  assert labels.min() == pytest.approx(floor, rel=tolerances.float32_relative(4))
  assert labels.max() <= 1 - 0.1 + floor + tolerances.float32_relative(4)
  above = (labels > floor * (1 + tolerances.float32_relative(4))).sum(-1)
  assert (above >= 1).all() and (above == 2).mean() > 0.5  # Mixed pairs.
  # The model saw the augmentation's blank images: one logit row for all
  # (tolerances.logits: the same sums in another row).
  for logits_BK in seen["logits"]:
    tolerances.assert_within(logits_BK, logits_BK[:1],
                             tolerances.logits(logits_BK, start.params), "blank rows")
  # The view took the normalised test images (not blanked), every one.
  views = np.concatenate(seen["views"])
  assert views.dtype == np.float32 and views.shape[1:] == (28, 28, 1)
  assert len(views) >= 80 and np.abs(views).max(axis=(1, 2, 3)).min() > 0


COMPARE_CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist160"
  config.model = {model!r}
  config.optimizer = {optimizer!r}
  config.learning_rate = {learning_rate}
  config.loss = {loss!r}
  config.batch_size = 16
  config.num_epochs = 5
  config.plots = False
  return config
'''


def test_compare_a_plugin_config_against_a_builtin(tmp_path):
  (tmp_path / "plugin.py").write_text(PLUGIN)
  for name, model, optimizer, lr, loss in (
      ("mine", "plugin.py:Net", "plugin.py:make_tx", 0.05, "plugin.py:loss"),
      ("builtin", "mlp", "adam", 1e-3, "cross_entropy")):
    (tmp_path / f"{name}.py").write_text(COMPARE_CONFIG.format(
        model=model, optimizer=optimizer, learning_rate=lr, loss=loss))
  result = run_module("mnist_jax.compare", tmp_path / "mine.py", tmp_path / "builtin.py",
                      "--seeds=1", "--override=num_epochs=1", "--override=momentum=0.9",
                      f"--workdir={tmp_path / 'cmp'}")
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads((tmp_path / "cmp" / "comparison-mine-vs-builtin.json").read_text())
  assert list(record["configs"]) == ["mine", "builtin"]
  for name in ("mine", "builtin"):
    runs = record["configs"][name]["runs"]
    assert [r["seed"] for r in runs] == [0]
    assert len(runs[0]["test_accuracy"]) == 1  # The override applied.
  table = (tmp_path / "cmp" / "comparison-mine-vs-builtin.md").read_text()
  assert "plugin.py:Net" in table and "| builtin | mnist160 | mlp | adam | 1 |" in table
