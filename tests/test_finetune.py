"""Starting a run from a trained one: init_from, freeze, and their refusals."""

import jax
import numpy as np
import pytest
from conftest import checkpoint_params, synthetic_split, toy_config, write_dataset
import tolerances

from mnist_jax import training
from mnist_jax.errors import UserError


@pytest.fixture
def source(synthetic_data, tmp_path):
  """A 10-class toy run (cnn, small), 2 epochs: (data_dir, its workdir)."""
  workdir = tmp_path / "source"
  training.train_and_evaluate(toy_config(synthetic_data, model="cnn", width=0.25,
                                      num_epochs=2), workdir)
  return synthetic_data, workdir


def _params(workdir, epoch):
  return checkpoint_params(workdir / "checkpoints" / str(epoch) / "state")


def test_a_linear_probe_on_other_classes_keeps_the_features_and_trains_a_new_head(
    source, tmp_path):
  data_dir, source_dir = source
  # Three classes where the source had ten: the classifier must start fresh.
  write_dataset(data_dir / "three", *synthetic_split(96, 3, 5), *synthetic_split(30, 3, 6))
  workdir = tmp_path / "probe"
  training.train_and_evaluate(toy_config(data_dir, dataset="three", model="cnn",
                                      width=0.25, num_epochs=1, init_from=str(source_dir),
                                      freeze="features"), workdir)
  before, after = _params(source_dir, 2), _params(workdir, 1)
  # Leaves in order: conv1, conv2, dense1, dense2 (bias, kernel each).
  for old, new in zip(before[:6], after[:6], strict=True):
    np.testing.assert_array_equal(old, new)  # Features: the source's, untouched.
  assert after[-1].shape == (before[-1].shape[0], 3)  # A head for 3 classes...
  assert not np.array_equal(after[-1], np.zeros_like(after[-1]))  # ...that trained.


def test_full_fine_tuning_starts_from_the_source_and_resume_wins(source, tmp_path,
                                                                 caplog):
  data_dir, source_dir = source
  # A learning rate too small to move anything: the run evaluates the source.
  config = lambda epochs: toy_config(data_dir, model="cnn", width=0.25,
                                     num_epochs=epochs, init_from=str(source_dir),
                                     learning_rate=1e-12, lr_schedule="constant")
  workdir = tmp_path / "tuned"
  with caplog.at_level("INFO"):
    first = training.train_and_evaluate(config(1), workdir)
  assert "initialised from the checkpoint of epoch 2" in caplog.text
  import json  # pylint: disable=g-import-not-at-top
  source_summary = json.loads((source_dir / "summary.json").read_text())
  # 8 Adam steps of 1e-12 move each parameter by at most 8e-12
  # (tolerances.adam_steps): an image's two top logits would have to be that
  # close for an accuracy to change. Catches a run that starts afresh.
  assert first.summary["final_test_accuracy"] == source_summary["final_test_accuracy"]
  for old, new in zip(_params(source_dir, 2), _params(workdir, 1), strict=True):
    np.testing.assert_allclose(old, new, rtol=0, atol=tolerances.adam_steps(1e-12, 8))
  # Its own checkpoint, not init_from, on the second run.
  again = training.train_and_evaluate(config(2), workdir)
  assert again.summary["resumed_from_epoch"] == 1


def test_an_unreadable_newest_checkpoint_gives_way_to_the_one_before(source, tmp_path,
                                                                    caplog):
  data_dir, source_dir = source
  for f in (source_dir / "checkpoints" / "2" / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"")
  workdir = tmp_path / "tuned"
  with caplog.at_level("INFO"):
    training.train_and_evaluate(toy_config(data_dir, model="cnn", width=0.25,
                                        num_epochs=1, init_from=str(source_dir),
                                        learning_rate=1e-12,
                                        lr_schedule="constant"), workdir)
  assert "skipping unreadable checkpoint" in caplog.text
  assert "initialised from the checkpoint of epoch 1" in caplog.text
  for old, new in zip(_params(source_dir, 1), _params(workdir, 1), strict=True):
    # 8 Adam steps of 1e-12, as above.
    np.testing.assert_allclose(old, new, rtol=0, atol=tolerances.adam_steps(1e-12, 8))


@pytest.mark.parametrize("overrides, message", [
    ({"init_from": "/nowhere/at/all"}, "init_from=/nowhere/at/all does not exist"),
    ({"model": "mlp"}, r"another architecture \(model='cnn' there, 'mlp' here\)"),
    ({"width": 0.5}, "width=0.25 there, 0.5 here"),
    ({"freeze": "head"}, "config.freeze='head' names no parameters to keep fixed"),
])
def test_bad_init_from_and_freeze_are_one_line_errors(source, tmp_path, overrides,
                                                       message):
  data_dir, source_dir = source
  config = toy_config(data_dir, model="cnn", width=0.25, num_epochs=1,
                      init_from=str(source_dir))
  for key, value in overrides.items():
    config[key] = value
  with pytest.raises(UserError, match=message):
    training.train_and_evaluate(config, tmp_path / "bad")


def test_a_checkpoint_being_written_is_refused(source, tmp_path):
  data_dir, source_dir = source
  partial = source_dir / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
  partial.mkdir()
  with pytest.raises(UserError, match="is a checkpoint being written"):
    training.train_and_evaluate(toy_config(data_dir, model="cnn", width=0.25,
                                        init_from=str(partial)), tmp_path / "bad")


def test_freeze_gives_no_update_to_the_features_even_with_weight_decay():
  from mnist_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from mnist_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.defaults()
  config.optimizer, config.weight_decay, config.freeze = "adamw", 0.1, "features"
  built = state_lib.build(config, 10, 10)
  grads = jax.tree.map(lambda p: p + 1.0, built.state.params)
  updates, _ = built.tx.update(grads, built.state.opt_state, built.state.params)
  moved = {jax.tree_util.keystr(path): float(np.abs(u).max())
           for path, u in jax.tree_util.tree_leaves_with_path(updates)}
  assert all(v == 0 for k, v in moved.items() if "dense2" not in k), moved
  assert all(v > 0 for k, v in moved.items() if "dense2" in k), moved
