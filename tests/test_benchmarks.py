"""The benchmark scripts run and write complete records (tiny settings; no timing asserted)."""

import json
import subprocess
import sys

from conftest import REPO


def _run(script, *args):
  result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
  assert result.returncode == 0, result.stderr
  return result


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
  assert record["results"]["host_loop"]["ratio_to_host_loop"] == 1.0
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
  assert record["strategies"]["results"]["host_loop"]["ratio_to_host_loop"] == 1.0
  (speedrun,) = record["time_to_accuracy"]
  assert speedrun["seeds"] == 1 and len(speedrun["runs"]) == 1
  assert 0 < speedrun["final_test_accuracy"]["mean"] <= 1
  assert [r["device_count"] for r in record["scaling"]] == [1, 2]
  assert record["scaling"][0]["speedup_over_1_device"] == 1.0
  assert [(r["members"], r["member_loop"]) for r in record["members"]] == [
      (1, "auto"), (2, "vmap"), (2, "unroll")]
  assert record["members"][0]["speedup_over_sequential"] == 1.0

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
