"""What a run leaves behind besides metrics: TensorBoard events and plots."""

from conftest import toy_config
from test_plots import assert_png

from mnist_jax import train


def test_a_run_writes_tensorboard_scalars_and_plots(synthetic_data, tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  workdir = tmp_path / "run"
  result = train.train_and_evaluate(toy_config(synthetic_data, num_epochs=3, plots=True),
                                    workdir)
  events = EventAccumulator(str(workdir / "tensorboard"))
  events.Reload()
  tags = set(events.Tags()["scalars"])
  assert {"train/loss", "train/accuracy", "test/loss", "test/accuracy",
          "learning_rate", "images_per_sec"} <= tags
  accuracy = events.Scalars("test/accuracy")
  assert [e.step for e in accuracy] == [1, 2, 3]
  assert accuracy[-1].value == pytest_approx(result.summary["final_test_accuracy"])
  # On this easy data there are no mistakes: that plot must still be readable.
  assert result.summary["final_test_accuracy"] == 1.0
  for name in ("training_curves", "confusion_matrix", "test_predictions",
               "confident_mistakes"):
    assert_png(workdir / "plots" / f"{name}.png", 200, 200)  # PNGs, not blank.


def pytest_approx(value):
  import pytest
  return pytest.approx(value, rel=1e-6)  # Stored as a 32-bit float.
