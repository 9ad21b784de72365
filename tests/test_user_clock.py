"""The user's clock: what a training run does before its first step, and
benchmarks/user_clock.py, which times `mnist-jax train` from the shell."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_script
from flax import nnx

from mnist_jax import config as config_lib
from mnist_jax import data, models
from mnist_jax import state as state_lib


def test_a_training_run_imports_no_plotting_library_before_it_trains():
  # matplotlib took about a second of the train command's imports
  # (python -X importtime -c "import mnist_jax.main"): it is imported when a
  # run draws its plots, after training.
  code = ("import sys, mnist_jax.main, mnist_jax.compare, mnist_jax.evaluate; "
          "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
  assert out.stdout.strip() == "[]"


def _eager_initial_state(config, num_classes, tx):
  """A member's initial state as state.py drew it before it compiled the
  initialisation: one operation at a time (each its own small program)."""
  init_key, rng = jax.random.split(jax.random.key(config.seed))
  module = models.create(config.model, num_classes, nnx.Rngs(params=init_key),
                         width=config.width, depth=config.depth or None,
                         dropout=config.dropout, init=config.init)
  _, params, rest = nnx.split(module, nnx.Param, ...)
  return state_lib.TrainState(
      step=jnp.int32(0), params=params, rest=rest, opt_state=tx.init(params),
      rng=jax.random.key_data(rng),
      ema=({"count": jnp.int32(0), "params": params, "rest": rest}
           if config.ema_decay else None))


@pytest.mark.parametrize("fields", [
    dict(model="speedrun", init="torch", optimizer="adam", lr_schedule="onecycle"),
    dict(model="bn_cnn", ema_decay=0.99, optimizer="momentum", seed=2**31 + 5),
    dict(model="mlp", optimizer="lion", dropout=0.1, seed=-3),
])
def test_the_compiled_initialisation_draws_the_same_bits_as_eager_operations(fields):
  config = config_lib.with_defaults({"dataset": "mnist160", **fields})
  dataset = data.load("mnist160")
  built = state_lib.build(config, dataset.num_classes, 5, "cpu",
                          dataset.image_shape)
  expected = _eager_initial_state(config, dataset.num_classes, built.tx)
  got_leaves, got_tree = jax.tree.flatten(built.state)
  expected_leaves, expected_tree = jax.tree.flatten(expected)
  assert got_tree == expected_tree
  for got, want in zip(got_leaves, expected_leaves):
    assert got.dtype == want.dtype and np.asarray(got).tobytes() == np.asarray(want).tobytes()


def test_members_initialise_as_the_single_runs_of_their_seeds():
  config = config_lib.with_defaults({"dataset": "mnist160", "num_seeds": 2,
                                     "seed": 4})
  together = state_lib.build(config, 10, 5, "cpu").state.params
  config.num_seeds, config.seed = 1, 5
  alone = state_lib.build(config, 10, 5, "cpu").state.params
  for member, single in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
    np.testing.assert_array_equal(member[1], single)


EXIT_WHEN_DONE = """
import atexit, sys, threading, time
from mnist_jax.__main__ import exit_when_done
def late_write():
  time.sleep(0.3)
  open(sys.argv[1], "w").write("thread")
def command():
  threading.Thread(target=late_write).start()
  atexit.register(lambda: open(sys.argv[2], "w").write("atexit"))
  print("no newline, not flushed", end="")
  sys.exit(sys.argv[3] if sys.argv[3].startswith("error") else int(sys.argv[3]))
exit_when_done(command)
"""


@pytest.mark.parametrize("status", ["0", "3", "error: a one-line message"])
def test_the_command_line_exits_at_once_yet_as_python_would(tmp_path, status):
  thread_file, atexit_file = tmp_path / "thread", tmp_path / "atexit"
  out = subprocess.run([sys.executable, "-c", EXIT_WHEN_DONE, str(thread_file),
                        str(atexit_file), status], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
  assert out.returncode == (1 if status.startswith("error") else int(status))
  assert out.stdout == "no newline, not flushed"
  assert out.stderr == (status + "\n" if status.startswith("error") else "")
  # The work a command left running finished; the atexit handlers ran.
  assert thread_file.read_text() == "thread" and atexit_file.read_text() == "atexit"


@pytest.mark.torch
def test_the_user_clock_benchmark_times_both_commands_from_spawn_to_exit(
    tmp_path, script_env):
  out = tmp_path / "user_clock.json"
  # Without plots: each cold run's fresh cache folder would rebuild
  # matplotlib's font cache.
  run_script("benchmarks/user_clock.py", "--config=configs/mnist160.py",
             "--rounds=1", "--override=plots=False", f"--out={out}", env=script_env)
  record = json.loads(out.read_text())
  assert record["dataset"] == "mnist160" and record["rounds"] == 1
  assert record["commands"]["jax"].startswith(
      "mnist-jax train --config=configs/mnist160.py --workdir=")
  for name in ("torch", "jax_cold", "jax_warm"):
    (run,) = record["runs"][name]
    assert 0 < run["seconds_to_first_step"] < run["final_line_seconds"] <= run["exit_seconds"]
    assert 0 < run["test_accuracy"] <= 1
    assert record["medians"][name]["exit_seconds"]["median"] == run["exit_seconds"]
  assert record["runs"]["torch"][0]["jax_imported"] is False  # A fair start.
  assert record["runs"]["torch"][0]["final_line"].startswith("test accuracy ")
  assert record["runs"]["jax_cold"][0]["final_line"].split(" ", 1)[1].startswith(
      "final test accuracy")
  for state in ("cold", "warm"):
    (phases,) = record["phases"][state]
    assert phases["missing_steps"] == []  # Every step still has its function.
    seconds = phases["seconds"]
    assert set(seconds) >= {"interpreter", "imports", "backend", "data", "model_init",
                            "device_placement", "compile", "training", "evaluation",
                            "checkpoint_write", "files", "exit", "other"}
    assert all(s >= 0 for step, s in seconds.items() if step != "other")
    assert sum(seconds.values()) == pytest.approx(phases["exit_seconds"])
  (imports,) = record["imports"]
  assert imports["by_package"]["jax"] > 0
  assert sum(imports["by_package"].values()) == pytest.approx(imports["total_seconds"])
  assert record["machine"]["git_commit"] and record["lscpu_model_name"]


@pytest.mark.torch
def test_tensorboard_writes_without_importing_pytorch(tmp_path):
  # tensorboardX imports PyTorch where it is installed: about a second of a
  # run's first epoch (tensorboard.py), for tensors a run never passes.
  code = ("import sys; from mnist_jax import tensorboard; "
          f"w = tensorboard.SummaryWriter({str(tmp_path)!r}); "
          "w.scalars({'test/accuracy': 0.5}, step=1); w.close(); "
          "print('torch' in sys.modules); import torch; print(torch.__name__)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
  assert out.stdout.split() == ["False", "torch"]  # Importable afterwards.
  assert list(tmp_path.glob("events.out.tfevents.*"))
