"""Checkpoints and resume: an interrupted run loses nothing and ends the same."""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, checkpoint_params, toy_config

from mnist_jax import loop, training
from mnist_jax.errors import UserError

NUM_EPOCHS = 12


def _command(data_dir, workdir, *flags):
  return [sys.executable, "-m", "mnist_jax.main",
          f"--config={REPO}/configs/default.py", "--config.dataset=toy",
          f"--config.data_dir={data_dir}", "--config.model=mlp",
          "--config.optimizer=adam", "--config.learning_rate=0.001",
          "--config.batch_size=32", f"--config.num_epochs={NUM_EPOCHS}",
          "--config.plots=False",
          f"--workdir={workdir}", *flags]


def _env():
  return {**os.environ, "PYTHONPATH": str(REPO)}


def _learning_metrics(workdir):
  """metrics.jsonl without the timings, which differ run to run."""
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if "seconds" not in k and "per_sec" not in k}
          for r in records]


def _final_params(workdir):
  return checkpoint_params(workdir / "checkpoints" / str(NUM_EPOCHS) / "state")


def _start_and_interrupt(data_dir, workdir, signum):
  """Starts a run, sends `signum` once checkpoint 1 is complete; returns the process."""
  proc = subprocess.Popen(_command(data_dir, workdir), env=_env(), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 120
  # orbax renames a checkpoint's folder to its epoch only once it is complete.
  while not (workdir / "checkpoints" / "1").is_dir():
    assert proc.poll() is None, proc.communicate()[1]
    assert time.monotonic() < deadline, "no checkpoint within 120 s"
    time.sleep(0.005)
  assert proc.poll() is None, "the run ended before it could be interrupted"
  proc.send_signal(signum)
  proc.wait(timeout=120)
  return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """One run that was never interrupted: the reference."""
  from conftest import synthetic_split, write_dataset
  root = tmp_path_factory.mktemp("reference")
  data_dir = root / "data"
  write_dataset(data_dir / "toy", *synthetic_split(256, 10, seed=1),
                *synthetic_split(100, 10, seed=2))
  result = subprocess.run(_command(data_dir, root / "run"), env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return data_dir, root / "run"


def test_resume_after_sigkill_ends_identical(uninterrupted, tmp_path):
  data_dir, reference = uninterrupted
  workdir = tmp_path / "run"
  proc = _start_and_interrupt(data_dir, workdir, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  assert len(_learning_metrics(workdir)) < NUM_EPOCHS  # Really interrupted.
  resumed = subprocess.run(_command(data_dir, workdir), env=_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert "resuming from the checkpoint of epoch" in resumed.stderr
  assert _learning_metrics(workdir) == _learning_metrics(reference)
  for a, b in zip(_final_params(workdir), _final_params(reference), strict=True):
    np.testing.assert_array_equal(a, b)  # Bitwise.
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["resumed_from_epoch"] >= 1


def test_sigterm_saves_the_last_finished_epoch_and_says_how_to_resume(
    uninterrupted, tmp_path):
  data_dir, reference = uninterrupted
  workdir = tmp_path / "run"
  proc = _start_and_interrupt(data_dir, workdir, signal.SIGTERM)
  stderr = proc.stderr.read()
  assert proc.returncode == 128 + signal.SIGTERM, stderr
  assert "Traceback" not in stderr
  assert "stopped by SIGTERM" in stderr and "run the same command again to resume" in stderr
  finished = len(_learning_metrics(workdir))
  assert finished < NUM_EPOCHS
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == finished  # The last finished epoch is checkpointed.
  resumed = subprocess.run(_command(data_dir, workdir), env=_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr
  assert _learning_metrics(workdir) == _learning_metrics(reference)


def test_ctrl_c_saves_and_exits_130(uninterrupted, tmp_path):
  data_dir, _ = uninterrupted
  workdir = tmp_path / "run"
  proc = _start_and_interrupt(data_dir, workdir, signal.SIGINT)
  stderr = proc.stderr.read()
  assert proc.returncode == 130, stderr
  assert "stopped by SIGINT" in stderr and "Traceback" not in stderr
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == len(_learning_metrics(workdir))


def test_a_checkpoint_cut_off_mid_write_is_never_used(synthetic_data, tmp_path, caplog):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2), workdir)
  # What a kill during orbax's save leaves: a temporary folder for epoch 3.
  partial = workdir / "checkpoints" / "3.orbax-checkpoint-tmp-1700000000000000"
  shutil.copytree(workdir / "checkpoints" / "2", partial)
  for f in partial.rglob("*"):
    if f.is_file():
      f.write_bytes(f.read_bytes()[:10])
  caplog.set_level(logging.INFO)
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3), workdir)
  assert result.summary["resumed_from_epoch"] == 2
  assert [r["epoch"] for r in _learning_metrics(workdir)] == [1, 2, 3]
  assert not partial.exists()  # Cleaned up, not left half-written.


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(
    synthetic_data, tmp_path, caplog):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3), workdir)
  for f in (workdir / "checkpoints" / "3" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"")
  caplog.set_level(logging.INFO)
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=4), workdir)
  assert "skipping unreadable checkpoint" in caplog.text
  assert result.summary["resumed_from_epoch"] == 2
  # Epoch 3's record, trained from the lost checkpoint, is replaced, not doubled.
  assert [r["epoch"] for r in _learning_metrics(workdir)] == [1, 2, 3, 4]


