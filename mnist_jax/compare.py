"""Compares configs over seeds: `python -m mnist_jax.compare A.py B.py --seeds=3`.

Trains every config with seeds 0..K-1 and writes, in the workdir, files
named by the configs compared (`comparison-A-vs-B.{md,json,png}`, so that
another comparison in the same workdir keeps its own):

  .md    a table, per config: the test accuracy each seed reports
         (at its best validation epoch where it had a validation split,
         else after the last epoch) as mean, sample std, 95% interval of the
         mean (Student t), Welch's p-value against the first config (the
         baseline), min and max over seeds, and training time per seed. The
         baseline comes first, then the others by mean validation accuracy,
         or by mean test accuracy when any seed had no validation split,
         which the table then says in so many words.
  .json  the same numbers and every seed's per-epoch test accuracy
  .png   test accuracy per epoch and against training time, mean and
         min-max band per config

How the seeds train (`train_seeds`, one call per config; `--seeds_as`): as
the K members of one run (config.num_seeds=K: one compiled program;
members.py), in `<workdir>/<config>/seeds0-<K-1>`, or as K runs one after
another, in `<workdir>/<config>/seed<k>`. Each member computes what the run
of its seed alone does, so both report the same accuracies. `auto` (the
default): members on GPU and TPU, where their steps are vmapped; a run per
seed on CPU, where the members' steps, unrolled in one program, trained
slower than as many runs (benchmarks/compare_members.py). Never members
with early stopping (members stop together, on their mean). A config that
sweeps is refused: compare compares configs, not sweep points. A config's
own num_seeds gives way to --seeds. Either way an interrupted comparison
resumes where it stopped, and a finished run (summary.json of the same
config) is read, not trained.

`--override=field=value` (repeatable) sets a field in every config, e.g.
`--override=num_epochs=2` for a quick look.

`--tune=N` tunes each config alike first (tuning.py): N trials chosen on
validation, then the seeds, in `<workdir>/<config>/tune<N>/`.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
from absl import flags, logging

import mnist_jax
from mnist_jax import cli, fileio, outputs, runtime, stats, training
from mnist_jax import config as config_lib
from mnist_jax import tuning
from mnist_jax.errors import UserError

_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per config: 0..seeds-1.")
_WORKDIR = cli.workdir_flag()
DEFAULT_WORKDIR = "runs/compare"
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "field=value set in every config, e.g. num_epochs=2.")
SEEDS_AS = ("auto", "members", "separate")
_SEEDS_AS = flags.DEFINE_enum(
    "seeds_as", "auto", SEEDS_AS, "How a config's seeds train: members (of one "
    "compiled run), separate (a run per seed, one after another), or auto: "
    "members on GPU and TPU, separate on CPU (measured faster there).")
_TUNE = flags.DEFINE_integer(
    "tune", None, "Tune each config first: N trials of its sweep distributions "
    "(or learning_rate/10..*10), chosen on validation (tuning.py).")


def compare(config_paths: list[str], seeds: int, workdir: str | Path,
            overrides: list[str] = (), seeds_as: str = "auto",
            tune: int | None = None) -> dict[str, Any]:
  """Trains each config with seeds 0..seeds-1 (`train_seeds`) and writes
  `<workdir>/<comparison_stem>.{md,json,png}`; returns the .json's record."""
  if seeds < 1:
    raise UserError(f"--seeds must be at least 1, got {seeds}")
  configs = load_configs(config_paths, overrides, tune)
  plans = {name: tuning.plan(name, config, tune)
           for name, config in configs.items()} if tune else {}
  workdir = Path(workdir)
  results = {}
  # The process's first run started at its import (mnist_jax.main's too).
  started_at = mnist_jax.IMPORT_TIME
  for name, config in configs.items():
    folder, tuned = workdir / name, {}
    if tune:
      folder = folder / f"tune{tune}"
      config, tuned["tuning"] = tuning.tune(name, plans[name], folder, started_at)
      started_at = None
    runs = train_seeds(name, config, range(seeds), folder, seeds_as, started_at)
    started_at = None  # The next ones start at their own call.
    results[name] = {
        "dataset": config.dataset, "model": config.model,
        "optimizer": config.optimizer, "num_epochs": config.num_epochs,
        "trained_as": runs[0]["trained_as"], "runs": runs, **tuned}
  record = comparison_record(results, seeds, list(overrides)) | (
      {"tune": tune} if tune else {})
  if record["ranked_on"] == "test":
    logging.warning("%s", TEST_SET_SENTENCE)
  if seeds < MIN_SEEDS:
    logging.warning("%s", seeds_warning(seeds))
  stem = workdir / comparison_stem(list(configs), tune)
  fileio.write_json_atomic(stem.with_suffix(".json"), record)
  fileio.write_atomic(stem.with_suffix(".md"), markdown_table(record))
  from mnist_jax import plots  # pylint: disable=g-import-not-at-top  (matplotlib: ~1 s)
  plots.comparison(results, stem.with_suffix(".png"))
  return record


