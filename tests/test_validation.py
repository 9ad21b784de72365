"""A validation split, selection on it, early stopping and the best checkpoint."""

import json

import numpy as np
import pytest
from conftest import synthetic_split, toy_config

from mnist_jax import data, feed, loop, outputs, training
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained


def _dataset(num_train=300, seed=0):
  images, labels = synthetic_split(num_train, 10, seed)
  test_images, test_labels = synthetic_split(50, 10, seed + 1)
  return data.checked("toy", "toy", tuple("0123456789"), images, labels,
                      test_images, test_labels)


def test_the_held_out_images_are_stratified_and_chosen_by_the_validation_seed_alone():
  dataset = _dataset()
  split = feed.with_validation(dataset, 60, seed=0, batch_size=32)
  counts = np.bincount(dataset.train_labels, minlength=10)
  held = np.bincount(split.val_labels, minlength=10)
  # Each class's share, to within the rounding (catches a plain random pick).
  assert held.sum() == 60 and np.all(np.abs(held - 60 * counts / 300) < 1)
  assert len(split.train_labels) == 240
  # Disjoint, and together the whole training split.
  together = np.concatenate([split.train_images, split.val_images])
  assert sorted(map(bytes, together)) == sorted(map(bytes, dataset.train_images))
  # The same images whatever else changes; others with another validation_seed.
  again = feed.with_validation(dataset, 60, seed=0, batch_size=128)
  np.testing.assert_array_equal(again.val_images, split.val_images)
  other = feed.with_validation(dataset, 60, seed=1, batch_size=32)
  assert not np.array_equal(other.val_images, split.val_images)
  # A dataset that ships a validation split keeps it.
  assert feed.with_validation(split, 10, seed=0, batch_size=32) is split


@pytest.mark.parametrize("size, message", [
    (5, "hold out at least one image per class"),
    (290, "leave at least one batch of 32"),
])
def test_a_validation_split_too_small_or_too_large_is_refused(size, message):
  with pytest.raises(UserError, match=message):
    feed.with_validation(_dataset(), size, seed=0, batch_size=32)


def test_bad_validation_settings_are_one_line_errors(synthetic_data, tmp_path):
  with pytest.raises(UserError, match="config.validation_size must be 0 .off. or a positive"):
    training.train_and_evaluate(toy_config(synthetic_data, validation_size=-1), tmp_path / "a")
  with pytest.raises(UserError, match="early_stopping_patience needs a validation split"):
    training.train_and_evaluate(toy_config(synthetic_data, early_stopping_patience=2),
                             tmp_path / "b")
  assert not (tmp_path / "b").exists()  # Refused before anything was written.


def test_selection_is_on_validation_and_the_best_checkpoint_is_kept(synthetic_data,
                                                                    tmp_path):
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(
      toy_config(synthetic_data, validation_size=50, num_epochs=4,
                 checkpoints_to_keep=1), workdir)
  history = outputs.read_metrics(workdir)
  assert all(0 <= r["validation_accuracy"] <= 1 for r in history)
  summary = result.summary
  # Ties in validation accuracy go to the lower validation loss.
  best = max(history, key=lambda r: (r["validation_accuracy"], -r["validation_loss"]))
  assert summary["selected_on"] == "validation"
  assert summary["best_epoch"] == best["epoch"]
  assert summary["best_validation_accuracy"] == best["validation_accuracy"]
  assert summary["test_accuracy_at_best_epoch"] == best["test_accuracy"]
  # Kept apart from the newest (only 1 kept), never rotated away.
  assert [p.name for p in (workdir / "best_checkpoint").iterdir()
          if p.name.isdigit()] == [str(best["epoch"])]
  assert load_trained(workdir).epoch == best["epoch"]  # The default: best.
  assert load_trained(workdir, checkpoint="last").epoch == 4
  with pytest.raises(UserError, match="holds no checkpoint of epoch 2"):
    load_trained(workdir, checkpoint="2")


def test_without_a_validation_split_selection_is_said_to_be_on_test(synthetic_data,
                                                                    tmp_path):
  result = training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2),
                                    tmp_path / "run")
  assert result.summary["selected_on"] == "test"
  assert "best_validation_accuracy" not in result.summary
  with pytest.raises(UserError, match="kept no best checkpoint"):
    load_trained(tmp_path / "run", checkpoint="best")


def _must_not_compile(*args, **kwargs):
  raise AssertionError("a run with nothing left to train compiled its steps")


def test_early_stopping_stops_stays_stopped_and_trains_on_when_allowed(
    synthetic_data, tmp_path, monkeypatch):
  # A learning rate too small to change a prediction: accuracy never improves.
  config = lambda **kw: toy_config(synthetic_data, validation_size=50,
                                   learning_rate=1e-12, lr_schedule="constant",
                                   early_stopping_patience=2, **kw)
  workdir = tmp_path / "run"
  first = training.train_and_evaluate(config(num_epochs=10), workdir)
  # Epoch 1 sets the best; 2 and 3 do not improve on it: stop after 3.
  assert first.summary["stopped_early_at_epoch"] == 3
  assert [r["epoch"] for r in outputs.read_metrics(workdir)] == [1, 2, 3]
  # The same command again: stays stopped, without compiling for nothing.
  with monkeypatch.context() as patch:
    patch.setattr(loop, "compile_steps", _must_not_compile)
    again = training.train_and_evaluate(config(num_epochs=10), workdir)
  assert again.summary["stopped_early_at_epoch"] == 3
  assert again.summary["compile_seconds"] == 0.0
  assert again.summary["seconds_to_first_step"] is None
  assert len(outputs.read_metrics(workdir)) == 3
  # More patience: trains on, and stops when that runs out too.
  more = toy_config(synthetic_data, validation_size=50, learning_rate=1e-12,
                    lr_schedule="constant", early_stopping_patience=3, num_epochs=10)
  result = training.train_and_evaluate(more, workdir)
  assert result.summary["stopped_early_at_epoch"] == 4
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["stopped_early_at_epoch"] == 4
  # More epochs: trains on with a fresh patience.
  longer = training.train_and_evaluate(config(num_epochs=12), workdir)
  assert longer.summary["stopped_early_at_epoch"] == 6
