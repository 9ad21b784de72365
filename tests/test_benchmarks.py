"""Every script in benchmarks/ runs end to end in a tiny mode, as a fresh
process, on data read by data.load: mnist160 (shipped in the package), and an
RGB `.npz` in MedMNIST's layout (conftest.rgb_npz) where the script takes any
dataset; records go to tmp folders. No timing is asserted: each record only
has to hold what its script measures. And a bad flag value is one line
naming the flag (exit status 2), never a traceback.

pytorch_cpu.py's runs are in tests/test_pytorch_benchmark.py (they need the
benchmark extra), device_suite.sh's in tests/test_device_suite.py and
record_run.py's in tests/test_record_run.py.
"""

import json
import os
import sys

import pytest

from conftest import REPO, require_real_data, run_script
from mnist_jax import runtime

sys.path.insert(0, str(REPO / "benchmarks"))
# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_args
import cpu_variants
import emnist_scale
import finetune
import folder_load
import host_memory
import record_run
import resolver_speed
import run
import startup
import strategies
import tables
# pylint: enable=g-import-not-at-top,wrong-import-position


def _record(path) -> dict:
  return json.loads(path.read_text())


def assert_ratios(rows, base, key):
  """Each row's `key` is its median rate over `base`'s: checked on every row,
  not only on the base's own 1.0 (both sides are the record's own floats,
  divided once: equal to rounding)."""
  for row in rows:
    assert row[key] == pytest.approx(row["images_per_sec"]["median"]
                                     / base["images_per_sec"]["median"], rel=1e-12)


def _spread_ok(stats: dict, windows: int) -> bool:
  return stats["windows"] == windows and 0 < stats["min"] <= stats["median"] <= stats["max"]


def _rates(median: float) -> dict:
  """A rate_stats record: `median` images/s, 5% either way over 3 windows."""
  return {"median": median, "min": 0.95 * median, "max": 1.05 * median, "windows": 3}


def test_speedups_over_one_device_and_over_sequential_from_known_rates(monkeypatch):
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


# run.py, as on a CPU: each batch size and device count in a child process,
# each speedrun seed a fresh `python -m mnist_jax.main`. One run; the tests
# below read its record.
@pytest.fixture(scope="module")
def harness(tmp_path_factory, script_env):
  results = tmp_path_factory.mktemp("harness") / "results"
  out = results / "cpu-cpu" / "harness.json"
  run_script("benchmarks/run.py", "--dataset=mnist160", "--models=mlp",
             "--batch_sizes=16", "--window_images=32", "--repeats=2",
             "--sections=throughput,time_to_accuracy,scaling,members",
             "--speedruns=mnist_speedrun", "--seeds=1",
             "--override=dataset=mnist160", "--override=batch_size=16",
             "--override=steps_per_epoch=0",
             "--override=model=mlp", "--device_counts=1,2", "--scaling_models=mlp",
             "--scaling_batch_size=16", "--members_models=mlp",
             "--members_counts=1,2", "--member_loops=vmap",
             "--members_batch_size=16", f"--out={out}", "--no_tables",
             env=script_env)
  return results, _record(out)


def test_harness_throughput_runs_on_mnist_jaxs_own_device_count(harness):
  _, record = harness
  assert record["dataset"] == "mnist160" and record["window_images"] == 32
  (row,) = record["throughput"]
  assert (row["model"], row["batch_size"], row["window_steps"]) == ("mlp", 16, 2)
  # The child ran on the devices a user's run of this batch would get.
  assert row["device_count"] == runtime.auto_cpu_devices(
      16, len(os.sched_getaffinity(0)), dense_only=True)
  assert _spread_ok(row["images_per_sec"], 2) and row["compile_train_seconds"] > 0


def test_harness_speedrun_seed_is_a_users_run_with_the_overrides(harness):
  _, record = harness
  (speedrun,) = record["time_to_accuracy"]
  assert speedrun["config"] == "mnist_speedrun" and not speedrun["in_process"]
  assert (speedrun["num_epochs"], speedrun["batch_size"]) == (1, 16)
  (seed,) = speedrun["runs"]
  assert seed["seed"] == 0 and 0 <= seed["final_test_accuracy"] <= 1
  assert seed["test_accuracy_by_epoch"] == [seed["final_test_accuracy"]]


def test_harness_scaling_and_members_rows_and_their_ratios(harness):
  _, record = harness
  assert [r["device_count"] for r in record["scaling"]] == [1, 2]
  assert_ratios(record["scaling"], record["scaling"][0], "speedup_over_1_device")
  members = record["members"]
  assert [(r["members"], r["member_loop"]) for r in members] == [(1, "auto"), (2, "vmap")]
  assert_ratios(members, members[0], "speedup_over_sequential")


