"""Compares configs over seeds: `python -m mnist_jax.compare A.py B.py --seeds=3`.

Trains every config with seeds 0..K-1 (one run each, in
`<workdir>/<config>/seed<k>`, so an interrupted comparison resumes where it
stopped) and writes, in the workdir:

  comparison.md    a table, per config: the test accuracy each run reports
                   (at its best validation epoch where it had a validation
                   split, else after the last epoch) as mean, sample std,
                   95% interval of the mean (Student t), Welch's p-value
                   against the first config (the baseline), min and max over
                   seeds, and training time. The baseline comes first, then
                   the others by mean validation accuracy, or by mean test
                   accuracy when any run had no validation split, which the
                   table then says in so many words.
  comparison.json  the same numbers and every run's per-epoch test accuracy
  comparison.png   test accuracy per epoch and against training time, mean
                   and min-max band per config

`--override=field=value` (repeatable) sets a field in every config, e.g.
`--override=num_epochs=2` for a quick look.
"""

from pathlib import Path
from typing import Any

from absl import flags, logging

import mnist_jax
from mnist_jax import cli, fileio, outputs, stats, training
from mnist_jax import config as config_lib
from mnist_jax.errors import UserError

_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per config: 0..seeds-1.")
_WORKDIR = cli.workdir_flag()
DEFAULT_WORKDIR = "runs/compare"
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "field=value set in every config, e.g. num_epochs=2.")


def compare(config_paths: list[str], seeds: int, workdir: str | Path,
            overrides: list[str] = ()) -> dict[str, Any]:
  if seeds < 1:
    raise UserError(f"--seeds must be at least 1, got {seeds}")
  if not config_paths:
    raise UserError("name one or more config files to compare")
  workdir = Path(workdir)
  # Load every config before training any: a typo fails in a second.
  configs = {}
  for path in config_paths:
    name = Path(path).stem
    if name in configs:
      raise UserError(f"two configs are named '{name}'; rename one")
    config = config_lib.from_file(path)
    config_lib.apply_overrides(config, list(overrides))
    config_lib.validate(config)
    configs[name] = config

  results = {}
  # The process's first run started at its import (mnist_jax.main's too).
  started_at = mnist_jax.IMPORT_TIME
  for name, config in configs.items():
    runs = []
    for seed in range(seeds):
      config.seed = seed
      logging.info("comparing: %s, seed %d of %d", name, seed + 1, seeds)
      summary = training.train_and_evaluate(config, workdir / name / f"seed{seed}",
                                         started_at).summary
      started_at = None  # The next ones start at their own call.
      runs.append(run_entry(seed, summary, outputs.read_metrics(workdir / name / f"seed{seed}")))
    results[name] = {
        "dataset": config.dataset, "model": config.model,
        "optimizer": config.optimizer, "num_epochs": config.num_epochs,
        "runs": runs}
  record = comparison_record(results, seeds, list(overrides))
  if record["ranked_on"] == "test":
    logging.warning("%s", TEST_SET_SENTENCE)
  if seeds < MIN_SEEDS:
    logging.warning("%s", seeds_warning(seeds))
  fileio.write_json_atomic(workdir / "comparison.json", record)
  fileio.write_atomic(workdir / "comparison.md", markdown_table(record))
  from mnist_jax import plots  # pylint: disable=g-import-not-at-top  (matplotlib: ~1 s)
  plots.comparison(results, workdir / "comparison.png")
  return record


def reported_accuracy(summary: dict[str, Any]) -> tuple[float, str]:
  """The test accuracy a run reports and what chose its epoch: the accuracy
  at the best epoch on the validation split, where the run had one, else the
  last epoch's. Summaries without `selected_on` (written before it existed)
  had no validation split: "test"."""
  if summary.get("selected_on") == "validation":
    return summary["test_accuracy_at_best_epoch"], "validation"
  return summary["final_test_accuracy"], "test"


def run_entry(seed: int, summary: dict[str, Any],
              history: list[dict[str, Any]]) -> dict[str, Any]:
  """comparison.json's account of one run, from its summary.json and metrics.jsonl."""
  accuracy, selected_on = reported_accuracy(summary)
  return {"seed": seed, "selected_on": selected_on,
          "reported_test_accuracy": accuracy,
          "final_test_accuracy": summary["final_test_accuracy"],
          **{k: summary[k] for k in ("best_epoch", "best_validation_accuracy")
             if summary.get(k) is not None},
          "train_seconds": summary["train_seconds"],
          "test_accuracy": [r["test_accuracy"] for r in history],
          "epoch_seconds": [r["epoch_seconds"] for r in history]}


MIN_SEEDS = 3  # Below it the spread of the seeds is itself a guess.
TEST_SET_SENTENCE = (
    "Selection and ranking were on the TEST set: not every run had a "
    "validation split, so the configs are ordered by the same test accuracy they report, "
    "and the top one's number is optimistic; give them a validation split for "
    "an unbiased comparison.")


