"""The workdir's files and the console's lines: their single owner.

A run writes `metrics.jsonl` (a record per epoch, one JSON object a line),
TensorBoard's event files (scalars per epoch; hyperparameters with the final
accuracy, one session per member, for its HParams tab) and `summary.json`,
through `RunFiles`, on process 0 only; summary.json and a resumed
metrics.jsonl are replaced whole (fileio.atomic_file).

metrics.jsonl is read back on resume (which keeps the epochs up to the
checkpoint's), by evaluate's plots and by compare. A last line without its
newline was cut off by a kill and is left out; any other line that is not a
record as a run writes it is a corrupt file, refused with the line's number
rather than read as wrong curves or a wrong summary.
"""

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from mnist_jax import config as config_lib
from mnist_jax import fileio
from mnist_jax import members as members_lib
from mnist_jax import models
from mnist_jax import summary as summary_lib
from mnist_jax import tensorboard
from mnist_jax.errors import UserError


def prepare_workdir(workdir: Path) -> Path:
  """`workdir`, created; refused in one line when it cannot be written."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_test.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise UserError(f"cannot write to workdir {workdir} ({e.strerror}); "
                    f"pass --workdir with a writable folder") from None
  return workdir


class RunFiles:
  """metrics.jsonl, TensorBoard, summary.json and the profile of a run; only
  process 0 (`enabled`) writes them. TensorBoard's file is opened at the
  first epoch."""

  def __init__(self, workdir: Path, enabled: bool):
    self.workdir, self.enabled = workdir, enabled
    self._tensorboard = None

  @property
  def profile_dir(self) -> Path | None:
    """<workdir>/profile, config.profile_steps' traces (loop.Profile writes
    them through jax.profiler); None where this process writes nothing."""
    return self.workdir / "profile" if self.enabled else None

  def resume(self, up_to_epoch: int) -> list[dict[str, Any]]:
    """The records of epochs 1..up_to_epoch; metrics.jsonl cut to them."""
    return resume_metrics(self.workdir, up_to_epoch, rewrite=self.enabled)

  def add_epoch(self, record: dict[str, Any]):
    if not self.enabled:
      return
    with (self.workdir / "metrics.jsonl").open("a") as f:
      f.write(json.dumps(record) + "\n")
    self._writer().scalars({
        "train/loss": record["train_loss"],
        "train/accuracy": record["train_accuracy"],
        "test/loss": record["test_loss"],
        "test/accuracy": record["test_accuracy"],
        "learning_rate": record["learning_rate"],
        "images_per_sec": record["images_per_sec"],
        **({"validation/loss": record["validation_loss"],
            "validation/accuracy": record["validation_accuracy"]}
           if "validation_accuracy" in record else {})}, step=record["epoch"])

  def finish(self, summary: dict[str, Any], members: members_lib.Members):
    """summary.json, and the hyperparameters of each member with its
    accuracies (validation first) for TensorBoard's HParams tab."""
    if not self.enabled:
      return
    fileio.write_json_atomic(self.workdir / "summary.json", summary)
    per_member = summary.get("members", [summary])
    self._writer().hparams([
        (f"member_{k}" if members.count > 1 else "hparams",
         {**summary["config"], **members.describe(k)},
         {**({"best_validation_accuracy": m["best_validation_accuracy"]}
             if "best_validation_accuracy" in m else {}),
          "final_test_accuracy": m["final_test_accuracy"],
          "best_test_accuracy": m["best_test_accuracy"],
          "test_accuracy_at_best_epoch": m["test_accuracy_at_best_epoch"]})
        for k, m in enumerate(per_member)])

  def _writer(self) -> tensorboard.SummaryWriter:
    if self._tensorboard is None:
      self._tensorboard = tensorboard.SummaryWriter(self.workdir / "tensorboard")
    return self._tensorboard

  def close(self):
    if self._tensorboard:
      self._tensorboard.close()


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
  if rewrite:  # A kill never leaves half of it.
    fileio.write_atomic(Path(workdir) / "metrics.jsonl",
                 "".join(json.dumps(r) + "\n" for r in history))
  return history


