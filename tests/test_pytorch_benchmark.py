"""benchmarks/pytorch_cpu.py: the recipe it times, its record end to end on
mnist160 and on an RGB .npz (both read by data.load), and its summaries."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tolerances

from conftest import REPO, run_script
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
  # optax's float32 rates against PyTorch's float64 ones: absolutely within
  # tolerances.onecycle (a relative bound fails near the end, where the rate
  # falls to peak / 25e4).
  np.testing.assert_allclose(torch_lrs, [float(schedule(k)) for k in range(total)],
                             rtol=0, atol=tolerances.onecycle(config.learning_rate))
  assert optimizer.param_groups[0]["betas"] == (config.adam_b1, config.adam_b2)
  assert (config.pixel_mean, config.pixel_std) == (bench.RECIPE["mean"],
                                                   bench.RECIPE["std"])
  assert config.init == "torch" and config.num_epochs == bench.RECIPE["epochs"]
  # What mnist_speedrun changes in the recipe: label smoothing, and fewer
  # images (280 steps of 128: 35,840) where the recipe takes one epoch at 256.
  assert config.label_smoothing == 0.1
  assert (config.batch_size, config.steps_per_epoch) == (128, 280)
  assert bench.RECIPE["batch_size"] == 256
  bound = 1 / math.sqrt(800)
  weights = model.fc1.weight.detach().numpy()
  # Uniform in +-bound: std bound / sqrt(3). The sample std of n draws has a
  # standard error of about bound / sqrt(15 n) (the variance of s^2 is
  # (mu4 - sigma^4) / n = 4 bound^4 / (45 n)); 5 of them (a fixed seed draws
  # the same weights on every CPU).
  n = weights.size
  assert np.abs(weights).max() <= bound and weights.std() == pytest.approx(
      bound / math.sqrt(3), abs=5 * bound / math.sqrt(15 * n))


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


def _speedrun_params(image_shape, num_classes: int) -> int:
  """The recipe's parameters for (H, W, C) images: conv 5x5 C->24, conv 3x3
  24->32, dense (pooled H x W x 32)->256, dense 256->classes, with biases."""
  h, w, c = image_shape
  pooled = (((h - 4) // 2 - 2) // 2) * (((w - 4) // 2 - 2) // 2)
  return ((5 * 5 * c + 1) * 24 + (3 * 3 * 24 + 1) * 32 + (pooled * 32 + 1) * 256
          + (256 + 1) * num_classes)


@pytest.mark.torch
def test_torch_gets_nchw_images_with_nchw_strides_standardised(bench, rgb_npz):
  # Catches [N, H, W, C] handed to conv2d (the crash on real data), a
  # reshape or a transposed permute in place of NHWC -> NCHW, and the
  # channels-last strides of a bare permute (the same values, but
  # PyTorch's slower channels-last convolutions: pytorch_cpu.py).
  import torch  # pylint: disable=g-import-not-at-top
  for dataset in (data.load("mnist160"), data.load(str(rgb_npz))):
    images_NHWC = np.array(dataset.test_images)
    n, h, w, c = images_NHWC.shape
    x = bench.torch_normalize(torch.from_numpy(images_NHWC))
    assert x.shape == (n, c, h, w) and x.dtype == torch.float32
    assert x.stride() == (c * h * w, h * w, w, 1)
    mean, std = bench.RECIPE["mean"], bench.RECIPE["std"]
    expected = (images_NHWC.transpose(0, 3, 1, 2).astype(np.float32) / 255 - mean) / std
    # Three float32 roundings (x/255 <= 1, minus the mean, over the std
    # 0.3081: x3.25) of values up to (1 - 0.1307) / 0.3081 = 2.83 in size:
    # under (2 x 3.25 + 2.83) x 2^-24 apart, whatever the order of the ops.
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=10 * 2.0**-24)


# The benchmark as a user runs it, in tiny mode: a few seeds of each side,
# alternating, and the num_seeds run against the sequential PyTorch runs.
@pytest.fixture(scope="module")
def mnist160_record(tmp_path_factory, script_env):
  out = tmp_path_factory.mktemp("pytorch") / "record.json"
  run_script("benchmarks/pytorch_cpu.py", "--dataset=mnist160", "--seeds=2",
             "--members=2", "--warmup_steps=1", "--override=batch_size=16", "--override=steps_per_epoch=0",
             f"--out={out}", env=script_env)
  return json.loads(out.read_text())


@pytest.mark.torch
def test_the_benchmark_runs_both_sides_seed_by_seed_on_mnist160(mnist160_record):
  record = mnist160_record
  assert record["dataset"] == "mnist160" and record["seeds"] == 2
  expected = _speedrun_params((28, 28, 1), 10)
  assert expected == 215_194  # The recipe's count, as published.
  assert record["torch"]["num_params"] == record["jax"]["num_params"] == expected
  # 80 training images: one partial batch of the recipe's 256; 5 of 16.
  assert record["torch"]["steps_per_epoch"] == 1
  assert record["jax"]["steps_per_epoch"] == 5
  for name in ("torch", "jax"):
    result = record["results"][name]
    assert [r["seed"] for r in result["runs"]] == [0, 1], name
    accuracies = [r["test_accuracy"] for r in result["runs"]]
    assert all(0 <= a <= 1 for a in accuracies), name
    assert result["below_target"] == sum(a < record["target"] for a in accuracies)
  medians = [record["results"][n]["train_seconds"]["median"] for n in ("jax", "torch")]
  assert record["jax_over_torch_seconds"] == pytest.approx(medians[0] / medians[1],
                                                           rel=1e-12)


@pytest.mark.torch
def test_the_members_run_trains_every_seed_against_as_many_torch_runs(mnist160_record):
  members = mnist160_record["members"]
  torch_runs = mnist160_record["results"]["torch"]["runs"]
  assert members["members"] == 2 and len(members["test_accuracies"]) == 2
  assert members["torch_sequential_train_seconds"] == pytest.approx(
      sum(r["train_seconds"] for r in torch_runs), rel=1e-12)


@pytest.mark.torch
def test_the_benchmark_runs_on_rgb_images(rgb_npz, tmp_path, script_env):
  out = tmp_path / "record.json"
  run_script("benchmarks/pytorch_cpu.py", f"--dataset={rgb_npz}", "--seeds=1",
             "--members=0", "--warmup_steps=0", "--override=batch_size=16", "--override=steps_per_epoch=0",
             f"--out={out}", env=script_env)
  record = json.loads(out.read_text())
  # Both sides' first convolution takes the 3 channels.
  assert record["torch"]["num_params"] == record["jax"]["num_params"] == (
      _speedrun_params((28, 28, 3), 10))
  assert record["members"] is None


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
