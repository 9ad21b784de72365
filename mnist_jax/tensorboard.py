"""TensorBoard scalars and hyperparameters, written with tensorboardX.

tensorboardX writes event files (and the HParams tab's summaries) in pure
Python on top of protobuf, which orbax already brings: no TensorFlow, and no
`tensorboard` either, to watch a run in TensorBoard.

  with SummaryWriter(workdir / "tensorboard") as writer:
    writer.scalar("test/accuracy", 0.98, step=epoch)
    writer.hparams([("member_0", config.to_dict(), {"test/accuracy": 0.98})])
"""

import collections.abc
import itertools
import operator
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HParamValue = float | int | str | bool


def _import_tensorboardx():
  """tensorboardX, imported without PyTorch.

  Its writer imports PyTorch where it is installed (the benchmark extra, a
  user's own), only to accept PyTorch tensors, which this module never
  passes: 2.1 s of the first epoch's end on the shared 2-core AMD EPYC
  (`python -c "import tensorboardX"` in .venv-extras). PyTorch is hidden
  while it imports, unless the process already holds it.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules["torch"] = None  # `import torch` raises ImportError.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return tensorboardX

# Tells apart the event files of writers opened in the same second by one
# process (tensorboardX names them by the second and the host only).
_WRITER_IDS = itertools.count()


def _scalar_value(tag: str, value: Any) -> float:
  """`value` as a float if it is one real number (Python, NumPy or JAX)."""
  array = np.asarray(value)
  if array.dtype.kind not in "biuf" or array.size != 1:
    raise TypeError(f"scalar {tag!r} must be one real number, got {value!r}; "
                    "pass float(...) of the value to record")
  return float(array.reshape(()))


def _hparam_value(value: Any) -> HParamValue | None:
  """A value the HParams tab can show: bool, int, float and str as they are,
  NumPy/JAX scalars as their Python value, None dropped (the tab has no null),
  anything else (a list of layer sizes, a tuple) as its str() so that runs can
  still be told apart and filtered by it."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if getattr(value, "shape", None) == () and hasattr(value, "item"):
    return value.item()
  return str(value)


def flatten_hparams(hparams: Any, prefix: str = "") -> dict[str, HParamValue]:
  """Nested dicts (or ConfigDicts) -> {"sweep.learning_rate": 0.1, ...}, with
  the values made HParams-tab ready by `_hparam_value` and None dropped."""
  if not isinstance(hparams, collections.abc.Mapping) and callable(
      getattr(hparams, "to_dict", None)):
    hparams = hparams.to_dict()  # An ml_collections.ConfigDict.
  flat = {}
  for key, value in hparams.items():
    name = f"{prefix}{key}"
    if not isinstance(value, collections.abc.Mapping) and callable(
        getattr(value, "to_dict", None)):
      value = value.to_dict()
    if isinstance(value, collections.abc.Mapping):
      flat.update(flatten_hparams(value, prefix=f"{name}."))
    elif (value := _hparam_value(value)) is not None:
      flat[name] = value
  return flat


class SummaryWriter:
  """Appends scalars to a new event file in `logdir`, created if need be, and
  writes hyperparameters for the HParams tab into sub-runs of `logdir`.

  tensorboardX writes from a background thread; flush_secs=1 has it flush
  within a second, so TensorBoard shows a running training up to its last
  epoch, and a killed run loses at most its last second. close() writes all.
  """

  def __init__(self, logdir: str | os.PathLike):
    # Imported here: only a run writing TensorBoard pays for it.
    tensorboardX = _import_tensorboardx()

    self.logdir = Path(logdir)
    self._hparams_names = set()
    # Two writers in the same second must not share (and truncate) a file.
    self._writer = tensorboardX.SummaryWriter(
        str(self.logdir), flush_secs=1,
        filename_suffix=f".{os.getpid()}.{next(_WRITER_IDS)}")

  def _open_writer(self):
    if self._writer is None:
      raise ValueError(f"the SummaryWriter of {self.logdir} is closed; "
                       "open a new one to write more")
    return self._writer

  def scalar(self, tag: str, value: float, step: int):
    """Records `value` (a real number: Python, NumPy or JAX) under `tag` at `step`."""
    self.scalars({tag: value}, step)

  def scalars(self, values: dict[str, float], step: int):
    """Records several scalars of one step as one event. NaN and infinities
    are written as they are: a diverged member's loss is worth seeing."""
    from tensorboardX.proto.summary_pb2 import Summary

    writer = self._open_writer()
    if not all(isinstance(tag, str) and tag for tag in values):
      raise TypeError(f"tags must be non-empty strings, got {list(values)}")
    # operator.index: numpy and JAX integers are steps, 1.5 is a mistake.
    step = operator.index(step)
    # The Summary built here rather than by add_scalar: one event per step,
    # tags kept as given, and no tensorboardX warning on every NaN.
    summary = Summary(value=[
        Summary.Value(tag=tag, simple_value=_scalar_value(tag, value))
        for tag, value in values.items()])
    writer.file_writer.add_summary(summary, global_step=step)

  def hparams(self, entries: list[tuple[str, dict[str, Any], dict[str, float]]]):
    """Writes one HParams-tab session per `(name, hparams, metrics)` entry,
    into the sub-run `logdir/name`: one entry per member of a multi-member run
    ("member_0", ...), one for a single run.

    `hparams` may nest dicts (or be a ConfigDict): they are flattened to
    "sweep.learning_rate"; None values are dropped; values not bool, int,
    float or str (lists, tuples) are written as their str(). `metrics` are
    real numbers, shown as the session's metrics (and as one-step scalars of
    the sub-run).
    """
    writer = self._open_writer()
    checked = []
    for name, hparams, metrics in entries:
      if (not isinstance(name, str) or name in ("", ".", "..")
          or "/" in name or os.sep in name):
        raise ValueError(f"hparams entry name {name!r} must be a folder name "
                         "such as 'member_0'")
      if name in self._hparams_names or name in [n for n, _, _ in checked]:
        raise ValueError(f"hparams entry {name!r} is already written in "
                         f"{self.logdir}; give each entry its own name")
      if not all(isinstance(tag, str) and tag for tag in metrics):
        raise TypeError(f"metric names must be non-empty strings, got {list(metrics)}")
      checked.append((name, flatten_hparams(hparams),
                      {tag: _scalar_value(tag, v) for tag, v in metrics.items()}))
    for name, hparams, metrics in checked:
      writer.add_hparams(hparams, metrics, name=name)
      self._hparams_names.add(name)

  def flush(self):
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc_info):
    self.close()