def test_tables_script_renders_the_harness_record_between_the_markers(harness,
                                                                     tmp_path,
                                                                     script_env):
  results, _ = harness
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{tables.BEGIN}\nstale\n{tables.END}\noutro\n")
  run_script("benchmarks/tables.py", f"--readme={readme}", f"--results_dir={results}",
             env=script_env)
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith("outro\n")
  assert "stale" not in text and "### cpu-cpu" in text
  assert "| mlp | 16 |" in text and "| mnist_speedrun | 99.0% | " in text
  assert "| mlp | 16 | 1 | 2 | vmap |" in text


def test_harness_follows_an_rgb_datasets_shape(rgb_npz, tmp_path, script_env):
  # Catches the harness building its models for MNIST's 28x28x1: the
  # speedrun's first convolution would not take 3 channels.
  out = tmp_path / "harness.json"
  run_script("benchmarks/run.py", f"--dataset={rgb_npz}", "--devices=1",
             "--sections=throughput", "--models=speedrun", "--batch_sizes=16",
             "--window_images=32", "--repeats=1", f"--out={out}", "--no_tables",
             env=script_env)
  record = _record(out)
  assert record["dataset"] == str(rgb_npz)
  assert [(r["model"], r["device_count"]) for r in record["throughput"]] == [("speedrun", 1)]


def test_strategies_benchmark_writes_a_record(tmp_path, script_env):
  out = tmp_path / "strategies.json"
  run_script("benchmarks/strategies.py", "--dataset=mnist160", "--model=mlp",
             "--batch_size=16", "--window_steps=4", "--chunk=2", "--repeats=2",
             f"--out={out}", env=script_env)
  record = _record(out)
  results = record["results"]
  assert set(results) == set(strategies.STRATEGIES)
  assert {n: r["steps_per_call"] for n, r in results.items()} == {
      "host_loop": 1, "device_step": 1, "scan_chunk": 2, "whole_window": 4,
      "device_step_progress": 1}
  assert all(_spread_ok(r["images_per_sec"], 2) for r in results.values())
  assert_ratios(results.values(), results["host_loop"], "ratio_to_host_loop")
  assert record["machine"]["backend"] == "cpu" and record["machine"]["jax"]


def test_strategies_benchmark_on_rgb_images(rgb_npz, tmp_path, script_env):
  out = tmp_path / "strategies.json"
  run_script("benchmarks/strategies.py", f"--dataset={rgb_npz}", "--model=speedrun",
             "--batch_size=16", "--window_steps=2", "--chunk=2", "--repeats=1",
             "--strategies=host_loop,scan_chunk", f"--out={out}", env=script_env)
  assert set(_record(out)["results"]) == {"host_loop", "scan_chunk"}


@pytest.mark.parametrize("dataset", ["mnist160", "rgb"])
def test_startup_benchmark_times_each_cache_state(dataset, rgb_npz, tmp_path,
                                                  script_env):
  overrides = ["--override=model=mlp"] + (
      [f"--override=dataset={rgb_npz}"] if dataset == "rgb" else [])
  out = tmp_path / "startup.json"
  run_script("benchmarks/startup.py", "--repeats=1", *overrides, f"--out={out}",
             env=script_env)
  record = _record(out)
  assert record["config"] == "mnist160.py"
  assert record["overrides"] == [o.removeprefix("--override=") for o in overrides]
  for name in ("no_cache", "cold_cache", "warm_cache"):
    (one,) = record["runs"][name]
    assert one == record["medians"][name] and one["seconds_to_first_step"] > 0


def test_cpu_variants_benchmark_times_the_ops_and_the_variants(tmp_path, script_env):
  # Random inputs of MNIST's shape: the script reads no dataset.
  out = tmp_path / "variants.json"
  run_script("benchmarks/cpu_variants.py", "--batch_size=8", "--steps=1",
             "--repeats=1", "--variants=xla_conv,pool_slices", f"--out={out}",
             env=script_env)
  record = _record(out)
  assert {"forward", "grad, all", "conv1 weight grad"} <= set(record["ops"])
  assert set(record["variants"]) == {"xla_conv", "pool_slices"}
  for r in record["variants"].values():
    assert r["images_per_sec"] == pytest.approx(8 / r["median_ms"] * 1000, rel=1e-12)
  assert record["variants"]["xla_conv"]["max_relative_grad_difference"] == 0


def test_emnist_scale_benchmark_synthesizes_loads_and_trains(tmp_path, script_env):
  # The real byclass mapping file is needed; the images are mnist160's.
  data_dir = require_real_data()
  run_script("benchmarks/emnist_scale.py", f"--data_dir={data_dir}",
             "--pool_dataset=mnist160", "--scale=0.0002",
             f"--results_dir={tmp_path}", env=script_env)
  record = _record(tmp_path / "cpu-cpu" / "emnist-byclass-scale.json")
  # round(697,932 x 0.0002) and round(116,323 x 0.0002).
  assert (record["synthetic"]["train_images"], record["synthetic"]["test_images"]) == (140, 23)
  assert record["synthetic"]["source"].startswith("mnist160's 80 + 80 images")
  assert record["host"]["arrays"]["train_images"]["shape"] == [140, 28, 28, 1]
  assert record["train"]["summary"]["dataset"] == "emnist_byclass"
  assert len(record["train"]["metrics"]) == 1


