"""summary.json's content: a run's final and best accuracy, the epoch chosen
(on the validation split where there is one, else on test, and said so),
its timings, machine and members, with their statistics.

Pure functions of the run's metrics history; outputs.RunFiles writes the file.
"""

from typing import Any

import jax

from mnist_jax import members as members_lib
from mnist_jax import stats


def selected(records: list[dict[str, Any]]) -> dict[str, Any]:
  """The best epoch of one model's (or the members' mean) `records`: by
  validation accuracy where there is a validation split, else by test
  accuracy (then said: `selected_on`); the first of equals."""
  on = "validation" if "validation_accuracy" in records[-1] else "test"
  best = max(records, key=lambda r: r[f"{on}_accuracy"])
  return {"selected_on": on, "best_epoch": best["epoch"],
          **({"best_validation_accuracy": best["validation_accuracy"]}
             if on == "validation" else {}),
          "test_accuracy_at_best_epoch": best["test_accuracy"]}


def run_summary(config, dataset_name: str, plan, members: members_lib.Members,
                history: list[dict[str, Any]], stopped_early_at_epoch=None,
                **timings) -> dict[str, Any]:
  """summary.json of a run: its final and best accuracy over `history` (its
  epochs' records), the epoch selected (`selected`), its timings
  (compile_seconds, seconds_to_first_step, resumed_from_epoch: as given),
  its plan and machine, and its members'."""
  train_seconds = sum(r["epoch_seconds"] for r in history)
  last = history[-1]
  return {
      "dataset": dataset_name,
      "model": config.model,
      "num_epochs": config.num_epochs,
      "final_test_accuracy": last["test_accuracy"],
      "best_test_accuracy": max(r["test_accuracy"] for r in history),
      **selected(history),
      **({"stopped_early_at_epoch": stopped_early_at_epoch}
         if stopped_early_at_epoch else {}),
      "final_test_loss": last["test_loss"],
      **({"final_ema_test_accuracy": last["ema_test_accuracy"]}
         if "ema_test_accuracy" in last else {}),
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
      "config": config.to_dict(),
      **(members_summary(members, history) if members.count > 1 else {}),
  }


def members_summary(members: members_lib.Members,
                     history: list[dict[str, Any]]) -> dict[str, Any]:
  """summary.json's account of each member, and of each sweep point over
  its seeds: the spread of final accuracies and its ensemble's."""
  last = history[-1]
  per_member = []
  for k, final in enumerate(last["members"]):
    per_member.append({
        **members.describe(k),
        "final_test_accuracy": final["test_accuracy"],
        "best_test_accuracy": max(r["members"][k]["test_accuracy"] for r in history),
        **selected([{**r["members"][k], "epoch": r["epoch"]} for r in history]),
        "final_test_loss": final["test_loss"],
        **({"final_ema_test_accuracy": final["ema_test_accuracy"]}
           if "ema_test_accuracy" in final else {})})
  num_seeds = len(members.seeds)
  points = []
  for p, point in enumerate(members.points):
    own = per_member[p * num_seeds:(p + 1) * num_seeds]
    points.append({**point, "seeds": list(members.seeds),
                   "final_test_accuracy": stats.summary(
                       [m["final_test_accuracy"] for m in own]),
                   # At each member's selected epoch (`selected`).
                   "test_accuracy_at_best_epoch": stats.summary(
                       [m["test_accuracy_at_best_epoch"] for m in own]),
                   **({"final_ensemble_test_accuracy": last["ensembles"][p]["test_accuracy"]}
                      if "ensembles" in last else {})})
  for p in range(1, len(points)):  # Welch's t-test against the first point.
    points[p]["p_vs_first_point"] = stats.welch(
        _reported(per_member[:num_seeds]),
        _reported(per_member[p * num_seeds:(p + 1) * num_seeds]))
  return {"num_members": members.count, "members": per_member,
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
