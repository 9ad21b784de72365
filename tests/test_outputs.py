"""What a run leaves behind besides metrics: TensorBoard events and plots."""

from conftest import toy_config
from test_plots import assert_png
import tolerances

from mnist_jax import training


def test_a_run_writes_tensorboard_scalars_and_plots(synthetic_data, tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=3, plots=True),
                                    workdir)
  events = EventAccumulator(str(workdir / "tensorboard"))
  events.Reload()
  tags = set(events.Tags()["scalars"])
  assert {"train/loss", "train/accuracy", "test/loss", "test/accuracy",
          "learning_rate", "images_per_sec"} <= tags
  accuracy = events.Scalars("test/accuracy")
  assert [e.step for e in accuracy] == [1, 2, 3]
  # Event files hold float32.
  assert accuracy[-1].value == tolerances.stored32(result.summary["final_test_accuracy"])
  # On this easy data there are no mistakes: that plot must still be readable.
  assert result.summary["final_test_accuracy"] == 1.0
  for name in ("training_curves", "confusion_matrix", "test_predictions",
               "confident_mistakes"):
    assert_png(workdir / "plots" / f"{name}.png", 200, 200)  # PNGs, not blank.


def test_a_run_of_two_members_writes_each_ones_hyperparameters_and_accuracy(
    synthetic_data, tmp_path):
  from test_tensorboard import _read, _session
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(
      toy_config(synthetic_data, num_epochs=1, num_seeds=2, seed=5), workdir)
  for k, member in enumerate(result.summary["members"]):
    logdir = workdir / "tensorboard" / f"member_{k}"
    hparams, metrics = _session(logdir)
    # Each member's own seed, and the run's other fields, nested ones flattened.
    assert hparams["seed"] == 5 + k and hparams["model"] == "mlp"
    assert hparams["sweep.learning_rate"] == ""
    assert sorted(metrics) == ["best_test_accuracy", "final_test_accuracy",
                               "test_accuracy_at_best_epoch"]
    final = _read(logdir).Scalars("final_test_accuracy")
    assert [e.value for e in final] == [tolerances.stored32(member["final_test_accuracy"])]


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_leftovers(tmp_path):
  import pytest
  from mnist_jax import fileio
  path = tmp_path / "summary.json"
  fileio.write_json_atomic(path, {"epoch": 1})
  with pytest.raises(RuntimeError):
    with fileio.atomic_file(path) as f:
      f.write('{"epoch": 2, "half')
      raise RuntimeError("killed mid-write")
  assert path.read_text() == '{\n  "epoch": 1\n}\n'
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
  fileio.write_atomic(path, b"whole")
  assert path.read_bytes() == b"whole"
