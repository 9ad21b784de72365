"""The event files are read back by TensorBoard's own reader."""

import math

import numpy as np
import pytest
import tolerances
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

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
    writer.scalar("diverged", float("nan"), 1)  # Written, not refused.
  (path,) = logdir.iterdir()
  assert path.name.startswith("events.out.tfevents.")

  accumulator = _read(logdir)
  assert sorted(accumulator.Tags()["scalars"]) == [
      "big_step", "diverged", "lr", "test/accuracy", "test/loss", "train/loss"]
  loss = accumulator.Scalars("train/loss")
  assert [(e.step, e.value) for e in loss] == [(1, 2.5), (2, 1.25), (3, 0.5)]
  # Written in one go: a clock's seconds, not a rounding (60 s: a loaded machine).
  assert all(abs(e.wall_time - loss[0].wall_time) < 60 for e in loss)
  assert [(e.step, e.value) for e in accumulator.Scalars("test/accuracy")] == [(3, 0.875)]
  assert [(e.step, e.value) for e in accumulator.Scalars("lr")] == [
      (0, tolerances.stored32(0.1))]  # Event files hold float32.
  assert [(e.step, e.value) for e in accumulator.Scalars("test/loss")] == [(0, -3.0)]
  assert [e.step for e in accumulator.Scalars("big_step")] == [2**40]
  assert math.isnan(accumulator.Scalars("diverged")[0].value)
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
  for value in ["1.5", None, [1.0, 2.0]]:
    with pytest.raises(TypeError, match="one real number"):
      writer.scalar("x", value, 1)
  for name in ["", "a/b", ".."]:
    with pytest.raises(ValueError, match="folder name"):
      writer.hparams([(name, {}, {})])
  with pytest.raises(ValueError, match="own name"):
    writer.hparams([("run", {}, {}), ("run", {}, {})])
  with pytest.raises(TypeError, match="one real number"):
    writer.hparams([("run", {}, {"accuracy": "high"})])
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("x", 1.0, 1)
  with pytest.raises(ValueError, match="closed"):
    writer.hparams([("run", {}, {})])
  # Nothing refused was written: the refused entries made no sub-runs.
  assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def _session(logdir):
  """The hparams of the HParams-tab session in `logdir`, as TensorBoard reads them."""
  content = _read(logdir).PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  start = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG])
  experiment = hparams_metadata.parse_experiment_plugin_data(
      content[hparams_metadata.EXPERIMENT_TAG])
  assert hparams_metadata.SESSION_END_INFO_TAG in content
  values = {}
  for name, value in start.hparams.items():
    kind = value.WhichOneof("kind")
    values[name] = getattr(value, kind)
  metric_tags = [m.name.tag for m in experiment.metric_infos]
  return values, metric_tags


def test_tensorboard_reads_back_the_hparams_of_each_member(tmp_path):
  with tensorboard.SummaryWriter(tmp_path) as writer:
    writer.scalar("test/accuracy", 0.5, 1)
    writer.hparams([
        ("member_0", {"learning_rate": 0.1, "batch_size": 128, "optimizer": "adam",
                      "nesterov": True},
         {"test/accuracy": 0.9, "test/loss": np.float32(0.25)}),
        ("member_1", {"learning_rate": 0.01, "batch_size": 256, "optimizer": "sgd",
                      "nesterov": False},
         {"test/accuracy": 0.75, "test/loss": 0.5}),
    ])
  assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
      "member_0", "member_1"]

  values, metric_tags = _session(tmp_path / "member_0")
  assert values == {"learning_rate": 0.1, "batch_size": 128.0,
                    "optimizer": "adam", "nesterov": True}
  assert sorted(metric_tags) == ["test/accuracy", "test/loss"]
  values, _ = _session(tmp_path / "member_1")
  assert values == {"learning_rate": 0.01, "batch_size": 256.0,
                    "optimizer": "sgd", "nesterov": False}

  for member, accuracy, loss in [("member_0", 0.9, 0.25), ("member_1", 0.75, 0.5)]:
    accumulator = _read(tmp_path / member)
    scalars = lambda tag: [e.value for e in accumulator.Scalars(tag)]
    assert scalars("test/accuracy") == [tolerances.stored32(accuracy)]  # float32.
    assert scalars("test/loss") == [tolerances.stored32(loss)]
  # The main run's own scalars are untouched by the members' metrics.
  assert [e.value for e in _read(tmp_path).Scalars("test/accuracy")] == [0.5]


def test_nested_configs_are_flattened_and_nones_dropped(tmp_path):
  import ml_collections

  config = {
      "seed": np.int64(3),
      "model": {"hidden_sizes": [512, 256], "dropout": None},
      "sweep": ml_collections.ConfigDict({"learning_rate": 0.1, "schedule": None}),
      "checkpoint_dir": None,
  }
  assert tensorboard.flatten_hparams(config) == {
      "seed": 3, "model.hidden_sizes": "[512, 256]", "sweep.learning_rate": 0.1}
  with tensorboard.SummaryWriter(tmp_path) as writer:
    writer.hparams([("run", config, {"test/accuracy": 0.5})])
  values, metric_tags = _session(tmp_path / "run")
  assert values == {"seed": 3.0, "model.hidden_sizes": "[512, 256]",
                    "sweep.learning_rate": 0.1}
  assert metric_tags == ["test/accuracy"]
