"""`<workdir>/metrics.jsonl`: a run's record of each epoch, one JSON object a line.

A run appends a line per epoch. It is read back on resume (which keeps the
epochs up to the checkpoint's), by evaluate's plots and by compare. A last
line without its newline was cut off by a kill and is left out; any other
line that is not a record as a run writes it is a corrupt file, refused with
the line's number rather than read as wrong curves or a wrong summary.
"""

import json
import os
from pathlib import Path
from typing import Any

from mnist_jax.errors import UserError

# What summary.json, the plots and the logs read from every record.
REQUIRED = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
            "learning_rate", "epoch_seconds")
# And from each of a record's "members" and "ensembles".
REQUIRED_PER_MODEL = ("test_loss", "test_accuracy")


def _is_number(value) -> bool:
  return type(value) in (int, float)  # Not bool; NaN is a diverged loss.


def _problem(record) -> str | None:
  """What makes `record` not an epoch's record, or None."""
  if not isinstance(record, dict):
    return "is not a JSON object"
  if type(record.get("epoch")) is not int or record["epoch"] < 1:
    return "has no epoch number"
  for name in REQUIRED:
    if not _is_number(record.get(name)):
      return f"has no number '{name}'"
  for group in ("members", "ensembles"):
    models = record.get(group, [])
    if not (isinstance(models, list) and all(
        isinstance(m, dict) and all(_is_number(m.get(k)) for k in REQUIRED_PER_MODEL)
        for m in models)):
      return f"has no {', '.join(REQUIRED_PER_MODEL)} for each of its '{group}'"
  return None


def _parse(line: bytes):
  try:
    return json.loads(line.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError):
    return None


def read_metrics(workdir: str | os.PathLike,
                 up_to_epoch: int | None = None) -> list[dict[str, Any]]:
  """The records in `<workdir>/metrics.jsonl` (of epochs <= up_to_epoch), or []."""
  path = Path(workdir) / "metrics.jsonl"
  try:
    lines = path.read_bytes().split(b"\n")
  except FileNotFoundError:
    return []
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror}); fix its permissions") from None
  *complete, unterminated = lines  # b"" when the file ends with its newline.
  history = []
  for number, line in enumerate(complete, start=1):
    record = _parse(line)
    problem = "is not JSON" if record is None else _problem(record)
    if problem is None and history and record["epoch"] != history[-1]["epoch"] + 1:
      problem = f"is epoch {record['epoch']}, after epoch {history[-1]['epoch']}"
    if problem:
      raise UserError(
          f"{path} is corrupt: line {number} {problem}; restore the file, or "
          f"delete that line and the ones after it (their epochs lose their curves)")
    history.append(record)
  record = _parse(unterminated)  # Whole when only its newline was lost.
  if (record is not None and _problem(record) is None
      and (not history or record["epoch"] == history[-1]["epoch"] + 1)):
    history.append(record)
  return [r for r in history if up_to_epoch is None or r["epoch"] <= up_to_epoch]


def resume_metrics(workdir: Path, up_to_epoch: int,
                   rewrite: bool = True) -> list[dict[str, Any]]:
  """The records of epochs 1..up_to_epoch, rewriting the file to just those.

  After a resume the file continues from the checkpoint's epoch: records of
  epochs trained after that checkpoint were lost with the run and are
  trained, and written, again.
  """
  history = read_metrics(workdir, up_to_epoch) if up_to_epoch else []
  if rewrite:  # Beside it, then renamed: a kill never leaves half of it.
    path = Path(workdir) / "metrics.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)
  return history
