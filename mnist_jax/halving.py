"""Successive halving in one run (config.sweep_halving_epochs, _eta).

A run of several sweep points (members.py) trains them all; at the end of
each rung epoch it ranks the points it still trains by their seeds' mean
validation accuracy (ties: the lower mean validation loss, then the earlier
point), keeps the best ceil(points / eta) and goes on with their members
only: the stacked state and the data keys are sliced to them and the steps
compiled once more, for the smaller member count.

Points and members keep their original numbers (member `p * num_seeds + s`
of the config's full sweep): metrics.jsonl's member entries carry them
("member", "point"), and each checkpoint's JSON record ("halving") says
which points its state holds and every rung decided so far, so that a
resume, evaluate or predict rebuilds the same members. A rung decided at
the checkpoint's epoch but not yet applied to its state (the checkpoint of
a rung epoch holds the members it ranked) is applied on resume.
"""

import dataclasses
import math
from typing import Any, Callable, Iterator

import numpy as np
from absl import logging

from mnist_jax import loop, timing
from mnist_jax import members as members_lib
from mnist_jax.errors import UserError
from mnist_jax.survivors import keep, take, with_members

# The per-member metrics a record holds (loop.EpochResult's values).
_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
            "validation_loss", "validation_accuracy", "ema_test_loss",
            "ema_test_accuracy")


def rung_epochs(config) -> tuple[int, ...]:
  """The epochs of config.sweep_halving_epochs (checked by `check`)."""
  return tuple(int(float(v)) for v in config.sweep_halving_epochs.split(",")
               if v.strip())


def check(config, members: members_lib.Members):
  """Refuses, in one line, a halving config that cannot run as asked."""
  text, eta = config.sweep_halving_epochs, config.sweep_halving_eta
  if not text.strip():
    return
  label = f"config.sweep_halving_epochs={text!r}"
  values = [float(v) for v in text.split(",") if v.strip()]
  if any(v != int(v) or v < 1 for v in values):
    raise UserError(f"{label}: rungs are whole epochs from 1, e.g. '1,3'")
  epochs = [int(v) for v in values]
  if any(b <= a for a, b in zip(epochs, epochs[1:])):
    raise UserError(f"{label}: the epochs must increase, e.g. '1,3'")
  if epochs[-1] >= config.num_epochs:
    raise UserError(f"{label}: each rung must come before the last epoch "
                    f"(num_epochs={config.num_epochs}): a rung at or after it "
                    f"drops members that train no more; use epochs below "
                    f"{config.num_epochs}")
  if eta < 2:
    raise UserError(f"config.sweep_halving_eta={eta} must be at least 2: each "
                    f"rung keeps 1/eta of the sweep points")
  num_points = len(members.points)
  if num_points == 1:
    raise UserError(f"{label} halves sweep points, and this run trains one: "
                    f"set config.sweep.<field> (e.g. sweep.learning_rate="
                    f"'0.01,0.03,0.1') or drop sweep_halving_epochs")
  counts = [num_points]
  for epoch in epochs:
    if counts[-1] == 1:
      raise UserError(
          f"{label}: the rung at epoch {epoch} would find one sweep point "
          f"left ({' -> '.join(map(str, counts))} with eta {eta}), nothing to "
          f"halve; drop that rung or lower config.sweep_halving_eta")
    counts.append(math.ceil(counts[-1] / eta))


def check_validation(config, has_validation: bool):
  if config.sweep_halving_epochs.strip() and not has_validation:
    raise UserError("config.sweep_halving_epochs ranks the sweep points on a "
                    "validation split: set config.validation_size (e.g. 5000)")


def _mean(values) -> float | None:
  mean = float(np.mean(values))
  return mean if math.isfinite(mean) else None  # A diverged member's loss.