@pytest.mark.parametrize("dataset", ["mnist160", "rgb"])
def test_folder_load_benchmark_exports_and_reloads_the_images(dataset, rgb_npz,
                                                              tmp_path, script_env):
  name = str(rgb_npz) if dataset == "rgb" else dataset
  run_script("benchmarks/folder_load.py", f"--dataset={name}", "--pool_images=20",
             f"--results_dir={tmp_path}", env=script_env)
  record = _record(tmp_path / "cpu-cpu" / "folder-load-70k.json")
  # Train and test splits: 80 + 80 images, or the npz's 80 + 40.
  assert record["images"] == (160 if dataset == "mnist160" else 120)
  assert record["image_shape"] == ([28, 28, 1] if dataset == "mnist160" else [28, 28, 3])
  assert record["decode_pool_comparison"]["images"] == 20
  if dataset == "mnist160":  # The script checked the CSV's pixels against the PNGs'.
    assert record["csv"]["load_seconds"] > 0
  else:
    assert record["csv"].startswith("not measured: CSV datasets are grayscale only")


@pytest.mark.parametrize("dataset", ["mnist160", "rgb"])
def test_host_memory_benchmark_reads_the_rss_after_each_epoch(dataset, rgb_npz,
                                                              tmp_path, script_env):
  out = tmp_path / "memory.json"
  name = str(rgb_npz) if dataset == "rgb" else dataset
  run_script("benchmarks/host_memory.py", "--epochs=2", f"--override=dataset={name}",
             "--override=batch_size=16", "--override=model=mlp", f"--out={out}",
             env=script_env)
  record = _record(out)
  assert [r["epoch"] for r in record["rss_after_each_epoch_mib"]] == [1, 2]
  # Training holds more than the bare interpreter did, and the peak bounds all.
  for reading in record["rss_after_each_epoch_mib"]:
    assert record["rss_before_training_mib"] < reading["rss_mib"] <= record["peak_rss_mib"]
  assert record["dataset"] == name and record["machine"]["backend"] == "cpu"


def test_finetune_benchmark_writes_every_variant_with_its_overrides(tmp_path,
                                                                     script_env):
  out = tmp_path / "finetune.json"
  run_script("benchmarks/finetune.py", "--seeds=2", "--epochs=1", "--source_epochs=1",
             "--probe_learning_rate=0.05", "--override=dataset=mnist160",
             "--override=batch_size=16", "--override=model=mlp", f"--out={out}",
             env=script_env)
  record = _record(out)
  assert record["complete"] and record["probe_learning_rate"] == 0.05
  assert 0 <= record["source"]["final_test_accuracy"][0] <= 1
  runs = record["runs"]
  assert list(runs) == ["scratch-1", "finetune-1", "probe-1", "probe_lr-1"]
  for name, row in runs.items():
    assert len(row["final_test_accuracy"]) == 2, name  # One per seed.
    assert row["overrides"]["dataset"] == "mnist160", name
    # The temporary source is named, never its path.
    assert "finetune-" not in row["command"] and str(tmp_path) not in row["command"]
  assert runs["scratch-1"]["overrides"]["init_from"] == ""
  assert {runs[n]["overrides"]["freeze"] for n in ("probe-1", "probe_lr-1")} == {"features"}
  assert runs["finetune-1"]["overrides"]["init_from"] == "<source workdir>"
  assert runs["probe_lr-1"]["overrides"]["learning_rate"] == 0.05
  assert "learning_rate" not in runs["probe-1"]["overrides"]


def test_resolver_speed_alternates_the_two_trees_and_writes_their_ratio(tmp_path,
                                                                       script_env):
  # Both sides this checkout: the record's shape, the alternation, the ratio.
  out = tmp_path / "before-after.json"
  run_script("benchmarks/resolver_speed.py", f"--before={REPO}", f"--after={REPO}",
             "--rounds=2", "--models=mlp", "--batch_size=16", "--window_images=32",
             "--repeats=1", "--dataset=mnist160", f"--out={out}", env=script_env)
  record = _record(out)
  assert record["order"] == [["before", "after"], ["after", "before"]]
  assert record["benchmark"] == "resolver_speed" and record["machine"]["date"]
  assert record["hardware"]["cores"] >= 1 and record["software"]["jax"]
  row = record["models"]["mlp"]
  for side in ("before", "after"):
    assert len(row[side]["rounds"]) == 2
    assert row[side]["min"] <= row[side]["median"] <= row[side]["max"]
  assert row["ratio_after_over_before"] == pytest.approx(
      row["after"]["median"] / row["before"]["median"], rel=1e-12)
  assert row["paired_ratios"]["rounds"] == pytest.approx(
      [a / b for a, b in zip(row["after"]["rounds"], row["before"]["rounds"])])
  assert record["commits"]["before"] == record["commits"]["after"]