def log_start(config, dataset, mesh, plan, state, members: members_lib.Members):
  """The run's first lines: devices, config, data, model, members, epoch plan."""
  logging.info("backend %s, %d device(s): %s; mesh %s", plan.backend,
               plan.num_devices, jax.devices()[0].device_kind, dict(mesh.shape))
  logging.info("config: %s", _trained_differences(config, members) or "the defaults")
  logging.info("%s: %d train / %d test images, %d classes; model %s with %s "
               "parameters", dataset.name, plan.num_train,
               len(dataset.test_labels), dataset.num_classes, config.model,
               f"{models.num_params(state.params) // members.count:,}")
  if members.count > 1:
    logging.info("%d members in one compiled program (%s): seeds %s%s",
                 members.count,
                 members_lib.member_loop(config.member_loop, plan.backend),
                 list(members.seeds),
                 f" at each of {len(members.points)} sweep points of "
                 f"{', '.join(members.swept)}" if members.swept else "")
  if dataset.val_labels is not None:
    logging.info("validation: %d images; the best epoch, early stopping and the "
                 "best checkpoint are chosen on them, not on the test set",
                 len(dataset.val_labels))
  dropped = plan.num_train - plan.steps_per_epoch * plan.batch_size
  logging.info("each epoch: %d steps of %d, %d step(s) per compiled call%s",
               plan.steps_per_epoch, plan.batch_size, plan.steps_per_call,
               f"; the last partial batch ({dropped} images, a different "
               f"subset each epoch) is dropped" if dropped else "")


def _trained_differences(config, members: members_lib.Members) -> str:
  """config_lib.differences of the config the members trained with: a
  field a sweep set at one value for all of them has that value; one set at
  several says so."""
  trained, several = config.copy_and_resolve_references(), []
  with trained.unlocked():
    for field, values in summary_lib.swept_values(members).items():
      if len(values) == 1:
        trained[field] = values[0]
      else:
        several.append(field)
  own = [d for d in config_lib.differences(trained).split(", ")
         if d and d.split("=")[0] not in several]
  return ", ".join(own + [f"{field}: {summary_lib.SWEPT}" for field in several])


