"""summary.json's content: a run's final and best accuracy, the epoch chosen
(on the validation split where there is one, else on test, and said so),
its timings, machine and members, with their statistics: each sweep point's
and member's validation accuracy first, the point and member validation
chose, and the members that diverged or stayed at chance.

Pure functions of the run's metrics history; outputs.RunFiles writes the file.
"""

import dataclasses
import math
from typing import Any

import jax

from mnist_jax import members as members_lib
from mnist_jax import stats

# A model whose accuracy is not above chance (1 / num_classes) by more than
# this many binomial standard errors of the split it is judged on is "at
# chance": a sampling error of that size or less would explain it. On 10
# classes: 10% + 0.9% on 10,000 images, 10% + 9% on 100.
CHANCE_STANDARD_ERRORS = 3
# What the config says of a field the members trained with several values of.
SWEPT = "swept, see members"


def selection_rule(on: str, of: str = "epoch") -> str:
  return (f"the highest {on} accuracy; ties broken by the lower {on} loss, "
          f"then the earlier {of}")


@dataclasses.dataclass(frozen=True)
class Chance:
  """Chance accuracy on the split selection reads (validation, else test)."""
  split: str
  num_images: int
  num_classes: int

  @classmethod
  def of(cls, dataset) -> "Chance":
    if dataset.val_labels is not None:
      return cls("validation", len(dataset.val_labels), dataset.num_classes)
    return cls("test", len(dataset.test_labels), dataset.num_classes)

  @property
  def bound(self) -> float:
    """The accuracy at or below which a model counts as at chance."""
    p = 1 / self.num_classes
    return p + CHANCE_STANDARD_ERRORS * math.sqrt(p * (1 - p) / self.num_images)

  def status(self, values: dict[str, Any]) -> str:
    """"diverged" (a loss that is not finite), "at_chance" or "ok", of one
    model's epoch values (a record, or one of its "members")."""
    losses = [values[k] for k in ("train_loss", f"{self.split}_loss") if k in values]
    if not all(math.isfinite(loss) for loss in losses):
      return "diverged"
    return "at_chance" if values[f"{self.split}_accuracy"] <= self.bound else "ok"

  def describe(self) -> dict[str, Any]:
    return {"split": self.split, "num_images": self.num_images,
            "chance_accuracy": 1 / self.num_classes, "at_most": self.bound,
            "rule": f"{self.split} accuracy at most 1/num_classes + "
                    f"{CHANCE_STANDARD_ERRORS} binomial standard errors "
                    f"(sqrt(p (1 - p) / num_images))"}


def collapsed_note(statuses: list[str], numbers: list[int] | None = None) -> str:
  """What a mean over members with these statuses includes, e.g. 'mean of 4
  members, member 2 at chance included'; `numbers`: the members' (by
  default 0, 1, ...)."""
  numbers = range(len(statuses)) if numbers is None else numbers
  named = [f"member {k} {s.replace('_', ' ')}" for k, s in zip(numbers, statuses)
           if s != "ok"]
  return (f"mean of {len(statuses)} members"
          + (f", {' and '.join(named)} included" if named else ""))


def rank(accuracy: float, loss: float) -> tuple[float, float]:
  """Higher is better: accuracy, then the lower loss (a loss that is not
  finite loses every tie)."""
  return accuracy, -loss if math.isfinite(loss) else -math.inf


def selected(records: list[dict[str, Any]]) -> dict[str, Any]:
  """The best epoch of one model's (or the members' mean) `records`: by
  validation accuracy where there is a validation split, else by test
  accuracy (then said: `selected_on`); ties by the loss (`selection_rule`)."""
  on = "validation" if "validation_accuracy" in records[-1] else "test"
  # max keeps the first of equal ranks: the earlier epoch.
  best = max(records, key=lambda r: rank(r[f"{on}_accuracy"], r[f"{on}_loss"]))
  return {"selected_on": on, "best_epoch": best["epoch"],
          **({"best_validation_accuracy": best["validation_accuracy"],
              "validation_loss_at_best_epoch": best["validation_loss"]}
             if on == "validation" else {}),
          "test_accuracy_at_best_epoch": best["test_accuracy"],
          **({} if on == "validation" else
             {"test_loss_at_best_epoch": best["test_loss"]})}


