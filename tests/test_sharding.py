"""Sharding over virtual CPU devices: each run is a fresh process with its own XLA_FLAGS."""

import json
import os
import subprocess
import sys

import tolerances
from conftest import REPO, run_module


def _train(shared_data, workdir, num_devices, *flags):
  env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}
  return run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                    f"--config.data_dir={shared_data}", f"--workdir={workdir}",
                    *flags, env=env)


def test_eight_devices_train_like_one(shared_data, tmp_path):
  flags = ("--config.num_epochs=3", "--config.batch_size=16",
           "--config.eval_batch_size=40")
  runs = {}
  for n in (1, 8):
    result = _train(shared_data, tmp_path / f"d{n}", n, *flags)
    assert result.returncode == 0, result.stderr
    assert f"{n} device(s)" in result.stderr
    runs[n] = [json.loads(l) for l in
               (tmp_path / f"d{n}" / "metrics.jsonl").read_text().splitlines()]
  assert json.loads((tmp_path / "d8" / "summary.json").read_text())["device_count"] == 8
  # A checkpoint made on 8 devices restores on 1 (e.g. to evaluate on a laptop).
  evaluated = run_module("mnist_jax.evaluate", f"--workdir={tmp_path / 'd8'}",
                         env={"XLA_FLAGS": ""})
  assert evaluated.returncode == 0, evaluated.stderr
  assert (json.loads((tmp_path / "d8" / "eval.json").read_text())["test_accuracy"]
          == runs[8][-1]["test_accuracy"])
  # 15 steps (3 epochs of 80 / 16) whose sums, of up to 16 x 28 x 28 terms
  # (a kernel's gradient), round otherwise on 8 devices: tolerances.float32_steps,
  # a step moving a loss by less than the loss. Catches losses averaged over
  # one device's share (2 images of 16). An accuracy over 80 images moves
  # only if two logits of an image are that close: equal.
  from mnist_jax.trained import load_trained  # pylint: disable=g-import-not-at-top
  n_terms = tolerances.sums_of(load_trained(tmp_path / "d1").state.params,
                               batch=16, positions=28 * 28)
  for one, eight in zip(runs[1], runs[8], strict=True):
    for key in ("train_loss", "test_loss"):
      assert abs(one[key] - eight[key]) <= tolerances.float32_steps(
          15, n_terms, abs(one[key])), key
    assert one["test_accuracy"] == eight["test_accuracy"]


def test_batch_that_does_not_divide_by_the_devices(shared_data, tmp_path):
  result = _train(shared_data, tmp_path / "run", 8, "--config.batch_size=12")
  assert result.returncode == 1
  assert ("error: config.batch_size=12 does not divide by the 8 devices of the "
          "mesh; use a multiple of 8, e.g. 8 or 16") in result.stderr


def test_auto_cpu_devices_take_about_64_images_each():
  from mnist_jax import runtime
  assert runtime.auto_cpu_devices(128, cores=2) == 2
  assert runtime.auto_cpu_devices(256, cores=2) == 4
  assert runtime.auto_cpu_devices(512, cores=2) == 8
  assert runtime.auto_cpu_devices(4096, cores=2) == 8  # At most 4 per core.
  assert runtime.auto_cpu_devices(16, cores=2) == 2    # At least one per core.
  assert runtime.auto_cpu_devices(96, cores=8) == 8
  assert runtime.auto_cpu_devices(100, cores=8) == 5   # The largest divisor.
  assert runtime.auto_cpu_devices(7, cores=2) == 1
  assert runtime.auto_cpu_devices(256, cores=2, dense_only=True) == 1  # No convolutions.


def test_cpu_devices_default_explicit_and_xla_flags(shared_data, tmp_path):
  from mnist_jax import runtime
  expected = runtime.auto_cpu_devices(16, len(os.sched_getaffinity(0)))
  flags = ("--config.num_epochs=1", "--config.batch_size=16", "--config.plots=False")
  auto = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                    f"--config.data_dir={shared_data}", f"--workdir={tmp_path / 'a'}",
                    *flags, env={"XLA_FLAGS": ""})
  assert auto.returncode == 0, auto.stderr
  assert f"backend cpu, {expected} device(s)" in auto.stderr
  explicit = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                        f"--config.data_dir={shared_data}", f"--workdir={tmp_path / 'b'}",
                        *flags, "--config.cpu_devices=4", env={"XLA_FLAGS": ""})
  assert explicit.returncode == 0, explicit.stderr
  assert "backend cpu, 4 device(s)" in explicit.stderr
  # A count in $XLA_FLAGS is the user's own choice: it wins.
  pinned = _train(shared_data, tmp_path / "c", 1, *flags, "--config.cpu_devices=4")
  assert pinned.returncode == 0, pinned.stderr
  assert "backend cpu, 1 device(s)" in pinned.stderr