def load_configs(config_paths: Sequence[str], overrides: Sequence[str] = (),
                 tune: int | None = None) -> dict[str, Any]:
  """{file stem: config} of each path, `overrides` applied and validated:
  every config is loaded before any trains, so a typo fails in a second."""
  if not config_paths:
    raise UserError("name one or more config files to compare")
  configs = {}
  for path in config_paths:
    name = Path(path).stem
    if name in configs:
      raise UserError(f"two configs are named '{name}'; rename one")
    config = config_lib.from_file(path)
    config_lib.apply_overrides(config, list(overrides))
    if tune is not None:  # Its sweep's distributions are what --tune draws.
      tuning.draw_trials(config, tune)
    config_lib.validate(config)
    if _sweeps(config) and not tune:
      raise UserError(
          f"{path} sweeps ({', '.join(_sweeps(config))}): compare compares "
          f"configs, not sweep points; write a config per point, or train the "
          f"sweep with mnist-jax train (its summary compares the points)")
    configs[name] = config
  return configs


def _sweeps(config) -> list[str]:
  """The sweep fields `config` sets (sweep.<field>, sweep_samples, ...)."""
  swept = [f"sweep.{k}" for k, v in config.sweep.items() if v != ""]
  return swept + [f for f, off in (("sweep_samples", 0), ("sweep_halving_epochs", ""))
                  if config.get(f, off) != off]


def comparison_stem(names: Sequence[str], tune: int | None = None) -> str:
  """The comparison's file name without suffix: `comparison-A-vs-B`
  (`-tune<N>` with --tune); shortened with a hash past 100 characters."""
  stem = "comparison-" + "-vs-".join(names)
  suffix = f"-tune{tune}" if tune else ""
  if len(stem) <= 100:
    return stem + suffix
  digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:10]
  return f"{stem[:85]}-{digest}{suffix}"


def trained_as(config, seeds_as: str = "auto", backend: str | None = None) -> str:
  """"members" (one run of num_seeds members) or "separate" (a run per
  seed), as `seeds_as` asks; "auto": members on GPU and TPU, where their
  steps are vmapped, separate on CPU, where unrolled members trained slower
  than as many runs (docs/comparisons.md). Never members with early
  stopping: they would stop together, on their mean; a seed alone stops on
  its own."""
  if seeds_as not in SEEDS_AS:
    raise UserError(f"--seeds_as={seeds_as!r}: choose one of {', '.join(SEEDS_AS)}")
  if seeds_as == "auto":
    if backend is None:
      # Started as the run starts it: its CPU device count (and
      # jax.distributed) must be set before JAX's backend first runs.
      runtime.start(config)
      backend = jax.default_backend()
    seeds_as = "separate" if backend == "cpu" else "members"
  return "separate" if config.early_stopping_patience else seeds_as


def train_seeds(name: str, config, seeds: Sequence[int], folder: Path,
                seeds_as: str = "auto", started_at: float | None = None,
                callbacks: Sequence[Callable] = ()) -> list[dict[str, Any]]:
  """Trains `config` with each of `seeds` under `folder` and returns each
  seed's `run_entry`, in order: as the members of one run where
  `trained_as(config, seeds_as)` says so and the seeds are consecutive, else
  a run per seed.
  A finished run of the same config is read, an interrupted one resumed.
  `started_at`: as training.train_and_evaluate's, for the first run;
  `callbacks` go to every run (a member run's records hold every member)."""
  seeds = list(seeds)
  how = trained_as(config, seeds_as)
  consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
  if how == "members" and consecutive:
    workdir = folder / (f"seed{seeds[0]}" if len(seeds) == 1
                        else f"seeds{seeds[0]}-{seeds[-1]}")
    config = _with_seeds(config, seeds[0], len(seeds))
    if len(seeds) == 1:
      logging.info("comparing: %s, seed%d, in %s", name, seeds[0], workdir)
    else:
      logging.info("comparing: %s, seeds %s as the %d members of one run, in %s",
                   name, f"{seeds[0]}..{seeds[-1]}", len(seeds), workdir)
    summary, history = _run(config, workdir, started_at, callbacks)
    return member_entries(summary, history, "members")
  if config.num_seeds != 1:
    logging.info("%s: a run per seed, each with num_seeds=1 (the config's %d "
                 "gives way to the seeds compared)", name, config.num_seeds)
  entries = []
  for i, seed in enumerate(seeds):
    workdir = folder / f"seed{seed}"
    logging.info("comparing: %s, seed%d (run %d of %d, one per seed), in %s",
                 name, seed, i + 1, len(seeds), workdir)
    summary, history = _run(_with_seeds(config, seed, 1), workdir, started_at,
                            callbacks)
    started_at = None
    entries.append(run_entry(seed, summary, history) | {"trained_as": "separate"})
  return entries


