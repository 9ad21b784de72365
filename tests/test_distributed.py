"""Multi-process training through jax.distributed, on this machine: processes on
127.0.0.1, each with virtual CPU devices, talking through gloo."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tolerances
from conftest import REPO, checkpoint_params

NUM_EPOCHS = 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(data_dir, workdir, num_epochs, *flags):
  return [sys.executable, "-m", "mnist_jax.main",
          f"--config={REPO}/configs/mnist160.py", f"--config.data_dir={data_dir}",
          f"--config.num_epochs={num_epochs}", "--config.batch_size=16",
          "--config.eval_batch_size=40", "--config.plots=False",
          f"--workdir={workdir}", *flags]


def _env(num_devices):
  return {**os.environ, "PYTHONPATH": str(REPO),
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}


class _Processes:
  """The processes of one distributed run; all are killed on exit, whatever happens."""

  def __init__(self, data_dir, workdir, num_epochs, *flags, num_processes=2):
    port = _free_port()
    self.procs = [
        subprocess.Popen(
            _command(data_dir, workdir, num_epochs, "--config.distributed=True",
                     f"--config.coordinator_address=127.0.0.1:{port}",
                     f"--config.coordinator_bind_address=127.0.0.1:{port}",
                     f"--config.num_processes={num_processes}",
                     f"--config.process_id={i}",
                     "--config.heartbeat_timeout_seconds=10", *flags),
            env=_env(2), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        for i in range(num_processes)]

  def __enter__(self):
    return self

  def wait(self, timeout):
    """[(returncode, stderr)] of every process; fails (not hangs) past `timeout`."""
    deadline = time.monotonic() + timeout
    results = []
    for proc in self.procs:
      try:
        _, stderr = proc.communicate(timeout=max(1, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        self.kill()
        pytest.fail(f"a process of the distributed run did not finish in {timeout} s")
      results.append((proc.returncode, stderr))
    return results

  def kill(self):
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()

  def __exit__(self, *exc):
    self.kill()
    return False


def _metrics(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir, epoch):
  return checkpoint_params(workdir / "checkpoints" / str(epoch) / "state")


def test_two_processes_train_like_one_with_the_same_devices(shared_data, tmp_path):
  reference = subprocess.run(_command(shared_data, tmp_path / "one", NUM_EPOCHS),
                             env=_env(4), cwd=REPO, capture_output=True, text=True,
                             timeout=300)
  assert reference.returncode == 0, reference.stderr
  # JAX's INFO log names the coordinator's bind address; library INFO lines
  # show only with --verbosity=1. (Only here: a long run's INFO lines would
  # fill the pipes that the other test reads only at the end.)
  with _Processes(shared_data, tmp_path / "two", NUM_EPOCHS, "--verbosity=1") as run:
    (rc0, err0), (rc1, err1) = run.wait(timeout=300)
  assert rc0 == 0 and rc1 == 0, err0 + err1
  assert "process 0 of 2, 2 local of 4 devices" in err0
  assert "Starting JAX distributed service on 127.0.0.1:" in err0  # Loopback only.
  # One log and one set of files for the run: process 0's.
  assert "epoch 1/2" in err0 and "epoch 1/2" not in err1
  summary = json.loads((tmp_path / "two" / "summary.json").read_text())
  assert summary["device_count"] == 4
  # 2 epochs of 5 Adam steps on the same 4 devices, the gradients' sums (of
  # up to 16 x 28 x 28 terms) reduced across processes instead: another
  # order (tolerances.float32_steps; a step moves a loss by less than the
  # loss, a parameter by about lr). Catches a process that trains on its
  # half alone (a step's move, about lr, apart). Accuracies: equal unless an
  # image's two top logits are that close.
  params = _params(tmp_path / "one", NUM_EPOCHS)
  n_terms = tolerances.sums_of(params, batch=16, positions=28 * 28)
  steps = NUM_EPOCHS * 80 // 16
  for one, two in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), strict=True):
    for key in ("train_loss", "test_loss"):
      assert two[key] == pytest.approx(one[key], abs=tolerances.float32_steps(
          steps, n_terms, abs(one[key]))), key
    assert one["test_accuracy"] == two["test_accuracy"]
  for a, b in zip(params, _params(tmp_path / "two", NUM_EPOCHS), strict=True):
    tolerances.assert_within(a, b, tolerances.float32_steps(
        steps, n_terms, 1e-3 * tolerances.adam_step_bound(steps)))


def test_a_killed_process_stops_the_other_and_the_run_resumes(shared_data, tmp_path):
  workdir, num_epochs = tmp_path / "run", 400
  with _Processes(shared_data, workdir, num_epochs) as run:
    deadline = time.monotonic() + 120
    while not (workdir / "checkpoints" / "1").is_dir():
      assert all(p.poll() is None for p in run.procs), "a process ended early"
      assert time.monotonic() < deadline, "no checkpoint within 120 s"
      time.sleep(0.05)
    run.procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    (rc0, err0), _ = run.wait(timeout=120)
    stopped_after = time.monotonic() - killed_at
  assert rc0 != 0, "the surviving process must not report success"
  # Whichever notices first stops the survivor: JAX's coordination service,
  # missing the heartbeats (10 s here, config.heartbeat_timeout_seconds), or
  # gloo, when a collective's connection to the dead process breaks.
  assert stopped_after < 60, f"the survivor took {stopped_after:.0f} s to stop"
  assert ("This most likely indicates that another task died" in err0
          or "gloo" in err0), err0[-2000:]
  done = len(_metrics(workdir))
  assert done < num_epochs

  # The same command on both processes resumes from the last checkpoint.
  with _Processes(shared_data, workdir, done + 2) as run:
    results = run.wait(timeout=300)
  assert all(rc == 0 for rc, _ in results), results[0][1][-2000:]
  assert "resuming from the checkpoint of epoch" in results[0][1]
  assert [r["epoch"] for r in _metrics(workdir)] == list(range(1, done + 3))