# Bad flag values: refused when parsed, one line naming the flag.
MISSING = "/nonexistent/folder"
BAD_FLAGS = [
    (run.parse_args, ["--repeats=0"], "--repeats"),
    (resolver_speed.parse_args, [f"--before={MISSING}"], "--before"),
    (resolver_speed.parse_args, ["--before=.", "--out=x.json", "--rounds=0"],
     "--rounds"),
    (run.parse_args, ["--sections=throughput,nope"], "--sections"),
    (run.parse_args, ["--models=mlp,nope"], "--models"),
    (run.parse_args, ["--batch_sizes=16,-8"], "--batch_sizes"),
    (run.parse_args, ["--member_loops=sideways"], "--member_loops"),
    (run.parse_args, ["--budgets=throughput"], "--budgets"),
    (run.parse_args, ["--override=nope=1"], "--override"),
    (run.parse_args, [f"--data_dir={MISSING}"], "--data_dir"),
    (strategies.parse_args, ["--chunk=0"], "--chunk"),
    (strategies.parse_args, ["--strategies=host_loop,nope"], "--strategies"),
    (cpu_variants.parse_args, ["--devices=4", "--batch_size=6"], "--batch_size"),
    (cpu_variants.parse_args, ["--sections=opz"], "--sections"),
    (startup.parse_args, ["--repeats=-1"], "--repeats"),
    (startup.parse_args, ["--config=configs/nope.py"], "--config"),
    (startup.parse_args, ["--override=model=nope"], "--override"),
    (emnist_scale.parse_args, ["--scale=0"], "--scale"),
    (emnist_scale.parse_args, [f"--data_dir={MISSING}"], "--data_dir"),
    (folder_load.parse_args, ["--pool_images=0"], "--pool_images"),
    (folder_load.parse_args, ["--limit=-1"], "--limit"),
    (host_memory.parse_args, ["--epochs=0"], "--epochs"),
    (host_memory.parse_args, ["--config=configs/nope.py"], "--config"),
    (finetune.parse_args, ["--epochs=1,x"], "--epochs"),
    (finetune.parse_args, ["--override=model=nope"], "--override"),
    (record_run.main, ["--config=configs/mnist160.py", "--config.model=nope"],
     "--config.FIELD"),
    (tables.main, [f"--results_dir={MISSING}"], "--results_dir"),
]


@pytest.mark.parametrize("entry, argv, flag", BAD_FLAGS,
                         ids=[f"{e.__module__}-{a[-1]}" for e, a, _ in BAD_FLAGS])
def test_a_bad_flag_value_is_refused_as_it_is_parsed(entry, argv, flag, capsys):
  with pytest.raises(SystemExit) as exit_info:
    bench_args.run_main(entry, argv)
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert exit_info.value.code == 2 and "error:" in last and flag in last, last


# The same, end to end: the script as a user runs it, including errors found
# only once the data are loaded or a child process fails.
SCRIPT_ERRORS = [
    ("strategies.py", ["--window_steps=4"], "--window_steps", 2),
    ("strategies.py", ["--dataset=mnist160", "--batch_size=16"], "--window_steps", 2),
    ("run.py", ["--dataset=mnist160", "--sections=throughput", "--batch_sizes=16"],
     "--window_images", 2),
    ("pytorch_cpu.py", ["--seeds=0"], "--seeds", 2),
    ("cpu_variants.py", ["--variants=xla_conv,nope"], "--variants", 2),
    ("folder_load.py", ["--dataset=mnist160", "--limit=3"], "--limit", 2),
    ("record_run.py", ["--config=configs/mnist160.py", "--config.batch_size=4096",
                       f"--results_dir={MISSING}"], "config.batch_size", 2),
]


@pytest.mark.parametrize("script, argv, flag, status", SCRIPT_ERRORS,
                         ids=[f"{s}-{a[-1]}" for s, a, _, _ in SCRIPT_ERRORS])
def test_a_bad_flag_is_one_line_from_the_command_line(script, argv, flag, status,
                                                      script_env):
  done = run_script(f"benchmarks/{script}", *argv, env=script_env, timeout=300,
                    check=False)
  last = done.stderr.strip().splitlines()[-1]
  assert done.returncode == status and "Traceback" not in done.stderr, done.stderr
  assert "error:" in last and flag in last, last
  assert not os.path.exists(MISSING)  # record_run.py recorded nothing.
