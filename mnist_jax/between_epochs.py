"""What happens between epochs: when to save the newest and the best
checkpoint, and when to stop a run (on a signal, a diverged loss, no more
improvement or a callback's asking). checkpoint.py stores and restores them.

training.py calls these after each finished epoch; each keeps the little
state its decision needs, rebuilt on resume from the run's metrics history.
"""

import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import members as members_lib
from mnist_jax.errors import Interrupted, UserError

class Saver:
  """Saves checkpoints, remembering the newest; stops a run after saving."""

  def __init__(self, checkpoints: checkpoint_lib.Checkpoints, saved_epoch: int,
               meta: dict[str, Any]):
    self.checkpoints, self.saved_epoch, self.meta = checkpoints, saved_epoch, meta
    self._diverged: set[int] = set()

  def save(self, epoch: int, state):
    if epoch > self.saved_epoch:
      self.checkpoints.save(epoch, state, {**self.meta, "epoch": epoch})
      self.saved_epoch = epoch

  def stop_after_saving(self, signum: int, state, epoch: int):
    """Saves the last finished epoch (unless saved already), then stops."""
    self.save(epoch, state)
    self.checkpoints.wait()
    name = signal.Signals(signum).name
    if epoch == 0:
      raise Interrupted(f"stopped by {name} before the first epoch finished; "
                        f"nothing to save", signum)
    raise Interrupted(
        f"stopped by {name}: the checkpoint of epoch {epoch} is in "
        f"{self.checkpoints.directory}; run the same command again to resume",
        signum)

  def check_divergence(self, record: dict[str, Any], train_loss,
                       members: members_lib.Members, files):
    """Stops a run whose every member's training loss is not finite (after
    writing the epoch's record); warns once of each member that diverged
    while others go on."""
    diverged = ~np.isfinite(train_loss)
    if diverged.all():
      files.add_epoch(record)
      self.checkpoints.wait()
      raise UserError(
          f"training loss became "
          f"{record['train_loss'] if members.count == 1 else 'non-finite for every member'}"
          f" in epoch {record['epoch']} (learning rate {record['learning_rate']:.3g}); "
          f"stopped, keeping the checkpoint of epoch {self.saved_epoch or 'none'}; "
          f"lower config.learning_rate")
    for k in np.flatnonzero(diverged):
      if k not in self._diverged:
        self._diverged.add(k)
        logging.warning("member %d (%s) diverged in epoch %d: its training "
                        "loss is not finite; the others go on", k,
                        members.describe(k), record["epoch"])


class Best:
  """The checkpoint of the epoch with the best validation accuracy (the mean
  over members), in <workdir>/best_checkpoint, apart from the newest ones."""

  def __init__(self, workdir: Path, meta: dict[str, Any], history):
    self.checkpoints = checkpoint_lib.Checkpoints(workdir / checkpoint_lib.BEST_FOLDER,
                                                   keep=1)
    self.meta = meta
    self.accuracy = max((r["validation_accuracy"] for r in history), default=-math.inf)

  def update(self, record: dict[str, Any], state):
    if record["validation_accuracy"] > self.accuracy:  # The first of equals.
      self.accuracy = record["validation_accuracy"]
      self.checkpoints.save(record["epoch"], state, {**self.meta,
                                                     "epoch": record["epoch"]})


class EarlyStopping:
  """Stops when validation accuracy has not improved by more than
  `min_delta` for `patience` epochs (0: never), as Keras's EarlyStopping.

  Rebuilt from `history` on resume: a run that stopped early stays stopped
  (`stopped_at`), unless `raised` (num_epochs raised since: it trains on,
  with a fresh patience) or the patience now allows more epochs.
  """

  def __init__(self, patience: int, min_delta: float, history, raised: bool):
    self.patience, self.min_delta = patience, min_delta
    self.best, self.best_epoch, self.stale = -math.inf, 0, 0
    self.stopped_at = None
    for record in history:
      if self.update(record):
        self.stale = 0  # Where it went on after this stop, with more epochs.
    if self.stopped_at and self.stopped_at != history[-1]["epoch"]:
      self.stopped_at = None  # It stopped once, then was given more patience.
    if raised:  # num_epochs raised since the last save: a fresh patience.
      self.stopped_at, self.stale = None, 0
    if self.stopped_at:
      logging.info("this run stopped early at epoch %d (validation accuracy "
                   "did not improve for %d epochs); raise config.num_epochs or "
                   "config.early_stopping_patience to train on", self.stopped_at,
                   self.patience)

  def update(self, record: dict[str, Any]) -> bool:
    """Takes a finished epoch's record; True: stop after it (`announce`)."""
    if not self.patience:
      return False
    accuracy = record["validation_accuracy"]
    if accuracy > self.best + self.min_delta:
      self.best, self.best_epoch, self.stale = accuracy, record["epoch"], 0
      return False
    self.stale += 1
    if self.stale < self.patience:
      return False
    self.stopped_at = record["epoch"]
    return True

  def announce(self):
    logging.info("stopping early after epoch %d: validation accuracy has not "
                 "improved by more than %g for %d epochs (best %.2f%% at "
                 "epoch %d)", self.stopped_at, self.min_delta, self.patience,
                 100 * self.best, self.best_epoch)


def asked_to_stop(callbacks, record: dict[str, Any], saver: Saver, state) -> bool:
  """Calls each callback with the epoch's record; True where one asks to
  stop. Either way, or where one raises, the epoch is saved first."""
  asked = False
  for callback in callbacks:
    try:
      asked = bool(callback(dict(record))) or asked
    except Exception as e:  # pylint: disable=broad-except
      saver.save(record["epoch"], state)
      saver.checkpoints.wait()
      name = getattr(callback, "__qualname__", repr(callback))
      raise UserError(f"callback {name} raised {type(e).__name__}: {e}; the run "
                      f"stopped after saving epoch {record['epoch']}") from e
  if asked:
    saver.save(record["epoch"], state)
    logging.info("stopped after epoch %d: a callback asked to", record["epoch"])
  return asked
