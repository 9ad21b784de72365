"""Start-up time with and without JAX's persistent compilation cache.

Runs the same short training command several times as fresh processes: with
the cache turned off, then with an empty cache (the first start fills it),
then with the cache warm. Each run's summary.json gives `compile_seconds` and
`seconds_to_first_step` (from importing mnist_jax to dispatching the first
training step: imports, data loading, device placement and compilation).

Command (from the repo root, data in ../shared/datasets):
  python benchmarks/startup.py --data_dir=../shared/datasets
      [--config=configs/mnist160.py] [--override=field=value ...]
writes benchmarks/results/<backend>-<device kind>/startup-<config>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args as ba  # pylint: disable=g-import-not-at-top
from mnist_jax import timing  # pylint: disable=g-import-not-at-top


def run(config: str, data_dir: str, workdir: Path, cache_home: Path,
        cache: bool, overrides: list[str] = ()) -> dict:
  command = [sys.executable, "-m", "mnist_jax.main", f"--config={config}",
             f"--workdir={workdir}", "--config.num_epochs=1", "--config.plots=False",
             f"--config.compilation_cache={cache}"]
  command += [f"--config.{o}" for o in overrides]
  if data_dir:
    command.append(f"--config.data_dir={data_dir}")
  ba.run_child(command, echo=False, env=environment(cache_home),
               stdout=subprocess.DEVNULL, cwd=ROOT)
  return first_step(workdir)


def environment(cache_home: Path) -> dict[str, str]:
  """A run's environment: its caches (JAX's persistent compilation cache
  among them) under `cache_home`, an empty folder for a cold start."""
  return {**os.environ, "XDG_CACHE_HOME": str(cache_home), "PYTHONPATH": str(ROOT)}


def first_step(workdir: Path) -> dict:
  """compile_seconds and seconds_to_first_step of the run in `workdir`."""
  summary = json.loads((workdir / "summary.json").read_text())
  return {k: summary[k] for k in ("compile_seconds", "seconds_to_first_step")}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=str(ROOT / "configs" / "mnist160.py"),
                      type=ba.existing_file)
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--repeats", type=ba.positive_int, default=3)
  parser.add_argument("--override", action="append", default=[],
                      metavar="FIELD=VALUE", help="a change to --config "
                      "(repeatable), e.g. model=mlp; the record names them")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  ba.check_overrides(parser, [args.config], args.override)
  return args


def main(argv=None):
  args = parse_args(argv)
  results = {"no_cache": [], "cold_cache": [], "warm_cache": []}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for r in range(args.repeats):
      # Each repeat starts from an empty cache of its own.
      cache_home = tmp / f"cache{r}"
      for name, folder, cache in (("no_cache", "a", False), ("cold_cache", "b", True),
                                  ("warm_cache", "c", True)):
        results[name].append(run(args.config, args.data_dir, tmp / f"{folder}{r}",
                                 cache_home, cache, args.override))
  medians = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
             for name, runs in results.items()}
  for name, m in medians.items():
    print(f"{name:>10}: compile {m['compile_seconds']:.2f} s, to first step "
          f"{m['seconds_to_first_step']:.2f} s (median of {args.repeats})")
  machine = timing.machine_info()
  record = {"benchmark": "startup", "config": Path(args.config).name,
            "overrides": args.override, "repeats": args.repeats, "machine": machine, "runs": results,
            "medians": medians,
            "warm_over_cold_to_first_step": medians["warm_cache"]["seconds_to_first_step"]
            / medians["cold_cache"]["seconds_to_first_step"]}
  timing.write_record(record, f"startup-{Path(args.config).stem}", out=args.out,
                      results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  ba.run_main(main)