def test_training_longer_resumes_and_continues_the_metrics(synthetic_data, tmp_path,
                                                           monkeypatch):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2), workdir)
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=4), workdir)
  assert result.summary["resumed_from_epoch"] == 2
  assert [r["epoch"] for r in _learning_metrics(workdir)] == [1, 2, 3, 4]
  assert int(result.state.step) == 4 * (256 // 32)
  # The same command again: nothing left to train, so nothing is compiled;
  # the summary is the same run's.
  def must_not_compile(*args, **kwargs):
    raise AssertionError("a finished run compiled its steps again")
  monkeypatch.setattr(loop, "compile_steps", must_not_compile)
  again = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=4), workdir)
  assert again.summary["resumed_from_epoch"] == 4
  assert again.summary["final_test_accuracy"] == result.summary["final_test_accuracy"]
  assert [r["epoch"] for r in _learning_metrics(workdir)] == [1, 2, 3, 4]


@pytest.mark.parametrize("overrides, message", [
    ({"model": "cnn"}, "model='mlp' there, 'cnn' now"),
    ({"optimizer": "sgd"}, "optimizer='adam' there, 'sgd' now"),
    ({"width": 0.5}, "width=1.0 there, 0.5 now"),
])
def test_resume_with_a_config_that_changes_the_state_is_refused(
    synthetic_data, tmp_path, overrides, message):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), workdir)
  before = (workdir / "metrics.jsonl").read_text()
  with pytest.raises(UserError, match=message):
    training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2, **overrides),
                             workdir)
  assert (workdir / "metrics.jsonl").read_text() == before  # Untouched.


def test_a_resume_whose_state_tree_differs_is_refused_naming_the_leaves(
    synthetic_data, tmp_path):
  # No list of fields says that SGD's momentum switched off drops its state:
  # the trees differ (checkpoint.check_fits), and the changed field is named.
  workdir = tmp_path / "run"
  sgd = {"optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.01}
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1, **sgd), workdir)
  with pytest.raises(UserError, match=r"does not fit this config's \(opt_state\."
                     r".* there, none now.*momentum=0\.9 there, 0\.0 now"):
    training.train_and_evaluate(
        toy_config(synthetic_data, num_epochs=2, **{**sgd, "momentum": 0.0}), workdir)


def test_resume_with_other_classes_is_refused(synthetic_data, tmp_path):
  from conftest import synthetic_split, write_dataset
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), workdir)
  write_dataset(synthetic_data / "toy", *synthetic_split(256, 4, 1),
                *synthetic_split(100, 4, 2))
  with pytest.raises(UserError, match="10 classes there, 4 now"):
    training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2), workdir)


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(
    synthetic_data, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), workdir)

  def no_space(self, step, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  with monkeypatch.context() as patch:
    patch.setattr(ocp.CheckpointManager, "save", no_space)
    with pytest.raises(UserError, match=r"epoch 2 .* failed \(the disk is full\); "
                       r"the checkpoint of epoch 1 is intact"):
      training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3), workdir)
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3), workdir)
  assert result.summary["resumed_from_epoch"] == 1


# What tensorstore raised when a real disk filled up under orbax's background
# write (measured on a 200 KB tmpfs): a ValueError, not an OSError.
TENSORSTORE_FULL_DISK = ValueError(
    'RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database at local '
    'file "checkpoints/2.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/'
    'ocdbt.process_0/": Failed to write 535659 bytes to file 4: No space left '
    "on device [os_error_code='28']")


