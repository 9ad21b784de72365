"""The benchmark scripts run and write complete records (tiny settings; no timing asserted)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def _run(script, *args):
  result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr
  return result


def assert_ratios(rows, base, key):
  """Each row's `key` is its median rate over `base`'s: checked on every row,
  not only on the base's own 1.0."""
  for row in rows:
    assert row[key] == pytest.approx(row["images_per_sec"]["median"]
                                     / base["images_per_sec"]["median"], rel=1e-9)


def _rates(median: float) -> dict:
  """A rate_stats record: `median` images/s, 5% either way over 3 windows."""
  return {"median": median, "min": 0.95 * median, "max": 1.05 * median, "windows": 3}


def test_speedups_over_one_device_and_over_sequential_from_known_rates(monkeypatch):
  sys.path.insert(0, str(REPO / "benchmarks"))
  import run  # pylint: disable=g-import-not-at-top
  scaling_rates = {1: 1000.0, 2: 1800.0, 8: 1020.0}
  members_rates = {(1, "auto"): 1000.0, (2, "vmap"): 1500.0, (2, "unroll"): 2400.0}

  def child_throughput(args, models, batch, devices, members="1", loops="auto"):
    """The rows a child process would measure, at known rates."""
    if members == "1":  # The scaling section.
      return [{"model": m, "batch_size": batch, "device_count": devices,
               "images_per_sec": _rates(scaling_rates[devices])}
              for m in models.split(",")]
    return [{"model": models, "batch_size": batch, "device_count": devices,
             "members": n, "member_loop": loop, "images_per_sec": _rates(rate)}
            for (n, loop), rate in members_rates.items()]
  monkeypatch.setattr(run, "_child_throughput", child_throughput)
  monkeypatch.setattr(run.jax, "default_backend", lambda: "cpu")
  args = run.parse_args(["--device_counts=1,2,8", "--scaling_models=mlp",
                         "--members_models=mlp", "--members_counts=1,2"])

  scaling = run.scaling(args)
  assert [r["speedup_over_1_device"] for r in scaling] == pytest.approx([1.0, 1.8, 1.02])
  # 5% spreads: 1,020 overlaps 1,000, 1,800 does not.
  assert [r["differs_from_1_device"] for r in scaling] == [False, True, False]
  members = run.members_section(args)
  assert [r["speedup_over_sequential"] for r in members] == pytest.approx([1.0, 1.5, 2.4])
  assert [r["differs_from_sequential"] for r in members] == [False, True, True]


def test_strategies_benchmark_writes_a_record(shared_data, tmp_path):
  out = tmp_path / "strategies.json"
  _run("strategies.py", f"--data_dir={shared_data}", "--dataset=mnist160",
       "--model=mlp", "--batch_size=16", "--window_steps=4", "--chunk=2",
       "--repeats=2", f"--out={out}")
  record = json.loads(out.read_text())
  assert set(record["results"]) == {"host_loop", "device_step", "scan_chunk",
                                    "whole_window", "device_step_progress"}
  for result in record["results"].values():
    assert result["images_per_sec"]["windows"] == 2
    assert result["images_per_sec"]["min"] <= result["images_per_sec"]["median"]
  assert_ratios(record["results"].values(), record["results"]["host_loop"],
                "ratio_to_host_loop")
  assert record["machine"]["backend"] == "cpu" and record["machine"]["jax"]


def test_startup_benchmark_writes_a_record(shared_data, tmp_path):
  _run("startup.py", f"--data_dir={shared_data}", "--repeats=1",
       f"--out={tmp_path / 'startup.json'}")
  record = json.loads((tmp_path / "startup.json").read_text())
  assert set(record["medians"]) == {"no_cache", "cold_cache", "warm_cache"}
  assert record["medians"]["warm_cache"]["seconds_to_first_step"] > 0


