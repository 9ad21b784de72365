"""benchmarks/device_suite.sh in its tiny mode: every section, on CPU, in
seconds, writing a complete record (no timing asserted: the figures only
have to be what each section measures)."""

import json
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import run as harness  # pylint: disable=g-import-not-at-top,wrong-import-position
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import mnist_speedrun as speedrun_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import data, registry  # pylint: disable=g-import-not-at-top,wrong-import-position

SECTIONS = ["throughput", "time_to_accuracy", "members", "strategies", "memory"]


def _spread_ok(stats: dict, windows: int) -> bool:
  return stats["windows"] == windows and 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_tiny_suite_records_every_section(tmp_path):
  results, out = tmp_path / "results", tmp_path / "out"
  out.mkdir()
  env = {**os.environ, "PYTHON": sys.executable, "DEVICE_SUITE_RESULTS": str(results),
         "OUT": str(out)}
  done = subprocess.run(["bash", "benchmarks/device_suite.sh", "--tiny"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  (path,) = (results / "cpu-cpu").glob("*.json")
  record = json.loads(path.read_text())
  # The device tool's output folder gets a copy.
  assert json.loads((out / "cpu-cpu" / path.name).read_text()) == record
  assert record["sections"] == SECTIONS and "skipped" not in record
  assert all(section in record for section in SECTIONS)

  throughput = record["throughput"]
  assert [(r["model"], r["batch_size"], r["dtype"]) for r in throughput] == [
      ("mlp", 16, "float32"), ("mlp", 16, "bfloat16")]
  assert all(_spread_ok(r["images_per_sec"], 2) for r in throughput)

  (speedrun,) = record["time_to_accuracy"]
  assert speedrun["config"] == "mnist_speedrun" and speedrun["in_process"]
  assert [r["seed"] for r in speedrun["runs"]] == [0, 1] and speedrun["seeds"] == 2
  for r in speedrun["runs"]:
    assert 0 <= r["final_test_accuracy"] <= 1 and r["train_seconds"] > 0
    assert len(r["test_accuracy_by_epoch"]) == speedrun["num_epochs"] == 1

  members = record["members"]
  assert [(r["members"], r["member_loop"]) for r in members] == [(1, "auto"), (4, "vmap")]
  assert members[0]["speedup_over_sequential"] == 1.0
  assert members[1]["speedup_over_sequential"] == (
      members[1]["images_per_sec"]["median"] / members[0]["images_per_sec"]["median"])

  strategies = record["strategies"]["results"]
  assert strategies["device_step"]["steps_per_call"] == 1
  assert strategies["whole_window"]["steps_per_call"] == record["strategies"]["window_steps"] > 1
  assert all(_spread_ok(r["images_per_sec"], 2) for r in strategies.values())

  memory = record["memory"]
  assert [(r["model"], r["batch_size"]) for r in memory] == [("mlp", 16), ("mlp", 32)]
  for r in memory:
    assert r["peak_bytes_in_use"] == "not reported by the cpu backend"
    compiled = r["compiled_train_bytes"]
    # The arguments hold at least the parameters and the 80 training images.
    assert compiled["argument_size_in_bytes"] > 80 * 28 * 28
    assert compiled["temp_size_in_bytes"] > 0

  readme = tmp_path / "README.md"
  readme.write_text(f"{tables.BEGIN}\n{tables.END}\n")
  tables.write_readme(readme, results)
  text = readme.read_text()
  assert "| mlp | 16 | 1 | 4 | vmap |" in text
  assert "| mlp | 32 | float32 | 1 | not reported by the cpu backend |" in text
  assert "| mnist_speedrun | 99.0% | " in text and "seeds in one process" in text


def test_an_unknown_argument_is_one_line_naming_it():
  done = subprocess.run(["bash", "benchmarks/device_suite.sh", "--fast"], cwd=REPO,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and done.stderr.strip().splitlines() == [
      "error: unknown argument --fast; the only one is --tiny"]


def test_a_budget_leaves_out_the_variants_that_would_overrun_it():
  dataset = data.load("mnist160")
  budget = harness.Budget(0.0)  # Past it after the first variant.
  rows = harness.throughput(dataset, ["mlp"], [16, 32], 32, 1, budget=budget)
  assert [r["batch_size"] for r in rows] == [16]  # The first always runs.
  assert budget.skipped == ["mlp 32 float32 1 auto"]
  assert harness.Budget(None).fits(1e9) and not harness.Budget(0.0).fits(1.0)


def test_the_gpu_run_asks_for_what_the_readme_rows_need(tmp_path):
  """The full (GPU) suite's arguments to run.py, caught by a stand-in
  interpreter: nothing is measured."""
  args_file = tmp_path / "args.json"
  stand_in = tmp_path / "python"
  stand_in.write_text(f"""#!{sys.executable}
import json, os, sys
if sys.argv[1:2] == ["benchmarks/run.py"]:
  json.dump(sys.argv[2:], open({str(args_file)!r}, "w"))
else:
  os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])
""")
  stand_in.chmod(0o755)
  (tmp_path / "data" / "mnist").mkdir(parents=True)
  env = {**os.environ, "PYTHON": str(stand_in), "DEVICE_SUITE_RESULTS": str(tmp_path),
         "DEVICE_SUITE_DATA_DIR": str(tmp_path / "data")}
  done = subprocess.run(["bash", "benchmarks/device_suite.sh"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  parsed = harness.parse_args(json.loads(args_file.read_text()))
  every_model = set(registry.names("model"))
  assert parsed.sections.split(",") == SECTIONS
  assert set(parsed.models.split(",")) == set(parsed.memory_models.split(",")) == every_model
  assert parsed.dtypes.split(",") == ["float32", "bfloat16"]
  sizes = [int(b) for b in parsed.batch_sizes.split(",")]
  assert min(sizes) == 128 and max(sizes) == 4096 and parsed.window_images is None
  assert parsed.speedruns == "mnist_speedrun" and parsed.seeds == 10
  assert parsed.speedruns_in_process and not parsed.override  # The config as shipped.
  assert parsed.members_counts == "1,32" and parsed.member_loops == "vmap"
  speedrun_batch = speedrun_config.get_config().batch_size
  assert parsed.members_batch_size == parsed.strategies_batch_size == speedrun_batch
  assert parsed.strategies_window_images >= 60_000  # Whole-epoch scan vs per-step calls.
  assert sum(harness.budgets_of(parsed.budgets).values()) < 420