@pytest.mark.parametrize("error, num_epochs", [
    (TENSORSTORE_FULL_DISK, 3),  # Surfaces when epoch 3's save waits for it.
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2),  # At the run's last wait.
], ids=["tensorstore_next_save", "oserror_last_wait"])
def test_a_full_disk_in_the_background_write_is_reported_when_waiting(
    synthetic_data, tmp_path, monkeypatch, error, num_epochs):
  from orbax.checkpoint._src.checkpointers import async_checkpointer
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), workdir)

  # save() returns once the arrays are off the device; the files are written
  # and committed in a background thread, whose failure orbax raises only
  # when the next save or wait_until_finished waits for it.
  def full_disk(directory, commit_futures, *args, **kwargs):
    for future in commit_futures:  # The writes end (on a full disk, failed)...
      future.result()
    raise error  # ...and the thread raises their failure, never committing.
  with monkeypatch.context() as patch:
    patch.setattr(async_checkpointer, "_background_wait_for_commit_futures", full_disk)
    with pytest.raises(UserError, match=r"^saving the checkpoint of epoch 2 in .* "
                       r"failed \(the disk is full\); the checkpoint of epoch 1 is "
                       r"intact: fix that and run the same command to resume$"):
      training.train_and_evaluate(toy_config(synthetic_data, num_epochs=num_epochs),
                               workdir)
  checkpoints = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert checkpoints[0] == "1" and not any(p.isdigit() for p in checkpoints[1:])
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=num_epochs),
                                    workdir)
  assert result.summary["resumed_from_epoch"] == 1
  assert [r["epoch"] for r in _learning_metrics(workdir)] == list(range(1, num_epochs + 1))


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(synthetic_data, tmp_path):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1,
                                      optimizer="sgd", learning_rate=0.05), workdir)
  diverging = toy_config(synthetic_data, num_epochs=3, optimizer="sgd",
                         learning_rate=1e6, lr_schedule="constant")
  with pytest.raises(UserError, match=r"in epoch 2 \(learning rate 1e\+06\); "
                     r"stopped, keeping the checkpoint of epoch 1"):
    training.train_and_evaluate(diverging, workdir)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1"]


# A run made by main at commit 2305a23, before train.py was split into its
# rooms (config, runtime, feed, state, steps, loop, outputs), with:
#   python -m mnist_jax.main --config=configs/mnist160.py --workdir=RUN
#     --config.model=bn_cnn --config.width=0.125 --config.ema_decay=0.9
#     --config.num_seeds=2 --config.num_epochs=1 --config.batch_size=32
#     --config.plots=False
# Two stacked members, batch statistics and EMA weights: every part of the
# state that a checkpoint holds.
_OLD_RUN = REPO / "tests" / "data" / "run_from_2305a23"


def _old_run_config(num_epochs):
  from configs import mnist160
  config = mnist160.get_config()
  config.update(dict(model="bn_cnn", width=0.125, ema_decay=0.9, num_seeds=2,
                     num_epochs=num_epochs, batch_size=32, plots=False))
  return config


def test_a_checkpoint_written_before_the_split_still_resumes(tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(_OLD_RUN, workdir)
  saved = checkpoint_params(workdir / "checkpoints" / "1" / "state")
  result = training.train_and_evaluate(_old_run_config(num_epochs=2), workdir)
  assert result.summary["resumed_from_epoch"] == 1
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2]
  # Epoch 1's record is the old run's, kept as it was written.
  assert records[0] == json.loads((_OLD_RUN / "metrics.jsonl").read_text())
  # Epoch 2 trained on from the saved weights: they moved, but not far.
  resumed = checkpoint_params(workdir / "checkpoints" / "2" / "state")
  assert [p.shape for p in saved] == [p.shape for p in resumed]
  moved = [float(np.max(np.abs(new - old))) for new, old in zip(resumed, saved)]
  assert 0 < max(moved) < 1


def test_a_checkpoint_written_before_the_split_still_evaluates(tmp_path):
  from mnist_jax import trained as trained_lib
  workdir = tmp_path / "run"
  shutil.copytree(_OLD_RUN, workdir)
  trained = trained_lib.load_trained(workdir, member=1)
  assert trained.epoch == 1 and trained.config.seed == 1
  # The moving average becomes the weights: member 1's, as the old run saved
  # it, not its raw weights. Catches an EMA restored from (or copied to) the
  # parameters, another member's, or with_ema_weights leaving them as they were.
  state_path = workdir / "checkpoints" / "1" / "state"
  saved_params = [p[1] for p in checkpoint_params(state_path)]
  saved_ema = [p[1] for p in checkpoint_params(state_path, ("ema", "params"))]
  raw = [np.asarray(p) for p in jax.tree.leaves(trained.state.params)]
  averaged = [np.asarray(p) for p in jax.tree.leaves(trained.with_ema_weights().state.params)]
  assert [p.shape for p in averaged] == [p.shape for p in saved_ema] == [p.shape for p in raw]
  for got, want in zip(raw, saved_params):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(averaged, saved_ema):
    np.testing.assert_array_equal(got, want)
  # A few steps into a decay of 0.9: the average lies well apart from the weights.
  assert any(not np.array_equal(a, w) for a, w in zip(averaged, raw))
