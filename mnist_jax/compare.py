"""Compares configs over seeds: `python -m mnist_jax.compare A.py B.py --seeds=3`.

Trains every config with seeds 0..K-1 (one run each, in
`<workdir>/<config>/seed<k>`, so an interrupted comparison resumes where it
stopped) and writes, in the workdir:

  comparison.md    a table: test accuracy mean, std, min and max over seeds,
                   training time, per config
  comparison.json  the same numbers and every run's per-epoch test accuracy
  comparison.png   test accuracy per epoch and against training time, mean
                   and min-max band per config

`--override=field=value` (repeatable) sets a field in every config, e.g.
`--override=num_epochs=2` for a quick look.
"""

import ast
import importlib.util
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags, logging

import mnist_jax
from mnist_jax import cli, outputs, plots, timing, train
from mnist_jax import config as config_lib
from mnist_jax.errors import UserError

_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per config: 0..seeds-1.")
_WORKDIR = cli.workdir_flag()
DEFAULT_WORKDIR = "runs/compare"
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "field=value set in every config, e.g. num_epochs=2.")


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` would load it."""
  if not Path(path).is_file():
    raise UserError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"compared_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path} does not define get_config()")
  return module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]):
  for override in overrides:
    field, sep, text = override.partition("=")
    if not sep:
      raise UserError(f"--override={override}: expected field=value")
    if field not in config:
      raise UserError(f"--override={override}: the config has no field '{field}'")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # A bare word: a string, e.g. optimizer=adam.
    with config.unlocked():
      config[field] = value


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
    config = load_config(path)
    apply_overrides(config, list(overrides))
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
      summary = train.train_and_evaluate(config, workdir / name / f"seed{seed}",
                                         started_at).summary
      started_at = None  # The next ones start at their own call.
      history = outputs.read_metrics(workdir / name / f"seed{seed}")
      runs.append({"seed": seed,
                   "final_test_accuracy": summary["final_test_accuracy"],
                   "train_seconds": summary["train_seconds"],
                   "test_accuracy": [r["test_accuracy"] for r in history],
                   "epoch_seconds": [r["epoch_seconds"] for r in history]})
    results[name] = {
        "dataset": config.dataset, "model": config.model,
        "optimizer": config.optimizer, "num_epochs": config.num_epochs,
        "test_accuracy": timing.spread([r["final_test_accuracy"] for r in runs]),
        "train_seconds": timing.spread([r["train_seconds"] for r in runs]),
        "runs": runs}
  record = {"seeds": seeds, "overrides": list(overrides), "configs": results}
  outputs.write_json_atomic(workdir / "comparison.json", record)
  outputs.write_atomic(workdir / "comparison.md", markdown_table(record))
  plots.comparison(results, workdir / "comparison.png")
  return record


def markdown_table(record: dict[str, Any]) -> str:
  lines = [f"Test accuracy after the last epoch over {record['seeds']} seed(s)"
           + (f"; overrides: {', '.join(record['overrides'])}" if record["overrides"] else "")
           + ".", "",
           "| config | dataset | model | optimizer | epochs | mean | std | min | max | training s (mean) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in record["configs"].items():
    acc = r["test_accuracy"]
    lines.append(f"| {name} | {r['dataset']} | {r['model']} | {r['optimizer']} | "
                 f"{r['num_epochs']} | {100 * acc['mean']:.2f}% | {100 * acc['std']:.2f} | "
                 f"{100 * acc['min']:.2f}% | {100 * acc['max']:.2f}% | "
                 f"{r['train_seconds']['mean']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  workdir = _WORKDIR.value or DEFAULT_WORKDIR
  compare(argv[1:], _SEEDS.value, workdir, _OVERRIDE.value)
  print((Path(workdir) / "comparison.md").read_text(), end="")
  logging.info("wrote %s/comparison.{md,json,png}", workdir)


if __name__ == "__main__":
  cli.run(main)