def test_harness_writes_a_record_and_the_tables(shared_data, tmp_path):
  machine_dir = tmp_path / "results" / "cpu-cpu"
  out = machine_dir / "harness.json"
  _run("run.py", f"--data_dir={shared_data}", "--dataset=mnist160", "--models=mlp",
       "--batch_sizes=16", "--window_images=32", "--repeats=2",
       "--strategies_batch_size=8", "--strategies_window_images=64",
       "--speedruns=mnist_speedrun", "--seeds=1",
       "--override=dataset=mnist160", "--override=batch_size=16",
       "--override=num_epochs=1", "--device_counts=1,2", "--scaling_models=mlp",
       "--scaling_batch_size=16", "--members_models=mlp", "--members_counts=1,2",
       "--members_batch_size=16", f"--out={out}", "--no_tables")
  record = json.loads(out.read_text())
  assert [(r["model"], r["batch_size"]) for r in record["throughput"]] == [("mlp", 16)]
  assert record["throughput"][0]["compile_train_seconds"] > 0
  results = record["strategies"]["results"]
  assert_ratios(results.values(), results["host_loop"], "ratio_to_host_loop")
  (speedrun,) = record["time_to_accuracy"]
  assert speedrun["seeds"] == 1 and len(speedrun["runs"]) == 1
  assert 0 < speedrun["final_test_accuracy"]["mean"] <= 1
  assert [r["device_count"] for r in record["scaling"]] == [1, 2]
  assert_ratios(record["scaling"], record["scaling"][0], "speedup_over_1_device")
  assert [(r["members"], r["member_loop"]) for r in record["members"]] == [
      (1, "auto"), (2, "vmap"), (2, "unroll")]
  assert_ratios(record["members"], record["members"][0], "speedup_over_sequential")

  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO / "benchmarks"))
  import tables  # pylint: disable=g-import-not-at-top
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{tables.BEGIN}\nstale\n{tables.END}\noutro\n")
  tables.write_readme(readme, tmp_path / "results")
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n")
  assert "stale" not in text and "### cpu-cpu" in text
  assert "| mlp | 16 |" in text and "| mnist_speedrun | 99.0% | " in text
  assert "| mlp | 16 | 1 | 2 | unroll |" in text


def test_finetune_benchmark_writes_every_variant_with_its_overrides(shared_data,
                                                                     tmp_path):
  out = tmp_path / "finetune.json"
  _run("finetune.py", f"--data_dir={shared_data}", "--seeds=2", "--epochs=1",
       "--source_epochs=1", "--probe_learning_rate=0.05",
       "--override=dataset=mnist160", "--override=batch_size=16", f"--out={out}")
  record = json.loads(out.read_text())
  assert record["complete"] and record["probe_learning_rate"] == 0.05
  assert 0 <= record["source"]["final_test_accuracy"][0] <= 1
  runs = record["runs"]
  assert list(runs) == ["scratch-1", "finetune-1", "probe-1", "probe_lr-1"]
  for name, row in runs.items():
    assert len(row["final_test_accuracy"]) == 2, name  # One per seed.
    assert row["overrides"]["dataset"] == "mnist160"
    # The temporary source is named, never its path.
    assert "finetune-" not in row["command"] and str(tmp_path) not in row["command"]
  assert runs["scratch-1"]["overrides"]["init_from"] == ""
  assert {runs[n]["overrides"]["freeze"] for n in ("probe-1", "probe_lr-1")} == {"features"}
  assert runs["finetune-1"]["overrides"]["init_from"] == "<source workdir>"
  assert runs["probe_lr-1"]["overrides"]["learning_rate"] == 0.05
  assert "learning_rate" not in runs["probe-1"]["overrides"]


def test_host_memory_benchmark_reads_the_rss_after_each_epoch(shared_data, tmp_path):
  out = tmp_path / "memory.json"
  _run("host_memory.py", f"--data_dir={shared_data}", "--epochs=2",
       "--override=dataset=mnist160", "--override=batch_size=16", f"--out={out}")
  record = json.loads(out.read_text())
  assert [r["epoch"] for r in record["rss_after_each_epoch_mib"]] == [1, 2]
  # Training holds more than the bare interpreter did, and the peak bounds all.
  for reading in record["rss_after_each_epoch_mib"]:
    assert record["rss_before_training_mib"] < reading["rss_mib"] <= record["peak_rss_mib"]
  assert record["dataset"] == "mnist160" and record["machine"]["backend"] == "cpu"
