"""What happens between epochs as hooks (between_epochs.py): their written
order, a stop, and the user's hooks with or without the state."""

import jax
from conftest import toy_config

import mnist_jax
from mnist_jax import between_epochs, outputs
from mnist_jax import members as members_lib
from mnist_jax import state as state_lib


class _Recording:
  def __init__(self, name, log, stop=False):
    self.name, self.log, self.stop = name, log, stop

  def on_epoch_end(self, record, state):
    self.log.append((self.name, record["epoch"], state))
    return self.stop


class _Saver:
  def __init__(self):
    self.saved = []

  def save(self, epoch, state):
    self.saved.append(epoch)


def test_the_hooks_run_in_their_written_order_each_seeing_the_epoch():
  log, saver = [], _Saver()
  hooks = [_Recording("a", log), _Recording("b", log, stop=True), _Recording("c", log)]
  assert between_epochs.end_epoch(hooks, {"epoch": 3}, "state", saver)
  # Every hook runs, the one asking to stop too, and the epoch is saved after.
  assert log == [("a", 3, "state"), ("b", 3, "state"), ("c", 3, "state")]
  assert saver.saved == [3]
  assert not between_epochs.end_epoch(hooks[:1], {"epoch": 4}, "state", saver)
  assert saver.saved == [3]


def test_the_runs_own_hooks_come_in_the_order_written_in_one_place(tmp_path):
  config = toy_config("unused", validation_size=100)
  saver = between_epochs.Saver(None, 0, {})
  stopper = between_epochs.EarlyStopping(0, 0.0, [], raised=False)
  best = between_epochs.Best(tmp_path, {}, [])
  members = members_lib.Members.from_config(config)
  hooks = between_epochs.epoch_end_hooks(saver, stopper, best, None, [], None,
                                         members, config, [print])
  assert [type(h).__name__ for h in hooks] == [
      "Divergence", "EarlyStopping", "Checkpoint", "Best", "Files", "Console",
      "Signals", "Callback"]


def test_user_hooks_get_the_state_and_old_callbacks_the_record(synthetic_data,
                                                               tmp_path):
  records, states, objects = [], [], []

  def with_state(record, state):
    states.append((record["epoch"], int(jax.device_get(state.step))))
    return record["epoch"] == 2  # Stops the run after epoch 2 is saved.

  class Watcher:
    def on_epoch_end(self, record, state):
      objects.append(isinstance(state, state_lib.TrainState))

  result = mnist_jax.train(toy_config(synthetic_data, num_epochs=4,
                                      checkpoint_every_epochs=4),
                           workdir=tmp_path / "run",
                           callbacks=[records.append, with_state, Watcher()])
  steps_per_epoch = 256 // 32
  assert states == [(1, steps_per_epoch), (2, 2 * steps_per_epoch)]
  assert [r["epoch"] for r in records] == [1, 2] and objects == [True, True]
  assert "train_loss" in records[0]
  assert [r["epoch"] for r in result.history] == [1, 2]
  assert [r["epoch"] for r in outputs.read_metrics(tmp_path / "run")] == [1, 2]
  # Saved though checkpoint_every_epochs would not have saved it.
  assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