def trained_config(config, members: members_lib.Members) -> dict[str, Any]:
  """`config` as a dict, each field the members set (a sweep's) as they
  trained it: its value where every member shares one, else SWEPT."""
  result = config.to_dict()
  for field, values in swept_values(members).items():
    result[field] = values[0] if len(values) == 1 else SWEPT
  return result


def swept_values(members: members_lib.Members) -> dict[str, list[Any]]:
  """{field: its distinct values, in member order} of each field but the
  seed that a member's description sets."""
  values = {}
  for k in range(members.count):
    for field, value in members.describe(k).items():
      if field != "seed" and value not in values.setdefault(field, []):
        values[field].append(value)
  return values


def run_summary(config, dataset, plan, members: members_lib.Members,
                history: list[dict[str, Any]], stopped_early_at_epoch=None,
                **timings) -> dict[str, Any]:
  """summary.json of a run: the epoch selected (`selected`), its final and
  best accuracy over `history` (its epochs' records), its timings
  (compile_seconds, seconds_to_first_step, resumed_from_epoch: as given),
  its plan and machine, and its members'."""
  train_seconds = sum(r["epoch_seconds"] for r in history)
  last = history[-1]
  chance = Chance.of(dataset)
  best = selected(history)
  return {
      "dataset": dataset.name,
      "model": config.model,
      "num_epochs": config.num_epochs,
      **best,
      "selection_rule": selection_rule(best["selected_on"]),
      "final_test_accuracy": last["test_accuracy"],
      "best_test_accuracy": max(r["test_accuracy"] for r in history),
      **({"stopped_early_at_epoch": stopped_early_at_epoch}
         if stopped_early_at_epoch else {}),
      "final_test_loss": last["test_loss"],
      **({"final_ema_test_accuracy": last["ema_test_accuracy"]}
         if "ema_test_accuracy" in last else {}),
      **({"status": chance.status(last)} if members.count == 1 else {}),
      "chance": chance.describe(),
      "train_seconds": train_seconds,
      "compile_seconds": timings["compile_seconds"],
      "seconds_to_first_step": timings["seconds_to_first_step"],
      "images_per_sec": plan.images_per_epoch * len(history) / train_seconds,
      "resumed_from_epoch": timings["resumed_from_epoch"],
      "steps_per_call": plan.steps_per_call,
      "backend": plan.backend,
      "device_kind": jax.devices()[0].device_kind,
      "device_count": plan.num_devices,
      "jax_version": jax.__version__,
      "config": trained_config(config, members),
      **(members_summary(members, history, chance) if members.count > 1 else {}),
  }


def _member(members: members_lib.Members, k: int, history, chance: Chance):
  """summary.json's account of member k: validation first."""
  final = history[-1]["members"][k]
  return {
      **members.describe(k),
      "status": chance.status(final),
      **selected([{**r["members"][k], "epoch": r["epoch"]} for r in history]),
      **({"final_validation_accuracy": final["validation_accuracy"]}
         if "validation_accuracy" in final else {}),
      "final_test_accuracy": final["test_accuracy"],
      "best_test_accuracy": max(r["members"][k]["test_accuracy"] for r in history),
      "final_test_loss": final["test_loss"],
      **({"final_ema_test_accuracy": final["ema_test_accuracy"]}
         if "ema_test_accuracy" in final else {})}


