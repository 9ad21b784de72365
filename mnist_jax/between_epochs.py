"""What happens between epochs: when to save the newest and the best
checkpoint, and when to stop a run (on a signal, a diverged loss, no more
improvement or a callback's asking). checkpoint.py stores and restores them.

Each is a hook, `on_epoch_end(record, state) -> stop?`, called after each
finished epoch with its record (metrics.jsonl's) and state; `epoch_end_hooks`
lists them in their order, `end_epoch` runs them. Each keeps the little
state its decision needs, rebuilt on resume from the run's metrics history.
"""

import inspect
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from absl import logging

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import members as members_lib
from mnist_jax import outputs
from mnist_jax import summary as summary_lib
from mnist_jax.errors import Interrupted, UserError


class Hook(Protocol):
  """Called after each finished epoch; True: stop the run after this epoch
  (saved first). A hook before the files' may add fields to the record.
  A hook that asks to stop may say why in `announce()`."""

  def on_epoch_end(self, record: dict[str, Any], state) -> bool:
    ...

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
      # By its original number in a halved run, whose positions change.
      member = record["members"][k].get("member", k) if "members" in record else k
      if member not in self._diverged:
        self._diverged.add(member)
        logging.warning("member %d (%s) diverged in epoch %d: its training "
                        "loss is not finite; the others go on", member,
                        members.describe(k), record["epoch"])


class Best:
  """The checkpoint of the epoch with the best validation accuracy (the mean
  over members), in <workdir>/best_checkpoint, apart from the newest ones."""

  def __init__(self, workdir: Path, meta: dict[str, Any], history):
    self.checkpoints = checkpoint_lib.Checkpoints(workdir / checkpoint_lib.BEST_FOLDER,
                                                   keep=1)
    self.meta = meta
    # summary.selected's rank: validation accuracy, ties by the lower loss.
    self.rank = max((_rank(r) for r in history), default=(-math.inf, -math.inf))

  def update(self, record: dict[str, Any], state):
    if _rank(record) > self.rank:  # The first of equal ranks.
      self.rank = _rank(record)
      self.checkpoints.save(record["epoch"], state, {**self.meta,
                                                     "epoch": record["epoch"]})

  def on_epoch_end(self, record: dict[str, Any], state) -> bool:
    self.update(record, state)
    return False


def _rank(record: dict[str, Any]) -> tuple[float, float]:
  return summary_lib.rank(record["validation_accuracy"], record["validation_loss"])


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

  def on_epoch_end(self, record: dict[str, Any], state) -> bool:
    return self.update(record)

  def announce(self):
    logging.info("stopping early after epoch %d: validation accuracy has not "
                 "improved by more than %g for %d epochs (best %.2f%% at "
                 "epoch %d)", self.stopped_at, self.min_delta, self.patience,
                 100 * self.best, self.best_epoch)


class Divergence:
  """Stops the run when every member's training loss is not finite
  (Saver.check_divergence)."""

  def __init__(self, saver: Saver, members: members_lib.Members, files):
    self.saver, self.members, self.files = saver, members, files

  def on_epoch_end(self, record, state) -> bool:
    losses = (record["train_loss"] if self.members.count == 1 else
              [m["train_loss"] for m in record["members"]])
    self.saver.check_divergence(record, np.asarray(losses), self.members, self.files)
    return False


class Checkpoint:
  """Saves every `every` epochs, the last one, and the one early stopping
  stops at; the save's seconds go into the record."""

  def __init__(self, saver: Saver, every: int, last: int, stopper: EarlyStopping):
    self.saver, self.every, self.last, self.stopper = saver, every, last, stopper

  def on_epoch_end(self, record, state) -> bool:
    epoch = record["epoch"]
    if epoch % self.every == 0 or epoch == self.last or self.stopper.stopped_at == epoch:
      start = time.perf_counter()
      self.saver.save(epoch, state)
      record["checkpoint_seconds"] = time.perf_counter() - start
    return False


