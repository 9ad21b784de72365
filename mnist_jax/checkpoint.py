"""Checkpoints through orbax: the whole TrainState plus a JSON record of the run.

A checkpoint is numbered by the epoch it ends. orbax writes each one into a
temporary folder and renames it only when complete, so a save cut off by a
kill is never mistaken for a checkpoint; a complete one that still fails to
load (its JSON record carries its own sha256) is skipped in favour of the one
before it. Where none loads, reading stops with a one-line error rather than
training over them from scratch.
"""

import contextlib
import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from mnist_jax import config as config_lib
from mnist_jax import plugins
from mnist_jax.errors import UserError

# <workdir>/best_checkpoint: the best epoch's by validation accuracy, never
# rotated away (between_epochs.Best saves it; trained.py reads it).
BEST_FOLDER = "best_checkpoint"


class Checkpoints:
  """The checkpoints of one workdir: save asynchronously, restore the newest."""

  def __init__(self, directory: Path, keep: int | None = None,
               read_only: bool = False):
    self.directory = Path(directory).absolute()
    self._saving: int | None = None  # The epoch whose save may be in flight.
    if read_only and not self.directory.is_dir():
      raise UserError(f"no checkpoints in {self.directory}; train first: "
                      f"python -m mnist_jax.main --config=... "
                      f"--workdir={self.directory.parent}")
    try:  # It reads each checkpoint's _CHECKPOINT_METADATA.
      with _quiet_about_orbax_metadata():
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=not read_only, read_only=read_only,
                # What a save cut off by a kill left behind goes at the next start.
                cleanup_tmp_directories=not read_only),
            item_names=("state", "meta"))
    except (ValueError, TypeError, KeyError) as e:
      raise UserError(
          f"the checkpoints in {self.directory} cannot be opened: one's "
          f"metadata is corrupt ({type(e).__name__}: {_one_line(e)}); move "
          f"that folder away to train from scratch, or use another --workdir"
      ) from None
    if not read_only:
      # orbax logs a failed background write with tracebacks; wait() says it
      # in one line. (A logger keeps one copy of a filter, however often added.)
      logging.get_absl_logger().addFilter(_not_a_write_failure)

  def epochs(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, epoch: int, state, meta: dict[str, Any]):
    """Starts saving; returns once the arrays are copied off the device.

    The files are written in the background; first this waits for the
    previous save (orbax would too), so that its failure is reported as
    that epoch's.
    """
    self.wait()
    meta = json.loads(json.dumps(meta))  # As it will read back.
    # The user's components it ran, so that reading it back imports them
    # again from anywhere; a run of built-ins only records none.
    used = plugins.used(config_lib.with_defaults(meta["config"]))
    if used:
      meta["plugins"] = used
    meta["sha256"] = _digest(meta)
    self._saving = epoch
    try:
      self._manager.save(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    except OSError as e:
      self._raise_save_error(epoch, _write_failure(e))

  def wait(self):
    """Waits for the last save to be on disk; a failed write is a UserError."""
    epoch, self._saving = self._saving, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      reason = _write_failure(e)
      if reason is None:
        raise  # Not the file system's refusal: a bug, with its traceback.
      self._raise_save_error(epoch, reason)

  def _raise_save_error(self, epoch, reason: str):
    previous = [e for e in self.epochs() if epoch is None or e < epoch]
    kept = (f"the checkpoint of epoch {previous[-1]} is intact"
            if previous else "no earlier checkpoint exists")
    raise UserError(
        f"saving the checkpoint of epoch {epoch} in {self.directory} failed "
        f"({reason}); {kept}: fix that and run the same command to resume"
    ) from None

  def _meta(self, epoch: int) -> dict[str, Any]:
    """The JSON record of checkpoint `epoch`; ValueError where it is corrupt."""
    meta = self._manager.restore(epoch, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta
    check_meta(meta, epoch)
    plugins.recall(meta.get("plugins"))  # Before anything builds its model.
    return meta

  def _candidates(self, epoch: int | None) -> list[int]:
    """The epochs to try, newest first: all, or just `epoch` (which must exist)."""
    if epoch is None:
      return list(reversed(self.epochs()))
    if epoch not in self.epochs():
      raise UserError(f"--checkpoint={epoch}: {self.directory} holds no checkpoint "
                      f"of epoch {epoch}; it holds "
                      f"{', '.join(map(str, self.epochs())) or 'none'}")
    return [epoch]

  def latest_meta(self, epoch: int | None = None) -> dict[str, Any] | None:
    """The JSON record of the newest readable checkpoint (or of `epoch`), or
    None if there is none."""
    errors = []
    for epoch in self._candidates(epoch):
      try:
        return self._meta(epoch)
      except Exception as e:  # pylint: disable=broad-except
        errors.append(self._skipped(epoch, e))
    self._raise_if_unreadable(errors)
    return None

  def restore_latest(self, like_state, config, num_classes: int,
                     epoch: int | None = None) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of the newest checkpoint that loads, or None if there is none.

    `like_state` gives the structure, shapes, dtypes and shardings to restore
    into, or is f(its JSON record) -> that state (a halved run's members:
    halving.py). A checkpoint made by an incompatible config is refused, not
    skipped, and so are checkpoints none of which can be read.
    """
    errors = []
    for epoch in self._candidates(epoch):
      try:
        # The JSON record first: it says whether the state can fit at all.
        meta = self._meta(epoch)
        check_compatible(meta, config, num_classes, self.directory)
        like = like_state(meta) if callable(like_state) else like_state
        check_fits(like, self.directory / str(epoch), meta, config)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        state = self._manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract))).state
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        errors.append(self._skipped(epoch, e))
        continue
      return state, meta
    self._raise_if_unreadable(errors)
    return None

  def _skipped(self, epoch: int, error: Exception) -> str:
    """Logs that checkpoint `epoch` cannot be read; returns why, on one line."""
    reason = f"epoch {epoch}: {type(error).__name__}: {_one_line(error)}"
    logging.warning("skipping unreadable checkpoint %s/%d (%s)", self.directory,
                    epoch, reason)
    return reason

  def _raise_if_unreadable(self, errors: list[str]):
    if errors:  # Starting over would discard them: the user decides.
      raise UserError(
          f"none of the checkpoints in {self.directory} can be restored "
          f"(newest, {errors[0]}); if they are corrupt, move that folder "
          f"away to train from scratch, or use another --workdir")

  def close(self):
    self._manager.close()


# The keys of a checkpoint's JSON record, besides its sha256 (and those a
# record with a sha256 may add: "image_shape", "plugins", ...).
_KEYS = {"config", "num_classes", "class_names", "epoch"}


def _digest(meta: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


# What orbax logs, on opening a workdir's checkpoints, about a checkpoint's
# own _CHECKPOINT_METADATA (timestamps and handler names) that it cannot parse
# or does not expect. mnist_jax needs none of it: it names the items itself,
# and its own JSON record carries a sha256. orbax then either goes on without
# it (the checkpoint loads) or raises, which Checkpoints reports on one line.
# Also its notes that a manager opened read-only is read-only, which every
# evaluate, predict, export, load and init_from does on purpose.
_ORBAX_METADATA_COMPLAINTS = ("Failed to json parse Metadata file",
                              "Failed to read Metadata file",
                              "Metadata file does not exist",
                              "Provided metadata contains unknown key",
                              "Given directory is read only",
                              "CheckpointManagerOptions.read_only=True")


def _not_orbax_metadata_complaint(record) -> bool:
  """A logging filter: False for those records."""
  return not ("/orbax/" in record.pathname.replace("\\", "/")
              and record.getMessage().startswith(_ORBAX_METADATA_COMPLAINTS))


@contextlib.contextmanager
def _quiet_about_orbax_metadata():
  """Drops those records while opening, and only then (orbax logs through absl)."""
  logger = logging.get_absl_logger()
  logger.addFilter(_not_orbax_metadata_complaint)
  try:
    yield
  finally:
    logger.removeFilter(_not_orbax_metadata_complaint)


def _one_line(error: Exception, limit: int = 200) -> str:
  text = " ".join(str(error).split())  # orbax's messages span lines.
  return text if len(text) <= limit else text[:limit - 3] + "..."


def check_meta(meta, epoch: int):
  """Raises ValueError where checkpoint `epoch`'s JSON record is corrupt.

  Its sha256 catches any changed byte, so a flipped bit in a field that
  still parses (pixel_std, tta, ...) cannot silently change the model.
  """
  if not isinstance(meta, dict):
    raise ValueError("the JSON record is not an object")
  body = {k: v for k, v in meta.items() if k != "sha256"}
  if "sha256" in meta and meta["sha256"] != _digest(body):
    raise ValueError("the JSON record does not match its sha256")
  # Without a sha256 (made before they had one), other keys are corrupt ones.
  if not (set(body) >= _KEYS if "sha256" in meta else set(body) == _KEYS):
    raise ValueError(f"the JSON record has keys {sorted(meta)}, expected "
                     f"{sorted(_KEYS)} and sha256")
  class_names = meta["class_names"]
  if not (isinstance(meta["config"], dict) and meta["epoch"] == epoch
          and type(meta["num_classes"]) is int and isinstance(class_names, list)
          and len(class_names) == meta["num_classes"]
          and all(isinstance(n, str) for n in class_names)):
    raise ValueError("the JSON record's config, epoch or classes are malformed")
  used = meta.get("plugins", {})
  if not (isinstance(used, dict) and all(
      isinstance(e, dict) and isinstance(e.get("spec"), str)
      and all(isinstance(v, str) for v in e.values()) for e in used.values())):
    raise ValueError("the JSON record's plugins are malformed")


def recall_plugins(directory: Path):
  """Hands the plugins that the newest checkpoint of `directory` records to
  plugins.recall, before a resume builds its model (from its JSON record's
  file: no checkpoint is opened; one that cannot be read says nothing)."""
  directory = Path(directory)
  epochs = sorted((int(p.name) for p in directory.glob("*") if p.name.isdigit()),
                  reverse=True) if directory.is_dir() else []
  for epoch in epochs:
    try:
      meta = json.loads((directory / str(epoch) / "meta" / "metadata").read_text())
      check_meta(meta, epoch)
    except (OSError, ValueError, KeyError, TypeError):
      continue  # restore_latest says why, or takes an older one.
    plugins.recall(meta.get("plugins"))
    return


def _write_failure(error: Exception) -> str | None:
  """Why the file system refused a checkpoint's write, or None if `error` is
  not such a refusal. orbax raises the OSError of a file it writes itself;
  tensorstore (the arrays) a ValueError naming the OS error code."""
  code = error.errno if isinstance(error, OSError) else None
  if not isinstance(error, OSError):
    found = re.search(r"os_error_code='?(\d+)", str(error))
    if found is None:
      return None
    code = int(found.group(1))
  if code == errno.ENOSPC:
    return "the disk is full"
  return os.strerror(code) if code else getattr(error, "strerror", None) or str(error)


def _not_a_write_failure(record) -> bool:
  """A logging filter: False for orbax's records of a failed checkpoint write."""
  error = record.exc_info[1] if record.exc_info else None
  return not ("/orbax/" in record.pathname.replace("\\", "/") and error is not None
              and _write_failure(error) is not None)


def check_compatible(meta: dict[str, Any], config, num_classes: int,
                     directory: Path):
  """Refuses to resume into a run whose state would not fit the checkpoint,
  or that changes a field a resume may not (its seed, its validation split)."""
  # A field missing from an old checkpoint's config had its default's effect.
  saved = config_lib.with_defaults(meta["config"])
  # The fields a resume may not change (fields.py). Values that switch part
  # of the state on or off (SGD's momentum, the moving average) show in the
  # state's tree: check_fits.
  differences = config_lib.refused_changes(saved, config)
  if meta["num_classes"] != num_classes:
    differences.append(f"{meta['num_classes']} classes there, {num_classes} now")
  if differences:
    raise UserError(
        f"cannot resume from the checkpoints in {directory}: they were made "
        f"with {'; '.join(differences)}; use another --workdir, or the "
        f"original values")


def check_fits(like_state, folder: Path, meta: dict[str, Any], config):
  """Refuses a checkpoint whose state's tree (structure, shapes, dtypes)
  differs from `like_state`'s, the build of `config`: whatever changed it
  (an optimizer's momentum switched off, a moving average on, a component's
  new layout) is caught without a list of the fields that do. The message
  names the differing leaves and the fields changed since the checkpoint."""
  differences = misfits(like_state, folder)
  if not differences:
    return
  before = config_lib.flat(config_lib.with_defaults(meta["config"]))
  now = config_lib.flat(config)
  changed = [f"{f}={before[f]!r} there, {now[f]!r} now"
             for f in sorted(now) if before.get(f) != now[f]]
  raise UserError(
      f"cannot resume from the checkpoints in {folder.parent}: their state "
      f"does not fit this config's ({'; '.join(differences)}); they were made "
      f"with {'; '.join(changed) or 'the same config'}; use another --workdir, "
      f"or the original values")


def _leaf_key(key) -> str:
  """A key of a tree path as orbax's metadata names it ("params", "0")."""
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def leaves(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """'params.conv1.kernel.value' -> (shape, dtype) of each array of `tree`."""
  # nnx keeps each variable's array under "value": left out of the name.
  return {".".join(map(_leaf_key, path)).removesuffix(".value"):
          (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def misfits(like_state, folder: Path, limit: int = 3) -> list[str]:
  """Where the state `like_state` (arrays, or ShapeDtypeStructs of the build)
  and the one saved in checkpoint `folder` (read from orbax's metadata: tree,
  shapes, dtypes; no array is read) differ, at most `limit` of them, then
  how many more: a missing leaf, an extra one, another shape or dtype."""
  saved = ocp.StandardCheckpointHandler().metadata(folder / "state")
  there, now = leaves(saved), leaves(like_state)
  shown = lambda leaf: f"{leaf[1]}{list(leaf[0])}" if leaf else "none"
  differences = [f"{path}: {shown(there.get(path))} there, {shown(now.get(path))} now"
                 for path in sorted(there.keys() | now.keys())
                 if there.get(path) != now.get(path)]
  if len(differences) > limit:
    differences[limit:] = [f"{len(differences) - limit} more"]
  return differences
