"""Sharding over virtual CPU devices: each run is a fresh process with its own XLA_FLAGS."""

import json
import os
import subprocess
import sys

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
  for one, eight in zip(runs[1], runs[8], strict=True):
    for key in ("train_loss", "test_loss"):
      # Equal up to floating-point reduction order.
      assert abs(one[key] - eight[key]) <= 1e-4 * abs(one[key]), key
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


_ONE_STEP_TWO_WAYS = """
import jax, numpy as np
from configs import default
from mnist_jax import sharding, steps
from mnist_jax import state as state_lib
config = default.get_config()
config.model, config.optimizer, config.learning_rate = "speedrun", "adam", 1e-3
config.batch_size = 256
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
labels = rng.integers(0, 10, 256).astype(np.int32)
params = []
for devices in (jax.devices()[:1], jax.devices()):  # Plain, then CPU's default.
  mesh = sharding.make_mesh(devices)
  built = state_lib.build(config, 10, 10)
  graphs, recipe, state, tx = built.graphs, built.recipe, built.state, built.tx
  state = jax.device_put(state, sharding.replicated(mesh))
  batch = jax.device_put((images, labels), sharding.batch_sharded(mesh))
  step = jax.jit(lambda s, x, y: steps.train_step(graphs, recipe, tx, s, x, y))
  for _ in range(3):
    state, _ = step(state, *batch)
  params.append([np.asarray(p) for p in jax.tree.leaves(state.params)])
print(max(float(np.abs(a - b).max() / np.abs(a).max())
          for a, b in zip(*params, strict=True)))
"""


def test_the_default_cpu_split_computes_what_one_device_does():
  """Batch 256 on CPU's default 4 devices (on 2 cores) against 1 device:
  three Adam steps on random inputs agree to float32 rounding."""
  from mnist_jax import runtime
  devices = runtime.auto_cpu_devices(256, cores=2)
  result = subprocess.run(
      [sys.executable, "-c", _ONE_STEP_TWO_WAYS], cwd=REPO, capture_output=True,
      text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
  assert result.returncode == 0, result.stderr
  assert float(result.stdout.split()[-1]) < 1e-5
