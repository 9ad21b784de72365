"""benchmarks/record_run.py: a training run becomes a record under benchmarks/results/."""

import json
import os
import sys

import jax
import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_args  # pylint: disable=g-import-not-at-top,wrong-import-position
import record_run  # pylint: disable=g-import-not-at-top,wrong-import-position


def _records(results_dir):
  return sorted(results_dir.glob("*/*.json"))


@pytest.mark.parametrize("dataset", ["mnist160", "rgb"])
def test_records_a_training_run_with_its_overrides(dataset, rgb_npz, tmp_path,
                                                   script_env):
  results = tmp_path / "results"
  name = str(rgb_npz) if dataset == "rgb" else dataset
  overrides = [f"--config.dataset={name}", "--config.model=mlp",
               "--config.batch_size=16", "--config.num_epochs=2",
               "--config.plots=False"]
  run_script("benchmarks/record_run.py", "--config=configs/mnist160.py", *overrides,
             "--tag=t", "--note=shared", f"--results_dir={results}",
             env={**script_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  [path] = _records(results)
  assert path.name == "run-mnist160-t.json"
  assert path.parent.name == "cpu-cpu"
  record = json.loads(path.read_text())
  summary, metrics = record["summary"], record["metrics"]
  # The overrides reached the run, and the command that reproduces it.
  assert (summary["dataset"], summary["model"], summary["num_epochs"]) == (
      rgb_npz.stem if dataset == "rgb" else dataset, "mlp", 2)
  assert summary["config"]["dataset"] == name
  assert record["command"] == (
      "XLA_FLAGS=--xla_force_host_platform_device_count=1 python -m mnist_jax.main "
      "--config=configs/mnist160.py " + " ".join(overrides))
  # Every epoch, and the summary of the same run.
  assert [m["epoch"] for m in metrics] == [1, 2]
  assert summary["final_test_accuracy"] == metrics[-1]["test_accuracy"]
  # summary.py adds the epochs' seconds in this order; JSON keeps floats exact.
  assert summary["train_seconds"] == sum(m["epoch_seconds"] for m in metrics)
  machine = record["machine"]
  assert machine["device_count"] == summary["device_count"] == 1
  assert machine["cpu_count"] == os.cpu_count() and machine["cpu"]
  assert record["versions"]["jax"] == jax.__version__
  assert record["versions"]["optax"] and record["versions"]["flax"]
  assert record["note"] == "shared"


def _finished_workdir(folder, epochs=2):
  folder.mkdir()
  metrics = [{"epoch": e, "test_accuracy": 0.5 + e / 10, "epoch_seconds": 1.5}
             for e in range(1, epochs + 1)]
  summary = {"dataset": "toy", "model": "cnn", "num_epochs": 2,
             "final_test_accuracy": 0.7, "train_seconds": 3.0, "backend": "cpu",
             "device_kind": "cpu", "device_count": 3}
  (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
  (folder / "summary.json").write_text(json.dumps(summary))
  return summary, metrics


def test_records_a_finished_workdir_as_it_is(tmp_path):
  summary, metrics = _finished_workdir(tmp_path / "mnist")
  record_run.main([f"--from_workdir={tmp_path / 'mnist'}", "--tag=x",
                   f"--results_dir={tmp_path / 'results'}"])
  [path] = _records(tmp_path / "results")
  record = json.loads(path.read_text())
  assert path.name == "run-mnist-x.json"
  assert (record["summary"], record["metrics"]) == (summary, metrics)
  # The run's devices (mnist_jax's choice in its own process), not this one's.
  assert record["machine"]["device_count"] == 3
  assert record["command"] is None


@pytest.mark.parametrize("case, argv, message", [
    ("unfinished", ["--from_workdir={w}"], "no summary.json"),
    ("epochs", ["--from_workdir={w}"], "has 1 epochs, its summary.json says 2"),
    ("finished", ["--config={c}", "--workdir={w}"], "is not empty"),
    ("finished", ["--from_workdir={w}", "--config.num_epochs=3"], "overrides need --config"),
    ("finished", ["--config={c}", "--num_epochs=3"], "unknown arguments --num_epochs=3"),
    ("finished", [], "pass either --config"),
    ("finished", ["--config=configs/nope.py"], "configs/nope.py does not exist"),
])
def test_bad_input_is_one_line_and_records_nothing(tmp_path, capsys, case, argv, message):
  workdir = tmp_path / "w"
  if case == "unfinished":
    _finished_workdir(workdir)
    (workdir / "summary.json").unlink()
  elif case == "epochs":
    _finished_workdir(workdir, epochs=1)
  else:
    _finished_workdir(workdir)
  results = tmp_path / "results"
  with pytest.raises(SystemExit) as exit_info:
    bench_args.run_main(record_run.main, [
        a.format(w=workdir, c=REPO / "configs" / "mnist160.py") for a in argv
    ] + [f"--results_dir={results}"])
  error = capsys.readouterr().err
  assert exit_info.value.code == 2
  assert error.startswith("error: ") and message in error and error.count("\n") == 1
  assert not results.exists()
