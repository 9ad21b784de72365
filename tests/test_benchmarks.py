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