class Halving:
  """The rungs of a run: a hook (`on_epoch_end`) that numbers each record's
  members and decides a rung at its epoch, and `cut`, which the training
  loop calls once a rung is decided. `meta` is the run's checkpoint record,
  whose "halving" it keeps current."""

  def __init__(self, config, full: members_lib.Members, meta: dict[str, Any]):
    self.full, self.meta = full, meta
    self.epochs, self.eta = rung_epochs(config), config.sweep_halving_eta
    self.num_seeds = len(full.seeds)
    self.points = list(range(len(full.points)))  # Those the state holds.
    self.rungs: list[dict[str, Any]] = []
    self._save()

  def _save(self):
    self.meta["halving"] = {"points": list(self.points), "rungs": self.rungs}

  @property
  def members(self) -> members_lib.Members:
    return keep(self.full, self.points)

  def member_ids(self, points) -> list[int]:
    return [p * self.num_seeds + s for p in points for s in range(self.num_seeds)]

  @property
  def survivors(self) -> list[int]:
    return list(self.rungs[-1]["kept"]) if self.rungs else list(self.points)

  def like(self, full_state, mesh) -> Callable[[dict[str, Any]], Any]:
    """The state a checkpoint's record says it holds, from the full one."""
    return lambda meta: take(full_state, self.member_ids(meta["halving"]["points"]),
                             mesh)

  def on_epoch_end(self, record: dict[str, Any], state) -> bool:
    ids = self.member_ids(self.points)
    if "members" not in record:  # One member left: its entry all the same.
      record["members"] = [{**self.full.describe(ids[0]), **{
          k: record[k] for k in _METRICS if k in record}}]
    for entry, member in zip(record["members"], ids, strict=True):
      entry.update(member=member, point=member // self.num_seeds)
    if "ensembles" in record:  # With several seeds a point.
      for entry, point in zip(record["ensembles"], self.points, strict=True):
        entry["point"] = point
    if record["epoch"] in self.epochs and all(
        r["epoch"] != record["epoch"] for r in self.rungs):
      self.rungs.append(self._decide(record))
      self._save()
    return False

  def _decide(self, record: dict[str, Any]) -> dict[str, Any]:
    """The rung of this epoch's record: each point's mean validation
    accuracy and loss over its seeds, kept or dropped."""
    entries = record["members"]
    ranked = []
    for i, point in enumerate(self.points):
      own = entries[i * self.num_seeds:(i + 1) * self.num_seeds]
      ranked.append({"point": point, **self.full.points[point],
                     "seeds": list(self.full.seeds),
                     "members": [m["member"] for m in own],
                     "validation_accuracy": _mean([m["validation_accuracy"] for m in own]),
                     "validation_loss": _mean([m["validation_loss"] for m in own])})
    order = sorted(ranked, key=lambda r: (-(r["validation_accuracy"] or 0.0),
                                          r["validation_loss"] is None,
                                          r["validation_loss"] or 0.0, r["point"]))
    num_kept = max(1, math.ceil(len(ranked) / self.eta))
    kept = sorted(r["point"] for r in order[:num_kept])
    for r in ranked:
      r["kept"] = r["point"] in kept
    rung = {"epoch": record["epoch"], "eta": self.eta, "kept": kept,
            "dropped": [r["point"] for r in ranked if not r["kept"]],
            "cutoff_validation_accuracy": order[num_kept - 1]["validation_accuracy"],
            "points": ranked}
    return rung

  def cut(self, run, state):
    """`run` (not compiled) with the members of the rungs decided, its
    state (`state`, of the members `self.points`) and data keys sliced."""
    positions = [self.points.index(p) * self.num_seeds + s
                 for p in self.survivors for s in range(self.num_seeds)]
    data_key = take(run.data_key, positions, run.mesh)
    state = take(state, positions, run.mesh)
    _log_rung(self.rungs[-1])  # After its epoch's line; on resume too.
    self.points = self.survivors
    self._save()
    return dataclasses.replace(run, built=self._built(run.built), state=state,
                               data_key=data_key, compiled=None)

  def _built(self, built):
    return with_members(built, self.members)

  def resumed(self, run, state, meta: dict[str, Any] | None):
    """`run` with the restored `state` of checkpoint record `meta` (None:
    not resumed) and the members it holds, then any rung it decided but had
    not applied yet cut."""
    if meta is None:
      return run.with_state(state)
    self.points, self.rungs = list(meta["halving"]["points"]), meta["halving"]["rungs"]
    self._save()
    run = dataclasses.replace(run, built=self._built(run.built), state=state,
                              data_key=take(run.data_key, self.member_ids(self.points),
                                            run.mesh))
    return self.cut(run, state) if self.survivors != self.points else run

  def epochs_of(self, run, first: int, last: int, **options
                ) -> Iterator[tuple[Any, loop.EpochResult | loop.StoppedMidEpoch]]:
    """(run, result) of each epoch of run.epochs; after a rung's epoch (once
    the caller has ended it and asks for the next), the run cut to its
    survivors and compiled again (once)."""
    while first <= last:
      for result in run.epochs(first, last, **options):
        yield run, result
        if isinstance(result, loop.StoppedMidEpoch) or self.survivors == self.points:
          continue
        run, seconds = timing.timed(lambda: self.cut(run, result.state).compile())
        self.rungs[-1]["compile_seconds"] = seconds
        logging.info("compiled for the %d members left in %.1f s",
                     run.built.members.count, seconds)
        first = result.epoch + 1
        break
      else:
        return

  def history_of_survivors(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`history` with each record's members and ensembles cut to the final
    survivors' (the per-member summary follows them through every epoch)."""
    ids, points = set(self.member_ids(self.points)), set(self.points)
    return [{**r, "members": [m for m in r["members"] if m["member"] in ids],
             **({"ensembles": [e for e in r["ensembles"] if e["point"] in points]}
                if "ensembles" in r else {})} for r in history]

  def add_to(self, summary: dict[str, Any]):
    """summary.json's "halving": the rungs, each point kept or dropped with
    its validation accuracy against the cut-off, and the survivors; and the
    survivors' original numbers on their "members" and "points" entries."""
    summary["halving"] = {"epochs": list(self.epochs), "eta": self.eta,
                          "rungs": self.rungs, "surviving_points": list(self.points),
                          "surviving_members": self.member_ids(self.points)}
    for entry, member in zip(summary.get("members", ()), self.member_ids(self.points)):
      entry.update(member=member, point=member // self.num_seeds)
    for entry, point in zip(summary.get("points", ()), self.points):
      entry["point"] = point
    # The choices' "index" is a position among the survivors (what the
    # final state and members hold); their original numbers beside it.
    if "index" in summary.get("chosen_point", {}):
      summary["chosen_point"]["point"] = self.points[summary["chosen_point"]["index"]]
    if "index" in summary.get("chosen_member", {}):
      summary["chosen_member"]["member"] = self.member_ids(self.points)[
          summary["chosen_member"]["index"]]
    for entry in summary.get("collapsed_members", ()):  # Numbered by position.
      entry["member"] = self.member_ids(self.points)[entry["member"]]


def _log_rung(rung: dict[str, Any]):
  cutoff = rung["cutoff_validation_accuracy"]
  logging.info("successive halving, rung at epoch %d: keeping %d of %d sweep "
               "points (mean validation accuracy over seeds, cut-off %.2f%%)",
               rung["epoch"], len(rung["kept"]), len(rung["points"]), 100 * (cutoff or 0))
  for r in rung["points"]:
    values = ", ".join(f"{k}={r[k]:g}" for k in r if k not in (
        "point", "seeds", "members", "validation_accuracy", "validation_loss", "kept"))
    accuracy = 100 * (r["validation_accuracy"] or 0)
    logging.info("  point %d (%s; seeds %s, members %s): validation accuracy "
                 "%.2f%% %s", r["point"], values, r["seeds"], r["members"], accuracy,
                 "kept" if r["kept"] else
                 f"< the cut-off {100 * (cutoff or 0):.2f}%: dropped"
                 if accuracy < 100 * (cutoff or 0) else
                 "= the cut-off, a higher validation loss: dropped")


def start(config, members: members_lib.Members, meta: dict[str, Any]) -> Halving | None:
  """The run's Halving, or None where config.sweep_halving_epochs is ''."""
  if not config.sweep_halving_epochs.strip():
    return None
  halving = Halving(config, members, meta)
  counts = [len(members.points)]
  for _ in halving.epochs:
    counts.append(math.ceil(counts[-1] / halving.eta))
  logging.info("successive halving after epochs %s (eta %d): %s sweep points",
               ", ".join(map(str, halving.epochs)), halving.eta,
               " -> ".join(map(str, counts)))
  return halving