def seeds_warning(n: int) -> str:
  return (f"Warning: only {n} seed(s) per config; with fewer than {MIN_SEEDS} the "
          "std, the interval and the p-value are unreliable (with 1 there are "
          "none). Use --seeds=5 or more for a comparison to rely on.")


def comparison_record(results: dict[str, dict[str, Any]], seeds: int,
                      overrides: list[str]) -> dict[str, Any]:
  """comparison.json from each config's runs (`run_entry`s under "runs"; the
  first config is the baseline): per config the reported test accuracy's
  mean, std, 95% interval, min and max, Welch's p-value against the
  baseline's, and the order of the table."""
  names = list(results)
  baseline = names[0]

  def reported(name):
    return [run["reported_test_accuracy"] for run in results[name]["runs"]]

  runs = [run for r in results.values() for run in r["runs"]]
  ranked_on = ("validation" if all(run["selected_on"] == "validation" for run in runs)
               else "test")
  for name, result in results.items():
    result["test_accuracy"] = stats.summary(reported(name))
    result["p_vs_baseline"] = None if name == baseline else stats.welch(
        reported(name), reported(baseline))
    result["train_seconds"] = stats.summary([run["train_seconds"] for run in result["runs"]])
    if ranked_on == "validation":
      result["validation_accuracy"] = stats.summary(
          [run["best_validation_accuracy"] for run in result["runs"]])
  metric = "validation_accuracy" if ranked_on == "validation" else "test_accuracy"
  # The baseline stays first; sorted() is stable, so ties keep the order given.
  ranking = [baseline] + sorted(names[1:], key=lambda n: -results[n][metric]["mean"])
  selected = {run["selected_on"] for run in runs}
  return {"seeds": seeds, "overrides": overrides, "baseline": baseline,
          "reported": ("test accuracy at the best validation epoch"
                       if selected == {"validation"} else
                       "test accuracy after the last epoch" if selected == {"test"} else
                       "test accuracy at the best validation epoch where a run had "
                       "a validation split, else after the last epoch"),
          "ranked_on": ranked_on, "ranking": ranking, "configs": results}


def _percent(value: float) -> str:
  return f"{100 * value:.2f}%"


def _interval(ci95: list[float] | None) -> str:
  return "n/a" if ci95 is None else f"{100 * ci95[0]:.2f}..{100 * ci95[1]:.2f}%"


def _p_value(p: float | None) -> str:
  return "n/a" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(record: dict[str, Any]) -> str:
  on_validation = record["ranked_on"] == "validation"
  n = min(r["test_accuracy"]["n"] for r in record["configs"].values())
  lines = [f"{record['reported'].capitalize()} over "
           f"{record['seeds']} seed(s)"
           + (f"; overrides: {', '.join(record['overrides'])}" if record["overrides"] else "")
           + f". The first row, {record['baseline']}, is the baseline; the others "
           + ("follow by mean validation accuracy" if on_validation
              else "follow by mean test accuracy") + ", best first.", ""]
  if not on_validation:
    lines += [f"**{TEST_SET_SENTENCE}**", ""]
  lines += ["| config | dataset | model | optimizer | epochs | "
            + ("validation mean | " if on_validation else "")
            + "mean | std | 95% CI | p vs baseline | min | max | training s (mean) |",
            "|---|---|---|---|---|" + ("---|" if on_validation else "")
            + "---|---|---|---|---|---|---|"]
  for name in record["ranking"]:
    r = record["configs"][name]
    acc = r["test_accuracy"]
    p = "baseline" if name == record["baseline"] else _p_value(r["p_vs_baseline"])
    lines.append(f"| {name} | {r['dataset']} | {r['model']} | {r['optimizer']} | "
                 f"{r['num_epochs']} | "
                 + (f"{_percent(r['validation_accuracy']['mean'])} | " if on_validation else "")
                 + f"{_percent(acc['mean'])} | {100 * acc['std']:.2f} | "
                 f"{_interval(acc['ci95'])} | {p} | {_percent(acc['min'])} | "
                 f"{_percent(acc['max'])} | {r['train_seconds']['mean']:.1f} |")
  lines += ["",
            "std is over seeds, in percentage points. 95% CI: the range that holds, "
            "with 95% confidence, the mean test accuracy this config would reach "
            "over many more seeds (Student's t; wide when the seeds are few or "
            "disagree). p vs baseline: Welch's t-test, the chance of a gap between "
            "the means at least this large if the config and the baseline were in "
            "truth equally accurate; below 0.05 the gap is unlikely to be seed "
            "luck, above it the seeds cannot tell them apart. Both count only "
            "seed-to-seed variation on this one test set."]
  if n < MIN_SEEDS:
    lines += ["", f"**{seeds_warning(n)}**"]
  return "\n".join(lines) + "\n"


def main(argv):
  workdir = _WORKDIR.value or DEFAULT_WORKDIR
  compare(argv[1:], _SEEDS.value, workdir, _OVERRIDE.value)
  print((Path(workdir) / "comparison.md").read_text(), end="")
  logging.info("wrote %s/comparison.{md,json,png}", workdir)


if __name__ == "__main__":
  cli.run(main)