_STEPS_TWO_WAYS = """
import json
import jax, jax.numpy as jnp, numpy as np, optax
from configs import default
from mnist_jax import sharding, steps
from mnist_jax import state as state_lib
config = default.get_config()
config.model, config.optimizer, config.learning_rate = "speedrun", "adam", 1e-3
config.batch_size = 256
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
labels = rng.integers(0, 10, 256).astype(np.int32)
built = state_lib.build(config, 10, 10)
# Moves nothing and keeps the step's gradient (as the step reduced it) as its state.
keep = optax.GradientTransformation(
    lambda params: params,
    lambda grads, _, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))
start = built.state.replace(opt_state=keep.init(built.state.params))
train_step = lambda tx: lambda s, x, y: steps.train_step(
    built.graphs, built.recipe, tx, s, x, y)

def run(devices, tx, state, count):
  mesh = sharding.make_mesh(devices)
  state = jax.device_put(state, sharding.replicated(mesh))
  batch = jax.device_put((images, labels), sharding.batch_sharded(mesh))
  step = jax.jit(train_step(tx))
  for _ in range(count):
    state, (loss_sum, _, _) = step(state, *batch)
  return state, float(loss_sum)

leaves = lambda tree: [np.asarray(a, np.float64) for a in jax.tree.leaves(tree)]
runs = {}
for name, devices in (("one", jax.devices()[:1]), ("split", jax.devices())):
  kept, loss_sum = run(devices, keep, start, 1)
  adam, _ = run(devices, built.tx, built.state, 3)
  runs[name] = (loss_sum, leaves(kept.opt_state), leaves(adam.params))
# The batch's gradient is the mean of the examples' own: their mean
# magnitude, leaf by leaf, is what its sum's rounding scales with.
per_example = jax.jit(jax.vmap(lambda x, y: train_step(keep)(
    start, x[None], y[None])[0].opt_state))
magnitude = [0.0] * len(runs["one"][1])
for i in range(0, len(images), 32):
  chunk = per_example(images[i:i + 32], labels[i:i + 32])
  magnitude = [m + np.abs(np.asarray(g, np.float64)).sum(0)
               for m, g in zip(magnitude, jax.tree.leaves(chunk))]
(one_loss, one_grads, one_params), (split_loss, split_grads, split_params) = (
    runs["one"], runs["split"])
print(json.dumps({
    "loss_sum": [one_loss, split_loss],
    "grad_diff": [float(np.abs(a - b).max()) for a, b in zip(one_grads, split_grads)],
    "grad_max": [float(np.abs(a).max()) for a in one_grads],
    "magnitude": [float(m.max()) / len(images) for m in magnitude],
    "param_diff": max(float(np.abs(a - b).max())
                      for a, b in zip(one_params, split_params, strict=True))}))
"""


def test_the_default_cpu_split_computes_what_one_device_does():
  """Batch 256 on CPU's default 4 devices (on 2 cores) against 1 device, on
  random inputs: the first step's loss and gradient agree to float32
  rounding, the parameters after three Adam steps to what Adam allows."""
  from mnist_jax import runtime
  devices = runtime.auto_cpu_devices(256, cores=2)
  result = subprocess.run(
      [sys.executable, "-c", _STEPS_TWO_WAYS], cwd=REPO, capture_output=True,
      text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
  assert result.returncode == 0, result.stderr
  got = json.loads(result.stdout.splitlines()[-1])
  batch = 256
  # The split reorders the sums over the batch (per device, then across
  # devices); each example's values also pass through speedrun's own sums,
  # whose blocking may change with the per-device batch: 5x5x1, 3x3x24,
  # 5x5x32, 256 and 10 terms forward, 10, 256 and 3x3x32 back.
  forward, backward = 25 + 216 + 800 + 256 + 10, 10 + 256 + 288
  # The loss: a sum of B positive losses, so sum|terms| is the loss itself.
  # Catches a loss reduced over one device's quarter of the batch.
  one_loss, split_loss = got["loss_sum"]
  assert abs(one_loss - split_loss) <= tolerances.float32_sum(batch + forward, one_loss)
  # A gradient entry: a sum of at most B x 24 x 24 terms (conv1's kernel, over
  # its output positions), taken as the whole step's for every leaf; their
  # magnitude: the leaf's largest mean |per-example gradient|. That bound
  # also holds a ReLU or a max-pool that rounds the other way for one
  # example (a whole term moved, not rounded: 0.4 to 1 of the bound here).
  # Catches a split that drops half the batch (4 to 7 times the bound) or
  # sums the devices' gradients instead of averaging them (45 times); the
  # parameters after Adam steps show neither (next check).
  n_terms = batch * 24 * 24 + forward + backward
  for diff, magnitude, largest in zip(got["grad_diff"], got["magnitude"],
                                      got["grad_max"], strict=True):
    bound = tolerances.float32_sum(n_terms, magnitude)
    assert diff <= bound
    assert bound < largest / 4  # Sharp enough to see a quarter of the gradient.
  # Three Adam steps: a parameter whose gradient is within rounding of zero
  # may move by lr one way on one device and the other way on four, so this
  # catches only gross errors (an update applied once per device, NaN).
  assert got["param_diff"] <= tolerances.adam_steps(1e-3, 3)