class Files:
  """Writes the record (metrics.jsonl, TensorBoard) and adds it to the
  run's history."""

  def __init__(self, files, history: list):
    self.files, self.history = files, history

  def on_epoch_end(self, record, state) -> bool:
    self.files.add_epoch(record)
    self.history.append(record)
    return False


class Console:
  """The epoch's line on the console."""

  def __init__(self, num_epochs: int, num_members: int):
    self.num_epochs, self.num_members = num_epochs, num_members

  def on_epoch_end(self, record, state) -> bool:
    outputs.log_epoch(record, self.num_epochs, self.num_members)
    return False


class Signals:
  """Stops on SIGTERM or Ctrl-C (signals.StopOnSignal) after saving."""

  def __init__(self, stop, saver: Saver):
    self.stop, self.saver = stop, saver

  def on_epoch_end(self, record, state) -> bool:
    if self.stop.requested:
      self.saver.stop_after_saving(self.stop.signum, state, record["epoch"])
    return False


class Callback:
  """A user's hook: an object with `on_epoch_end(record, state)`, or a
  callable of the record alone (as before) or of (record, state). It gets a
  copy of the record; where it raises, the epoch is saved first."""

  def __init__(self, callback, saver: Saver):
    self.callback, self.saver, self.epoch = callback, saver, 0
    if hasattr(callback, "on_epoch_end"):
      self._call = callback.on_epoch_end
    elif _takes_state(callback):
      self._call = callback
    else:
      self._call = lambda record, state: callback(record)

  def on_epoch_end(self, record, state) -> bool:
    self.epoch = record["epoch"]
    try:
      return bool(self._call(dict(record), state))
    except Exception as e:  # pylint: disable=broad-except
      self.saver.save(record["epoch"], state)
      self.saver.checkpoints.wait()
      name = getattr(self.callback, "__qualname__", type(self.callback).__qualname__)
      raise UserError(f"callback {name} raised {type(e).__name__}: {e}; the run "
                      f"stopped after saving epoch {record['epoch']}") from e

  def announce(self):
    logging.info("stopped after epoch %d: a callback asked to", self.epoch)


def _takes_state(callback: Callable) -> bool:
  """Whether `callback` takes two positional arguments without defaults."""
  try:
    parameters = inspect.signature(callback).parameters.values()
  except (TypeError, ValueError):  # Some builtins: the record alone.
    return False
  return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
             and p.default is p.empty for p in parameters) >= 2


def epoch_end_hooks(saver: Saver, stopper: EarlyStopping, best: Best | None,
                    files, history: list, stop, members: members_lib.Members,
                    config, callbacks: Sequence = (), halving=None) -> list[Hook]:
  """The hooks of a run, in the order they run after each epoch. Why this
  order: successive halving's (halving.py) first: it gives the record's
  members their original numbers, for the hooks after it, and puts its
  rung's decision in the checkpoint's record before the saves; divergence
  next, so that a diverged epoch is written but never saved (the last good
  checkpoint stays); early stopping before the
  checkpoint, which saves the epoch it stops at; the checkpoints before the
  files, whose record holds the save's seconds; the console's line once the
  epoch is on disk; a signal then stops the run with everything written;
  the user's callbacks last, seeing the epoch saved and written."""
  return [*((halving,) if halving else ()), Divergence(saver, members, files),
          stopper,
          Checkpoint(saver, config.checkpoint_every_epochs, config.num_epochs,
                     stopper),
          *((best,) if best else ()), Files(files, history),
          Console(config.num_epochs, members.count), Signals(stop, saver),
          *(Callback(c, saver) for c in callbacks)]


def end_epoch(hooks: Sequence[Hook], record: dict[str, Any], state,
              saver: Saver) -> bool:
  """Runs every hook on the finished epoch, in order; True where one asked
  to stop: the epoch is then saved, and each that asked says why."""
  asking = [hook for hook in hooks if hook.on_epoch_end(record, state)]
  if asking:
    saver.save(record["epoch"], state)
    for hook in asking:
      if hasattr(hook, "announce"):
        hook.announce()
  return bool(asking)