def epoch_values(members: members_lib.Members, values: dict[str, Any],
                 ensembles: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
  """An epoch's metrics for its record: each of `values` (floats, or [M]
  arrays with a value per member) as the mean over members; with several
  members also each one's (under "members") and the ensembles' of each
  sweep point's seeds (under "ensembles")."""
  record = {name: float(np.mean(v)) for name, v in values.items()}
  if members.count > 1:
    record["members"] = [
        {**members.describe(k), **{name: float(v[k]) for name, v in values.items()}}
        for k in range(members.count)]
  if ensembles is not None:
    losses, accuracies = ensembles
    record["ensembles"] = [
        {**point, "seeds": list(members.seeds), "test_loss": float(losses[p]),
         "test_accuracy": float(accuracies[p])}
        for p, point in enumerate(members.points)]
  return record


def epoch_record(result, plan, members: members_lib.Members, schedule,
                 chance: summary_lib.Chance | None = None,
                 config=None) -> dict[str, Any]:
  """metrics.jsonl's record of a finished epoch (a loop.EpochResult, of a
  loop.Plan; `schedule`, config.learning_rate's, gives its last step's
  learning rate). With `chance`, each member's "status" (Chance.status).
  With `config`, a learning rate every member trained with in a sweep of
  one value is the record's, on the same schedule."""
  images_per_sec = plan.images_per_epoch / result.epoch_seconds
  values = epoch_values(members, result.values, result.ensembles)
  if chance is not None:
    for member in values.get("members", []):
      member["status"] = chance.status(member)
  learning_rate = float(schedule(result.epoch * plan.steps_per_epoch - 1))
  shared = summary_lib.swept_values(members).get("learning_rate", [])
  if config is not None and len(shared) == 1:  # Schedules scale with their peak.
    learning_rate *= shared[0] / config.learning_rate
  return {
      "epoch": result.epoch,
      **values,
      "learning_rate": learning_rate,
      "images_per_sec": images_per_sec,
      **({"images_per_sec_all_members": members.count * images_per_sec}
         if members.count > 1 else {}),
      "epoch_seconds": result.epoch_seconds,
      "eval_seconds": result.eval_seconds,
  }


def _accuracy(record: dict[str, Any], split: str) -> str:
  """`split`'s accuracy in an epoch's line: with members, their range and mean."""
  mean = f"{100 * record[f'{split}_accuracy']:.2f}%"
  if "members" not in record:
    return f"acc {mean}"
  accuracies = [100 * m[f"{split}_accuracy"] for m in record["members"]]
  return f"acc {min(accuracies):.2f}..{max(accuracies):.2f}% (mean {mean})"


def log_epoch(record: dict[str, Any], num_epochs: int, num_members: int):
  """An epoch's line: validation (where there is a split) before test; with
  members, the range and mean of their accuracies, and which members the
  means include that diverged or are at chance (summary.Chance)."""
  splits = "  ".join(
      f"{split} loss {record[f'{split}_loss']:.4f} {_accuracy(record, split)}"
      for split in ("validation", "test") if f"{split}_accuracy" in record)
  members = ""
  if num_members > 1:
    members = "  " + summary_lib.collapsed_note(
        [m.get("status", "ok") for m in record["members"]],
        [m.get("member", k) for k, m in enumerate(record["members"])]
    ).replace("mean", "means", 1)
  logging.info(
      "epoch %d/%d  train loss %.4f acc %.2f%%  %s  %s img/s  %.1f s%s%s%s",
      record["epoch"], num_epochs, record["train_loss"],
      100 * record["train_accuracy"], splits,
      f"{record['images_per_sec']:,.0f}", record["epoch_seconds"], members,
      f"  (EMA: test acc {100 * record['ema_test_accuracy']:.2f}%)"
      if "ema_test_accuracy" in record else "",
      "  ensembles: " + ", ".join(f"{100 * e['test_accuracy']:.2f}%"
                                  for e in record["ensembles"])
      if "ensembles" in record else "")


def _values(values: dict[str, Any]) -> str:
  return ", ".join(f"{k}={v:g}" for k, v in values.items()) or "all members"


def log_members(summary: dict[str, Any], members: members_lib.Members):
  """One line per sweep point: its seeds' accuracies at their best epochs,
  validation's first (mean, std, range; for test, the 95% interval of the
  mean and p against the first point), ensembled; then the point and member
  validation chose, and a warning for each member that diverged or stayed
  at chance (included in the means)."""
  on = summary["chosen_point"]["selected_on"]
  for point in summary["points"]:
    test = point["test_accuracy_at_best_epoch" if on == "validation"
                 else "final_test_accuracy"]
    ci95, p_value = test["ci95"], point.get("p_vs_first_point")
    validation = point.get("validation_accuracy_at_best_epoch")
    logging.info(
        "%s: %stest accuracy %.2f%% mean over seeds %s (std %.2f, %.2f..%.2f%%%s)"
        "%s%s%s", _values(members.points[point["index"]]),
        f"validation accuracy {100 * validation['mean']:.2f}% (std "
        f"{100 * validation['std']:.2f}, {100 * validation['min']:.2f}.."
        f"{100 * validation['max']:.2f}%) at the best epochs, "
        if validation else "final ", 100 * test["mean"], point["seeds"],
        100 * test["std"], 100 * test["min"], 100 * test["max"],
        f"; 95% CI of the mean {100 * ci95[0]:.2f}..{100 * ci95[1]:.2f}%" if ci95 else "",
        f"; p = {p_value:.3g} against the first point (Welch)" if p_value is not None else "",
        f"; their ensemble {100 * point['final_ensemble_test_accuracy']:.2f}%"
        if "final_ensemble_test_accuracy" in point else "",
        f"; {len(point['collapsed_seeds'])} collapsed" if "collapsed_seeds" in point else "")
  chosen = summary["chosen_point"]
  if len(summary["points"]) > 1:
    logging.info("%s chose %s (point %d): %s", on, _values(chosen["values"]),
                 chosen["index"], chosen["rule"])
  k = summary["chosen_member"]["index"]
  member = summary["members"][k]
  accuracy = member["best_validation_accuracy" if on == "validation"
                    else "test_accuracy_at_best_epoch"]
  # A halved run's members are numbered as in the full sweep ("member");
  # `k` is the position among those it still trains.
  logging.info("%s chose member %d (%s): %s accuracy %.2f%% at epoch %d%s; %s",
               on, summary["chosen_member"].get("member", k),
               _values(members.describe(k)), on, 100 * accuracy,
               member["best_epoch"],
               f", test accuracy {100 * member['test_accuracy_at_best_epoch']:.2f}% "
               f"there" if on == "validation" else "",
               summary["chosen_member"]["rule"])
  for collapsed in summary["collapsed_members"]:
    logging.warning(
        "member %d (%s) %s: final %s accuracy %.2f%% (chance: at most %.2f%% "
        "on %d images), train loss %.4g; it is included in the means above",
        collapsed["member"], _values({key: collapsed[key] for key in members.describe(0)}),
        "diverged" if collapsed["status"] == "diverged" else "stayed at chance",
        summary["chance"]["split"],
        100 * collapsed[f"final_{summary['chance']['split']}_accuracy"],
        100 * summary["chance"]["at_most"], summary["chance"]["num_images"],
        collapsed["final_train_loss"])
  if on == "test":
    logging.info("the epochs above were chosen on the test set (no validation "
                 "split): set config.validation_size for a fair comparison")