def _point(p: int, members: members_lib.Members, own: list[dict[str, Any]],
           last: dict[str, Any]) -> dict[str, Any]:
  """summary.json's account of sweep point p over its seeds' members `own`:
  validation first, at each member's selected epoch (`selected`)."""
  on = own[0]["selected_on"]
  over = lambda key: stats.summary([m[key] for m in own])
  return {
      **members.points[p], "index": p, "seeds": list(members.seeds),
      **({"validation_accuracy_at_best_epoch": over("best_validation_accuracy"),
          "validation_loss_at_best_epoch": over("validation_loss_at_best_epoch"),
          "final_validation_accuracy": over("final_validation_accuracy")}
         if on == "validation" else
         {"test_loss_at_best_epoch": over("test_loss_at_best_epoch")}),
      "test_accuracy_at_best_epoch": over("test_accuracy_at_best_epoch"),
      "final_test_accuracy": over("final_test_accuracy"),
      **({"final_ensemble_test_accuracy": last["ensembles"][p]["test_accuracy"]}
         if "ensembles" in last else {}),
      **({"collapsed_seeds": {str(m["seed"]): m["status"] for m in own
                              if m["status"] != "ok"}}
         if any(m["status"] != "ok" for m in own) else {})}


def members_summary(members: members_lib.Members, history: list[dict[str, Any]],
                    chance: Chance) -> dict[str, Any]:
  """summary.json's account of each member, and of each sweep point over
  its seeds: the spread of their accuracies (validation first) and their
  ensemble's; the point and member validation chose; which members
  diverged or stayed at chance (`chance`), included in the means."""
  last = history[-1]
  per_member = [_member(members, k, history, chance) for k in range(members.count)]
  num_seeds = len(members.seeds)
  points = [_point(p, members, per_member[p * num_seeds:(p + 1) * num_seeds], last)
            for p in range(len(members.points))]
  for p in range(1, len(points)):  # Welch's t-test against the first point.
    points[p]["p_vs_first_point"] = stats.welch(
        _reported(per_member[:num_seeds]),
        _reported(per_member[p * num_seeds:(p + 1) * num_seeds]))
  on = per_member[0]["selected_on"]
  loss = f"{on}_loss_at_best_epoch"
  accuracy = ("best_validation_accuracy" if on == "validation"
              else "test_accuracy_at_best_epoch")
  chosen_point = max(range(len(points)), key=lambda p: rank(
      points[p][f"{on}_accuracy_at_best_epoch"]["mean"], points[p][loss]["mean"]))
  chosen_member = max(range(members.count), key=lambda k: rank(
      per_member[k][accuracy], per_member[k][loss]))
  statuses = [m["status"] for m in per_member]
  return {
      "num_members": members.count,
      "chosen_point": {
          "index": chosen_point, "values": dict(members.points[chosen_point]),
          "selected_on": on,
          "rule": f"{selection_rule(on, 'point')}, each the mean over its "
                  f"seeds at their best epochs"},
      "chosen_member": {
          "index": chosen_member, **members.describe(chosen_member),
          "selected_on": on,
          "rule": f"{selection_rule(on, 'member')}, each at its best epoch"},
      "collapsed_members": [
          {"member": k, **members.describe(k), "status": s,
           f"final_{chance.split}_accuracy": last["members"][k][f"{chance.split}_accuracy"],
           "final_train_loss": last["members"][k]["train_loss"]}
          for k, s in enumerate(statuses) if s != "ok"],
      # The top-level accuracies and the spreads below are over every member.
      "means_over_members": collapsed_note(statuses),
      "members": per_member,
      "final_test_accuracy_over_members": stats.summary(
          [m["final_test_accuracy"] for m in per_member]),
      "points": points,
      **({"final_ensemble_test_accuracy": points[0]["final_ensemble_test_accuracy"]}
         if len(points) == 1 and "ensembles" in last else {})}


def _reported(members: list[dict[str, Any]]) -> list[float]:
  """The test accuracy each member reports: at its epoch selected on
  validation, or its final one where selection could only be on test."""
  return [m["test_accuracy_at_best_epoch"] if m["selected_on"] == "validation"
          else m["final_test_accuracy"] for m in members]
