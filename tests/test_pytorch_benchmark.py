"""benchmarks/pytorch_cpu.py: both sides of it on a tiny synthetic data set."""

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, synthetic_split
from mnist_jax import data, optim


def test_without_torch_the_benchmark_is_one_line_naming_the_extra():
  # Runs in the core environment (no torch mark): torch is hidden from a
  # fresh process, as if the benchmark extra were not installed.
  script = ("import runpy, sys; sys.modules['torch'] = None; "
            "sys.argv = ['pytorch_cpu.py', '--seeds=1', '--members=0']; "
            "runpy.run_path('benchmarks/pytorch_cpu.py', run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip() == (
      "error: PyTorch is not installed; pip install -e '.[benchmark]'")


# The rest need the benchmark extra (torch); CI's second environment runs them.
@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location(
      "pytorch_cpu", REPO / "benchmarks" / "pytorch_cpu.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _tiny_dataset() -> data.Dataset:
  train_images, train_labels = synthetic_split(600, 10, seed=1)
  test_images, test_labels = synthetic_split(256, 10, seed=2)
  return data.Dataset("tiny", tuple(map(str, range(10))), train_images,
                      train_labels.astype(np.int32), test_images,
                      test_labels.astype(np.int32))


@pytest.mark.torch
def test_the_peer_recipe_is_the_one_mnist_speedrun_reproduces(bench):
  # Catches the shipped config drifting from the recipe it claims to be:
  # its schedule (OneCycleLR), init bound, betas and input statistics.
  config = bench.speedrun_config(seed=0)
  total = 235
  model = bench.make_torch_model(10, seed=0)
  optimizer, scheduler = bench.make_torch_optimizer(model, total)
  torch_lrs = []
  for _ in range(total):
    torch_lrs.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
  schedule = optim.schedule(config, total)
  np.testing.assert_allclose(torch_lrs, [float(schedule(k)) for k in range(total)],
                             rtol=2e-5)
  assert optimizer.param_groups[0]["betas"] == (config.adam_b1, config.adam_b2)
  assert (config.pixel_mean, config.pixel_std) == (bench.RECIPE["mean"],
                                                   bench.RECIPE["std"])
  assert config.init == "torch" and config.num_epochs == bench.RECIPE["epochs"]
  # What mnist_speedrun adds to the recipe: label smoothing, nothing else.
  assert config.label_smoothing == 0.1
  bound = 1 / math.sqrt(800)
  weights = model.fc1.weight.detach().numpy()
  assert np.abs(weights).max() <= bound and weights.std() == pytest.approx(
      bound / math.sqrt(3), rel=0.05)


@pytest.mark.torch
def test_both_sides_train_and_the_record_summarises_them(bench):
  dataset = _tiny_dataset()
  config = bench.speedrun_config(seed=0, overrides=["batch_size=64"])
  torch_run, torch_info = bench.prepare_torch(dataset, warmup_steps=1)
  jax_run, jax_info = bench.prepare_jax(dataset, config, warmup_steps=1)
  assert torch_info["num_params"] == jax_info["num_params"] == 215_194
  # PyTorch keeps the last partial batch (600 = 2 x 256 + 88); mnist_jax drops it.
  assert torch_info["steps_per_epoch"] == 3 and jax_info["steps_per_epoch"] == 9
  runs = {"torch": [torch_run(0), torch_run(1)], "jax": [jax_run(0), jax_run(1)]}
  for name, rs in runs.items():
    for r in rs:
      assert r["train_seconds"] > 0 and 0 <= r["test_accuracy"] <= 1, name
      # The classes are bands of rows: one epoch of either learns them.
      assert r["test_accuracy"] > 0.5, name
  summary = bench.summarize(runs["jax"], 1, 576, target=0.5)
  accuracies = [r["test_accuracy"] for r in runs["jax"]]
  assert summary["below_target"] == sum(a < 0.5 for a in accuracies)
  assert summary["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))


@pytest.mark.torch
def test_summary_counts_runs_below_target_and_times_only_those_reaching_it(bench):
  runs = [{"train_seconds": 10.0, "test_accuracy": 0.991},
          {"train_seconds": 12.0, "test_accuracy": 0.989},
          {"train_seconds": 14.0, "test_accuracy": 0.993}]
  summary = bench.summarize(runs, 1, 1000, target=0.99)
  assert summary["below_target"] == 1
  assert summary["time_to_target"]["mean"] == pytest.approx(12.0)  # 10 and 14.
  assert summary["train_seconds"]["median"] == 12.0
  slower = bench.summarize([dict(r, train_seconds=2 * r["train_seconds"]) for r in runs],
                           1, 1000, target=0.99)
  assert bench.compare(summary, slower)["jax_over_torch_seconds"] == pytest.approx(2.0)


@pytest.mark.torch
def test_members_mode_trains_every_seed_in_one_run(bench):
  dataset = _tiny_dataset()
  config = bench.speedrun_config(seed=0, overrides=["batch_size=64"], num_seeds=3)
  run, info = bench.prepare_jax(dataset, config, warmup_steps=0)
  result = run(0)
  assert info["members"] == 3 and len(result["test_accuracy"]) == 3


def test_the_tables_show_the_recipe_record():
  # Catches a renderer that shows the wrong framework's row, drops the runs
  # below the target or the num_seeds comparison.
  import importlib
  sys.path.insert(0, str(REPO / "benchmarks"))
  tables = importlib.import_module("tables")
  framework = lambda seconds, accuracies: {
      "train_seconds": {"median": seconds, "min": seconds - 1, "max": seconds + 1},
      "images_per_sec": {"median": 60000 / seconds},
      "test_accuracy": {"mean": sum(accuracies) / 2, "std": 0.001,
                        "min": min(accuracies), "max": max(accuracies)},
      "below_target": sum(a < 0.99 for a in accuracies),
      "time_to_target": {"mean": seconds}, "runs": [{}, {}]}
  record = {
      "benchmark": "pytorch_recipe_vs_speedrun", "target": 0.99, "seeds": 2,
      "threads": 2, "torch": {"version": "2.13.0"},
      "machine": {"backend": "cpu", "device_kind": "cpu", "device_count": 4,
                  "cpu": "Xeon", "cpu_count": 2, "jax": "0.10.2", "flax": "0.12.8",
                  "date": "2026-11-29", "git_commit": "abc", "xla_flags": ""},
      "results": {"torch": framework(10.0, [0.991, 0.989]),
                  "jax": framework(8.0, [0.992, 0.993])},
      "jax_over_torch_seconds": 0.8, "differs": True,
      "members": {"members": 2, "member_loop": "unroll", "train_seconds": 12.0,
                  "torch_sequential_train_seconds": 20.0,
                  "jax_over_torch_seconds": 0.6, "below_target": 0,
                  "test_accuracy": {"mean": 0.9925, "min": 0.992, "max": 0.993}}}
  text = "\n".join(tables.RENDERERS[record["benchmark"]]("r.json", record))
  assert "| PyTorch recipe | 10.00 (9.00..11.00) | 6,000 | 99.00% ± 0.10 (98.90..99.10) | 1 of 2 |" in text
  assert "| mnist_jax | 8.00 (7.00..9.00) | 7,500 | 99.25% ± 0.10 (99.20..99.30) | 0 of 2 |" in text
  assert "PyTorch seconds: 0.80;" in text
  assert "12.00 s against 20.00 s for 2 sequential PyTorch runs (0.60)" in text
