"""Tuned comparisons: `compare --tune=N` gives every config the same search.

Per config, before its seeds train: N points drawn from the config's
`sweep.<field>` distributions (`loguniform(a, b)`, `uniform(a, b)`,
`choice(...)`), or, where it sweeps nothing, from `DEFAULT_SEARCH`
(`loguniform(lr/10, lr*10)` around its learning rate), trained as the
members of one run (`sweep_samples=N`, one seed: members.py) in
`<workdir>/<config>/tune<N>/search`, and the point with the highest
validation accuracy (ties: the lower validation loss, then the earlier
point) chosen. A validation split is required: where the config has none,
a tenth of its training images, at most 5,000 and at least one per class,
is held out (`holdout_size`), for the search and the seeds alike, and the
log and the table say so. The chosen values then train with compare's seeds
in `<workdir>/<config>/tune<N>/` (compare.train_seeds), with the sweep and
successive halving off. The budget each config spent is reported: trials x
epochs (`trial_epochs`: the epochs its members trained, fewer with
halving) and the search run's training seconds.

A finished search is read back from its `tuning.json`, not trained again,
where the search it records is the same: an interrupted `compare --tune`
resumes at the run it stopped in.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from mnist_jax import data, fileio, halving, members, outputs, training
from mnist_jax import config as config_lib
from mnist_jax import summary as summary_lib
from mnist_jax.errors import UserError

# The search of a config that sweeps nothing: its learning rate, a decade
# either way, uniform in the logarithm.
DEFAULT_SEARCH = "loguniform({low:g}, {high:g})"
# The validation split held out where a config has none: this share of the
# training images, at most MAX_HOLDOUT of them (and one per class at least).
HOLDOUT_SHARE = 10
MAX_HOLDOUT = 5000
MARKER = "tuning.json"


@dataclasses.dataclass(frozen=True)
class Plan:
  """One config's tuning: `config` (its validation split held out where it
  had none: `held_out` images of `train_images`, else 0) and `search`, the
  sweep run that tunes it."""
  config: ml_collections.ConfigDict
  search: ml_collections.ConfigDict
  held_out: int
  train_images: int


def check_trials(trials: int):
  if not isinstance(trials, int) or trials < 1:
    raise UserError(f"--tune must be at least 1 (the trials each config's search "
                    f"trains), got {trials}")


def draw_trials(config, trials: int):
  """Sets `config` (compare's, before its validation) to draw `trials`
  points where its sweep is of distributions: validation then checks them
  as a search's; a grid is refused (`searched`)."""
  check_trials(trials)
  if any(members.parse_sweep(f, text) for f, text in config.sweep.items()):
    searched(config)
    config.sweep_samples = trials


def holdout_size(train_images: int, num_classes: int) -> int:
  """Images held out as the validation split of a config without one."""
  return min(MAX_HOLDOUT, max(num_classes, train_images // HOLDOUT_SHARE))


def searched(config) -> dict[str, str]:
  """{sweep field: distribution} the search draws from: the config's own,
  or DEFAULT_SEARCH's learning rates. A grid is refused."""
  own = {f: text for f, text in config.sweep.items()
         if members.parse_sweep(f, text) is not None}
  grids = [f for f in own if not members.parse_sweep(f, own[f]).drawn]
  if grids:
    values = members.parse_sweep(grids[0], own[grids[0]]).values
    raise UserError(
        f"--tune draws its trials from distributions, but config.sweep."
        f"{grids[0]}={own[grids[0]]!r} is a grid: write it as a distribution, "
        f"e.g. 'loguniform({min(values):g}, {max(values):g})', 'uniform(a, b)' "
        f"or 'choice({', '.join(f'{v:g}' for v in values)})'")
  if own:
    return own
  rate = config.learning_rate
  return {"learning_rate": DEFAULT_SEARCH.format(low=rate / 10, high=rate * 10)}


def plan(name: str, config, trials: int) -> Plan:
  """The tuning of `config` (validated, compare's), checked before anything
  trains: its search's sweep and halving, and its validation split."""
  check_trials(trials)
  distributions = searched(config)
  config = config.copy_and_resolve_references()
  dataset = data.load(config.dataset, config.data_dir, config.data_source,
                      config.dataset_format)
  held_out = 0
  if not config.validation_size and dataset.val_images is None:
    held_out = holdout_size(len(dataset.train_labels), dataset.num_classes)
    config.validation_size = held_out
    logging.warning(
        "%s", holdout_sentence(name, held_out, len(dataset.train_labels)))
  search = config.copy_and_resolve_references()
  for field, text in distributions.items():
    search.sweep[field] = text
  search.sweep_samples, search.num_seeds = trials, 1
  config_lib.validate(search)
  halving.check(search, members.Members.from_config(search))
  return Plan(config, search, held_out, len(dataset.train_labels))


def holdout_sentence(name: str, held_out: int, train_images: int) -> str:
  return (f"{name} has no validation split: --tune holds out {held_out:,} of its "
          f"{train_images:,} training images as one (validation_size={held_out}: "
          f"a tenth, at most {MAX_HOLDOUT:,}, at least one per class), for its "
          f"search and its seeds")


def tune(name: str, tuning: Plan, folder: Path, started_at: float | None = None
         ) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Runs (or reads back) the search of `tuning` in `<folder>/search` and
  returns the config with the chosen values, and the search's account."""
  workdir = folder / "search"
  key = json.loads(json.dumps(tuning.search.to_dict(), default=str))
  try:
    finished = json.loads((workdir / MARKER).read_text())
  except (OSError, ValueError):
    finished = None
  if isinstance(finished, dict) and finished.get("search_config") == key:
    logging.info("tuning %s: the search in %s finished already: read, not "
                 "trained", name, workdir)
    result = finished["result"]
  else:
    logging.info("tuning %s: %d trials of %s as the members of one run, in %s",
                 name, tuning.search.sweep_samples,
                 ", ".join(f"{f}={t}" for f, t in searched(tuning.search).items()),
                 workdir)
    summary = training.train_and_evaluate(tuning.search, workdir, started_at).summary
    result = account(tuning, summary, outputs.read_metrics(workdir))
    fileio.write_json_atomic(workdir / MARKER, {"search_config": key, "result": result})
  logging.info("tuning %s: chose %s (validation accuracy %.2f%%)", name,
               describe(result["chosen"]), 100 * result["validation_accuracy"])
  return tuned(tuning.config, result["chosen"]), result


def account(tuning: Plan, summary: dict[str, Any],
            history: list[dict[str, Any]]) -> dict[str, Any]:
  """The search's record: what it drew, each trial's validation accuracy
  and loss at its best epoch, the point chosen, and the budget spent."""
  points = members.sweep_points(tuning.search)
  trials = summary.get("members") or [{**points[0], **summary}]
  fields = list(points[0])
  rows = [{**{f: t[f] for f in fields},
           "validation_accuracy": t["best_validation_accuracy"],
           **({"validation_loss": t["validation_loss_at_best_epoch"]}
              if "validation_loss_at_best_epoch" in t else {})} for t in trials]
  chosen = summary.get("chosen_point", {}).get("values")
  if chosen is None:  # Summaries before chosen_point: the same rule.
    best = max(rows, key=lambda r: summary_lib.rank(
        r["validation_accuracy"], r.get("validation_loss", 0.0)))
    chosen = {f: best[f] for f in fields}
  row = next(r for r in rows if all(r[f] == chosen[f] for f in fields))
  return {
      "trials": len(points), "epochs": tuning.search.num_epochs,
      # The epochs its members trained: trials x epochs, fewer with halving.
      "trial_epochs": sum(len(r.get("members") or [r]) for r in history),
      "train_seconds": summary["train_seconds"],
      "compile_seconds": summary["compile_seconds"],
      "searched": searched(tuning.search), "sweep_seed": tuning.search.sweep_seed,
      "halving_epochs": tuning.search.sweep_halving_epochs,
      "held_out_for_validation": tuning.held_out,
      "train_images": tuning.train_images,
      "selection_rule": summary_lib.selection_rule("validation", "point")
                        + ", each at its best epoch",
      "chosen": dict(chosen), "validation_accuracy": row["validation_accuracy"],
      "points": rows}


def tuned(config, chosen: dict[str, float]) -> ml_collections.ConfigDict:
  """`config` with the `chosen` values, its sweep and halving off."""
  config = config.copy_and_resolve_references()
  for field in config.sweep:
    config.sweep[field] = ""
  config.sweep_samples, config.sweep_halving_epochs = 0, ""
  config.update(chosen)
  config_lib.validate(config)
  return config


def describe(chosen: dict[str, float]) -> str:
  return ", ".join(f"{f}={v:.4g}" for f, v in chosen.items())


# compare.markdown_table's columns of a tuned comparison, after `config`.
HEADER = "chosen | search (trials x epochs) | search s | "
DIVIDER = "---|---|---|"


def cells(result: dict[str, Any]) -> str:
  return (f"{describe(result['chosen'])} | {result['trials']} x {result['epochs']}"
          + (f" ({result['trial_epochs']} trial-epochs, halving)"
             if result["trial_epochs"] != result["trials"] * result["epochs"] else "")
          + f" | {result['train_seconds']:.1f} | ")


def notes(record: dict[str, Any]) -> list[str]:
  """The table's lines on the tuning: how each config was tuned, and the
  validation splits held out."""
  configs = record["configs"]
  lines = ["", f"Tuned (--tune={record['tune']}): per config, {record['tune']} "
           "trials drawn from its sweep distributions (where it has none, "
           "loguniform(learning_rate/10, learning_rate*10)) trained as the members "
           "of one run, the one with the highest validation accuracy (ties: the "
           "lower validation loss) chosen, then trained with the seeds above. "
           "search s: that run's training seconds, compilation excluded."]
  for name in record["ranking"]:
    result = configs[name]["tuning"]
    lines.append(f"- {name} searched "
                 + ", ".join(f"{f}={t}" for f, t in result["searched"].items())
                 + f"; chosen at {100 * result['validation_accuracy']:.2f}% "
                 "validation accuracy"
                 + (f"; {result['held_out_for_validation']:,} of its "
                    f"{result['train_images']:,} training images held out for "
                    "validation (it had no validation split)"
                    if result["held_out_for_validation"] else "") + ".")
  return lines
