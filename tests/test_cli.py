"""The command line, run as a user runs it: `python -m mnist_jax.main ...`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_module


def test_trains_with_the_default_workdir(tmp_path):
  result = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                      "--config.num_epochs=2", cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  workdir = tmp_path / "runs" / "mnist160"
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["num_epochs"] == 2 and summary["dataset"] == "mnist160"
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2
  assert "epoch 2/2" in result.stderr


@pytest.mark.parametrize("flag, message, status", [
    ("--config.dataset=nope", "error: unknown dataset 'nope'", 1),
    ("--config.batch_size=0", "error: config.batch_size must be a positive integer", 1),
    # A component spec that names nothing: errors.SpecError, a usage error.
    ("--config.optimizer=rmsprop", "error: unknown optimizer 'rmsprop'", 2),
])
def test_user_mistakes_print_one_line_and_exit_non_zero(tmp_path, flag, message, status):
  result = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                      f"--workdir={tmp_path / 'run'}", flag)
  assert result.returncode == status
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(error_lines) == 1 and error_lines[0].startswith(message)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("config_text, args, message", [
    (None, ["--config=missing.py"], "config file missing.py does not exist"),
    ("x = 1\n", [], "does not define get_config()"),
    ("def get_config():\n  return undefined_name\n", [],
     ":2 failed: NameError: name 'undefined_name' is not defined"),
    ("", ["--config.batch_size=abc"], "config.batch_size must be an integer, got 'abc'"),
    ("", ["stray"], "unexpected arguments: stray"),
])
def test_config_mistakes_print_one_line(tmp_path, config_text, args, message):
  if config_text is not None:
    path = tmp_path / "my_config.py"
    path.write_text(config_text or (REPO / "configs" / "mnist160.py").read_text())
    args = [f"--config={path}", *args]
  result = run_module("mnist_jax.main", *args, f"--workdir={tmp_path / 'run'}",
                      cwd=REPO if config_text is not None else tmp_path)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert message in result.stderr
  assert not (tmp_path / "run").exists()  # Nothing written for a bad config.


@pytest.mark.parametrize("override, message", [
    ("--config.num_epoch=3", "--config.num_epoch: no such field; did you mean num_epochs?"),
    ("--config.swep.learning_rate=0.1",
     "--config.swep.learning_rate: no such field; did you mean sweep.learning_rate?"),
    ("--config.sweep.learning_rat=0.1",
     "--config.sweep.learning_rat: no such field; did you mean sweep.learning_rate?"),
    ("--config.batch_size.x=1",
     "--config.batch_size.x: no such field; list the fields with --show_config"),
    ("--config.zzz=1", "--config.zzz: no such field; list the fields with --show_config"),
])
def test_a_misspelled_field_is_one_plain_line(tmp_path, override, message):
  result = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                      override, f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1
  assert result.stderr == f"error: {message}\n"  # No escaped quotes, no literal \n.
  assert not (tmp_path / "run").exists()


def test_missing_config_flag(tmp_path):
  result = run_module("mnist_jax.main", cwd=tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip() == "error: --config is required, e.g. --config=configs/mnist.py"


def test_an_internal_bug_keeps_its_traceback(tmp_path):
  code = "from mnist_jax import cli; cli.run(lambda argv: 1 / 0)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
  assert result.returncode == 1
  assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr
  assert "error: " not in result.stderr


def test_the_mnist_jax_command_dispatches_to_each_tool(tmp_path):
  result = run_module("mnist_jax", "train", f"--config={REPO}/configs/mnist160.py",
                      "--config.num_epochs=1",
                      "--config.plots=False", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 0, result.stderr
  result = run_module("mnist_jax", "evaluate", f"--workdir={tmp_path / 'run'}",
                      "--plots")
  assert result.returncode == 0, result.stderr
  assert "confusion matrix" in result.stdout
  assert (tmp_path / "run" / "plots" / "confusion_matrix.png").is_file()
  unknown = run_module("mnist_jax", "fit")
  assert unknown.returncode == 1
  assert unknown.stderr.strip().splitlines()[-1] == (
      "error: unknown command 'fit'; choose one of train, evaluate, predict, export, compare")


def test_the_console_script_is_installed():
  import os
  script = Path(sys.executable).parent / "mnist-jax"
  if not script.exists():
    if os.environ.get("CI"):
      pytest.fail("pip install -e . should have installed the mnist-jax script")
    pytest.skip("mnist_jax is not pip-installed in this environment")
  result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 0 and "mnist-jax train" in result.stdout


def test_every_tool_imports_into_one_process():
  # Tools share flags such as --workdir; a test session imports them together.
  code = ("import mnist_jax.main, mnist_jax.evaluate, mnist_jax.predict, "
          "mnist_jax.export, mnist_jax.compare")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
  assert result.returncode == 0, result.stderr