def _with_seeds(config, seed: int, num_seeds: int):
  config = config.copy_and_resolve_references()
  config.seed, config.num_seeds = seed, num_seeds
  return config


def _run(config, workdir: Path, started_at, callbacks):
  """(summary.json, metrics.jsonl's records) of the run of `config` in
  `workdir`: read where that run finished, else trained (or resumed)."""
  try:
    summary = json.loads((workdir / "summary.json").read_text())
  except (OSError, ValueError):
    summary = None
  if (isinstance(summary, dict) and summary.get("config")
      == json.loads(json.dumps(config.to_dict(), default=str))):
    logging.info("%s finished already: read, not trained", workdir)
  else:
    summary = training.train_and_evaluate(config, workdir, started_at,
                                          callbacks).summary
  return summary, outputs.read_metrics(workdir)


def member_entries(summary: dict[str, Any], history: list[dict[str, Any]],
                   how: str) -> list[dict[str, Any]]:
  """A `run_entry` per member of a run (one for a run of one): each
  member's accuracies from summary.json's `members` and metrics.jsonl's,
  and its share of the run's time (the run's over the members)."""
  if "members" not in summary:
    return [run_entry(summary["config"]["seed"], summary, history)
            | {"trained_as": how}]
  count = len(summary["members"])
  entries = []
  for k, member in enumerate(summary["members"]):
    own = [{**r["members"][k], "epoch_seconds": r["epoch_seconds"] / count}
           for r in history]
    entries.append(run_entry(member["seed"], {
        **member, "train_seconds": summary["train_seconds"] / count}, own)
        | {"trained_as": how, "run_train_seconds": summary["train_seconds"]})
  return entries


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
  tuned = "tune" in record
  lines += ["| config | dataset | model | optimizer | epochs | "
            + (tuning.HEADER if tuned else "")
            + ("validation mean | " if on_validation else "")
            + "mean | std | 95% CI | p vs baseline | min | max | training s (mean) |",
            "|---|---|---|---|---|" + (tuning.DIVIDER if tuned else "")
            + ("---|" if on_validation else "")
            + "---|---|---|---|---|---|---|"]
  for name in record["ranking"]:
    r = record["configs"][name]
    acc = r["test_accuracy"]
    p = "baseline" if name == record["baseline"] else _p_value(r["p_vs_baseline"])
    lines.append(f"| {name} | {r['dataset']} | {r['model']} | {r['optimizer']} | "
                 f"{r['num_epochs']} | "
                 + (tuning.cells(r["tuning"]) if tuned else "")
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
  members = [name for name in record["ranking"]
             if record["configs"][name].get("trained_as") == "members"
             and len(record["configs"][name]["runs"]) > 1]
  if members:
    lines += ["", f"{', '.join(members)}: the seeds trained as the members of "
              "one run; training s is that run's time over its members."]
  if tuned:
    lines += tuning.notes(record)
  if n < MIN_SEEDS:
    lines += ["", f"**{seeds_warning(n)}**"]
  return "\n".join(lines) + "\n"


def main(argv):
  workdir = Path(_WORKDIR.value or DEFAULT_WORKDIR)
  compare(argv[1:], _SEEDS.value, workdir, _OVERRIDE.value, _SEEDS_AS.value,
          _TUNE.value)
  stem = workdir / comparison_stem([Path(p).stem for p in argv[1:]], _TUNE.value)
  print(stem.with_suffix(".md").read_text(), end="")
  logging.info("wrote %s.{md,json,png}", stem)


if __name__ == "__main__":
  cli.run(main)
