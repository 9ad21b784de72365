"""benchmarks/pytorch_cpu.py: both sides of it on a tiny synthetic data set."""

import importlib.util
import math

import numpy as np
import pytest

from conftest import REPO, synthetic_split

torch = pytest.importorskip("torch")

from mnist_jax import data, optim  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location(
      "pytorch_cpu", REPO / "benchmarks" / "pytorch_cpu.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _tiny_dataset() -> data.Dataset:
  train_images, train_labels = synthetic_split(512, 10, seed=1)
  test_images, test_labels = synthetic_split(256, 10, seed=2)
  return data.Dataset("tiny", tuple(map(str, range(10))), train_images,
                      train_labels.astype(np.int32), test_images,
                      test_labels.astype(np.int32))


def test_torch_schedule_follows_mnist_jax(bench):
  config = bench.speedrun_config(batch_size=64, epochs=2, seed=0)
  model = bench.make_torch_model(10, seed=0)
  optimizer, scheduler = bench.make_torch_optimizer(model, config, 8)
  torch_lrs = []
  for _ in range(16):
    torch_lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
  schedule = optim.schedule(config, 8)
  np.testing.assert_allclose(torch_lrs, [float(schedule(k)) for k in range(16)],
                             rtol=1e-6)


def test_both_frameworks_train_the_same_model(bench):
  dataset = _tiny_dataset()
  config = bench.speedrun_config(batch_size=64, epochs=1, seed=0)
  torch_run, torch_info = bench.prepare_torch(dataset, config, warmup_steps=2)
  jax_run, jax_info = bench.prepare_jax(dataset, config, warmup_steps=2)
  assert torch_info["num_params"] == jax_info["num_params"] == 215_194
  assert torch_info["steps_per_epoch"] == jax_info["steps_per_epoch"] == 8
  runs = {"torch": [torch_run()], "jax": [jax_run()]}
  for run in runs.values():
    assert all(math.isfinite(v) for v in run[0].values())
    assert run[0]["train_seconds"] > 0 and 0 <= run[0]["test_accuracy"] <= 1
  summaries = {name: bench.summarize(r, 8 * 64) for name, r in runs.items()}
  comparison = bench.compare(summaries["torch"], summaries["jax"])
  assert math.isfinite(comparison["jax_over_torch_seconds"])
