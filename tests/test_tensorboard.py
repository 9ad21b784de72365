"""The event files are read back by TensorBoard's own reader."""

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from mnist_jax import tensorboard


def _read(logdir):
  accumulator = event_accumulator.EventAccumulator(str(logdir))
  accumulator.Reload()
  return accumulator


def test_tensorboard_reads_back_the_scalars(tmp_path):
  logdir = tmp_path / "not" / "yet" / "there"
  with tensorboard.SummaryWriter(logdir) as writer:
    for step, loss in [(1, 2.5), (2, 1.25), (3, 0.5)]:
      writer.scalar("train/loss", loss, step)
    writer.scalar("test/accuracy", np.float32(0.875), np.int64(3))
    writer.scalars({"lr": 0.1, "test/loss": -3.0}, step=0)
    writer.scalar("big_step", 1.0, 2**40)
  (path,) = logdir.iterdir()
  assert path.name.startswith("events.out.tfevents.")

  accumulator = _read(logdir)
  assert sorted(accumulator.Tags()["scalars"]) == [
      "big_step", "lr", "test/accuracy", "test/loss", "train/loss"]
  loss = accumulator.Scalars("train/loss")
  assert [(e.step, e.value) for e in loss] == [(1, 2.5), (2, 1.25), (3, 0.5)]
  assert all(abs(e.wall_time - loss[0].wall_time) < 60 for e in loss)
  assert [(e.step, e.value) for e in accumulator.Scalars("test/accuracy")] == [(3, 0.875)]
  assert [(e.step, e.value) for e in accumulator.Scalars("lr")] == [
      (0, pytest.approx(0.1))]
  assert [(e.step, e.value) for e in accumulator.Scalars("test/loss")] == [(0, -3.0)]
  assert [e.step for e in accumulator.Scalars("big_step")] == [2**40]
  assert accumulator.file_version == 2.0


def test_two_writers_in_one_second_get_their_own_files(tmp_path):
  with tensorboard.SummaryWriter(tmp_path) as a, tensorboard.SummaryWriter(tmp_path) as b:
    a.scalar("x", 1.0, 1)
    b.scalar("x", 2.0, 2)
  assert len(list(tmp_path.iterdir())) == 2
  assert sorted(e.value for e in _read(tmp_path).Scalars("x")) == [1.0, 2.0]


def test_mistakes_are_refused(tmp_path):
  writer = tensorboard.SummaryWriter(tmp_path)
  with pytest.raises(TypeError):
    writer.scalar("x", 1.0, 1.5)
  with pytest.raises(TypeError):
    writer.scalars({3: 1.0}, 1)
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("x", 1.0, 1)


def test_crc32c_known_answers():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283
  assert tensorboard.crc32c(b"") == 0
  assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4.
  assert tensorboard.crc32c(b"\xff" * 32) == 0x62A8AB43
