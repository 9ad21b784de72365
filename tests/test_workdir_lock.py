"""One training run per workdir: a second is refused, a killed one never blocks."""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, toy_config

from mnist_jax import training, workdir_lock
from mnist_jax.errors import UserError


def _command(data_dir, workdir, num_epochs, *flags):
  return [sys.executable, "-m", "mnist_jax.main",
          f"--config={REPO}/configs/default.py", "--config.dataset=toy",
          f"--config.data_dir={data_dir}", "--config.model=mlp",
          "--config.optimizer=adam", "--config.learning_rate=0.001",
          "--config.batch_size=32", f"--config.num_epochs={num_epochs}",
          "--config.plots=False", f"--workdir={workdir}", *flags]


def _start(data_dir, workdir, num_epochs, *flags, env=None):
  return subprocess.Popen(_command(data_dir, workdir, num_epochs, *flags),
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _epochs(workdir) -> list[int]:
  """The epochs of metrics.jsonl's complete lines (a writer may be mid-line)."""
  path = workdir / "metrics.jsonl"
  text = path.read_text() if path.exists() else ""
  return [json.loads(line)["epoch"] for line in text.splitlines(keepends=True)
          if line.endswith("\n")]


def _note(workdir) -> str:
  path = workdir / workdir_lock.LOCK_FILE
  return path.read_text() if path.exists() else ""


def _wait_for(condition, proc, what, timeout=120):
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()[1]}"
    assert time.monotonic() < deadline, f"no {what} within {timeout} s"
    time.sleep(0.02)


def _kill(*procs):
  for proc in procs:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_a_second_run_is_refused_and_a_killed_run_does_not_block(synthetic_data, tmp_path):
  workdir = tmp_path / "run"
  first = _start(synthetic_data, workdir, 100_000)  # Runs until killed.
  try:
    _wait_for(lambda: _epochs(workdir), first, "first epoch")
    # Few epochs: were it not refused, it would end at once, not hang.
    second = subprocess.run(_command(synthetic_data, workdir, 3),
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    errors = [l for l in second.stderr.splitlines() if l.startswith("error:")]
    assert errors == [second.stderr.strip().splitlines()[-1]]  # One line, the last.
    assert errors[0].startswith(
        f"error: workdir {workdir} is in use by another training run: pid "
        f"{first.pid} on {socket.gethostname()}, started ")
    assert errors[0].endswith("wait for it to end, or pass another --workdir")
    assert "compiled in" not in second.stderr  # Refused before compiling.
    assert first.poll() is None  # The first run goes on, undisturbed.
    _wait_for(lambda: len(_epochs(workdir)) >= 2, first, "second epoch")
  finally:
    _kill(first)  # SIGKILL: the kernel drops the lock; the note stays.
  killed_at = _epochs(workdir)
  assert killed_at == list(range(1, len(killed_at) + 1))  # No epoch twice.
  assert f'"pid": {first.pid}' in _note(workdir)

  # A new run takes over, warns, and releases the lock when SIGTERM stops it.
  third = _start(synthetic_data, workdir, 100_000)
  try:
    _wait_for(lambda: len(_epochs(workdir)) > len(killed_at), third,
              "epoch after the resume")
    third.send_signal(signal.SIGTERM)
    _, stderr = third.communicate(timeout=120)
  finally:
    _kill(third)
  assert third.returncode == 128 + signal.SIGTERM, stderr
  assert (f"taking over the lock of {workdir}: pid {first.pid} on "
          f"{socket.gethostname()}") in stderr
  assert "ended without releasing it (killed?)" in stderr
  epochs = _epochs(workdir)
  assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > len(killed_at)
  assert _note(workdir) == ""  # Released, not left behind.


def test_the_lock_is_exclusive_and_released_cleanly(tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  holder = workdir_lock.WorkdirLock(tmp_path).acquire()
  note = json.loads(_note(tmp_path))
  assert (note["pid"], note["host"]) == (os.getpid(), socket.gethostname())
  # flock conflicts between two opens of the file, even in one process.
  with pytest.raises(UserError) as refused:
    workdir_lock.WorkdirLock(tmp_path).acquire()
  assert f"pid {os.getpid()} on {socket.gethostname()}, started {note['started']}" in str(
      refused.value)
  assert "\n" not in str(refused.value)
  holder.release()
  assert _note(tmp_path) == ""
  with workdir_lock.WorkdirLock(tmp_path):
    pass
  assert caplog.text == ""  # A cleanly released lock is no stale one.


def test_a_refused_run_writes_nothing(synthetic_data, tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  # With no checkpoint, a run that got this far would empty metrics.jsonl.
  (workdir / "metrics.jsonl").write_text("another run's records\n")
  with workdir_lock.WorkdirLock(workdir):
    with pytest.raises(UserError, match=f"in use by another training run: pid {os.getpid()}"):
      training.train_and_evaluate(toy_config(synthetic_data), workdir)
  assert sorted(p.name for p in workdir.iterdir()) == [".lock", "metrics.jsonl"]
  assert (workdir / "metrics.jsonl").read_text() == "another run's records\n"


def test_a_failed_run_releases_the_lock(synthetic_data, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  config = toy_config(synthetic_data, optimizer="sgd", learning_rate=1e6,
                      lr_schedule="constant", num_epochs=5)
  with pytest.raises(UserError, match="became nan in epoch 1"):
    training.train_and_evaluate(config, tmp_path / "run")
  assert _note(tmp_path / "run") == ""
  with workdir_lock.WorkdirLock(tmp_path / "run"):  # Free again, in this process.
    pass
  assert "taking over" not in caplog.text


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", ""])
  proc.wait()
  return proc.pid


@pytest.mark.parametrize("holder, refused", [
    (lambda: (os.getppid(), socket.gethostname()), True),  # Alive here.
    (lambda: (os.getpid(), "another-host"), True),  # Cannot be checked.
    (lambda: (_dead_pid(), socket.gethostname()), False),  # Gone: stale.
])
def test_without_flock_the_note_decides(tmp_path, monkeypatch, caplog, holder, refused):
  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(workdir_lock.fcntl, "flock", no_flock)
  caplog.set_level(logging.WARNING)
  pid, host = holder()
  (tmp_path / ".lock").write_text(json.dumps(
      {"pid": pid, "host": host, "started": "2026-01-01T00:00:00+00:00"}))
  if refused:
    with pytest.raises(UserError, match=f"pid {pid} on {host}, started .* "
                       f"\\(no file locking here: .*; delete {tmp_path}/.lock if "
                       f"that run has ended\\)"):
      workdir_lock.WorkdirLock(tmp_path).acquire()
    assert json.loads(_note(tmp_path))["pid"] == pid  # Left alone.
  else:
    with workdir_lock.WorkdirLock(tmp_path):
      assert json.loads(_note(tmp_path))["pid"] == os.getpid()
    assert f"taking over the lock of {tmp_path}: pid {pid} on {host}" in caplog.text


def test_distributed_only_process_0_locks_and_every_process_stops(synthetic_data,
                                                                    tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "run"
  workdir.mkdir()
  with workdir_lock.WorkdirLock(workdir):  # Another run's lock (this process).
    procs = [_start(synthetic_data, workdir, 2, "--config.distributed=True",
                    f"--config.coordinator_address=127.0.0.1:{port}",
                    f"--config.coordinator_bind_address=127.0.0.1:{port}",
                    "--config.num_processes=2", f"--config.process_id={i}",
                    "--config.heartbeat_timeout_seconds=10")
             for i in range(2)]
    try:
      results = [p.communicate(timeout=120) for p in procs]
    finally:
      _kill(*procs)
  (_, err0), (_, err1) = results
  assert [p.returncode for p in procs] == [1, 1], err0 + err1
  assert err0.strip().splitlines()[-1].startswith(
      f"error: workdir {workdir} is in use by another training run: pid {os.getpid()}")
  assert err1.strip().splitlines()[-1] == (
      f"error: workdir {workdir} is in use by another training run (process 0 "
      f"names it); wait for it to end, or pass another --workdir")
  assert not (workdir / "metrics.jsonl").exists()
