"""Transfer from MNIST to Fashion-MNIST: fine-tuning and a linear probe
against the same model trained from scratch.

Command (from the repo root):
  python benchmarks/finetune.py --data_dir=/work/shared/datasets
      [--seeds=3] [--epochs=1,3] [--source_epochs=2]
      [--probe_learning_rate=0.01] [--override=field=value ...] [--out=PATH]

1. trains the source: configs/mnist.py (cnn, SGD with momentum) on MNIST for
   --source_epochs epochs, seed 0, in a temporary workdir;
2. for each E in --epochs, three runs of configs/fashion.py's recipe (Adam
   1e-3, cosine) with the source's model, num_epochs=E and num_seeds=--seeds
   (the seeds train as members of one run), each in a fresh workdir:
     scratch   the model's own initialisation;
     finetune  init_from=<source>, freeze=none: every parameter trains;
     probe     init_from=<source>, freeze=features: only the classifier trains;
     probe_lr  the probe at --probe_learning_rate: a head alone wants a larger
               step than the whole network's 1e-3 (a probe is usually tuned
               on its own);
3. writes benchmarks/results/<backend>-<device kind>/finetune-mnist-to-fashion.json
   (or --out) after every run, so a cut-off measurement keeps what it finished:
   each member's final test accuracy, their mean, std and 95% CI
   (mnist_jax.stats.summary), train seconds, the overrides, the machine and
   the load average before and after (the figures are noisy where it exceeds
   the core count: the machine was shared).

--override applies to every run, source and target alike (the tests use it
for a tiny dataset). Every run is in this process: the CPU device count is
fixed by the first (recorded as machine.device_count).
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import stats, timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import training  # pylint: disable=g-import-not-at-top,wrong-import-position

SOURCE_CONFIG = "configs/mnist.py"
TARGET_CONFIG = "configs/fashion.py"
VARIANTS = {
    "scratch": {},
    "finetune": {"freeze": "none"},   # init_from is added once the source exists.
    "probe": {"freeze": "features"},
    "probe_lr": {"freeze": "features"},  # learning_rate from --probe_learning_rate.
}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir,
                      help="default: the configs' own")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--epochs", default="1,3",
                      help="comma-separated target epoch counts")
  parser.add_argument("--source_epochs", type=int, default=2)
  parser.add_argument("--probe_learning_rate", type=float, default=0.01,
                      help="learning rate of the probe_lr rows")
  parser.add_argument("--override", action="append", default=[],
                      help="field=value for every run (repeatable)")
  parser.add_argument("--out", help="record path (default: benchmarks/results/"
                      "<backend>-<device kind>/finetune-mnist-to-fashion.json)")
  args = parser.parse_args(argv)
  try:
    args.epochs = [int(e) for e in args.epochs.split(",") if e.strip()]
  except ValueError:
    parser.error(f"--epochs={args.epochs}: expected integers like 1,3")
  if (not args.epochs or min(args.epochs) < 1 or args.seeds < 1
      or args.source_epochs < 1 or args.probe_learning_rate <= 0):
    parser.error("--epochs, --seeds, --source_epochs and --probe_learning_rate "
                 "must be positive")
  ba.check_overrides(parser, [ROOT / SOURCE_CONFIG, ROOT / TARGET_CONFIG],
                     args.override)
  return args


def configured(path: str, overrides: dict, extra: list[str] = ()):
  config = config_lib.from_file(str(ROOT / path))
  with config.unlocked():
    for field, value in overrides.items():
      config[field] = value
  config_lib.apply_overrides(config, list(extra))
  return config


def run(path: str, overrides: dict, workdir: Path, extra: list[str]) -> dict:
  config = configured(path, overrides, extra)
  started = time.perf_counter()
  training.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - started
  summary = json.loads((workdir / "summary.json").read_text())
  members = summary.get("members")
  accuracies = ([m["final_test_accuracy"] for m in members] if members
                else [summary["final_test_accuracy"]])
  return {
      "config": path,
      "overrides": {**{k: v for k, v in overrides.items() if k != "data_dir"},
                    **{f: config[f] for f in (o.partition("=")[0] for o in extra)}},
      "command": " ".join(["python -m mnist_jax.main", f"--config={path}"]
                          + [f"--config.{k}={shlex.quote(str(v))}"
                             for k, v in overrides.items()]
                          + [f"--config.{o}" for o in extra]),
      "final_test_accuracy": accuracies,
      "test_accuracy": stats.summary(accuracies),
      "train_seconds": summary.get("train_seconds"),
      "wall_seconds": wall,
      "device_count": summary.get("device_count"),
  }


def main(argv=None):
  args = parse_args(argv)
  common = {"plots": False, **({"data_dir": args.data_dir} if args.data_dir else {})}
  load_before = os.getloadavg()
  started = time.time()
  record = {
      "benchmark": "finetune-mnist-to-fashion",
      "command": " ".join(["python benchmarks/finetune.py"]
                          + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
      "seeds": args.seeds, "epochs": args.epochs,
      "source_epochs": args.source_epochs,
      "probe_learning_rate": args.probe_learning_rate,
      "overrides": args.override,
      "load_average_before": list(load_before),
      "complete": False,
  }

  def save():
    record["machine"] = timing.machine_info()
    record["load_average_after"] = list(os.getloadavg())
    record["wall_seconds"] = time.time() - started
    loads = [record["load_average_before"][0], record["load_average_after"][0]]
    record["note"] = (
        f"shared machine: 1-minute load average {loads[0]:.1f} before, "
        f"{loads[1]:.1f} after, on {os.cpu_count()} cores; the seconds are noisy"
        if max(loads) > (os.cpu_count() or 1) * 0.75 else
        "the machine was not otherwise busy (load average below the core count)")
    return timing.write_record(record, "finetune-mnist-to-fashion", args.out,
                               ROOT / "benchmarks" / "results")

  with tempfile.TemporaryDirectory(prefix="finetune-") as tmp:
    tmp = Path(tmp)
    source = tmp / "source"
    record["source"] = run(SOURCE_CONFIG, {**common, "num_epochs": args.source_epochs,
                                           "seed": 0}, source, args.override)
    # The source's model and width: fashion.py must train the same architecture.
    source_config = configured(SOURCE_CONFIG, {}, args.override)
    record["runs"] = {}
    save()
    for epochs in args.epochs:
      for variant, extra in VARIANTS.items():
        overrides = {**common, "num_epochs": epochs, "num_seeds": args.seeds,
                     "model": source_config.model, "width": source_config.width,
                     "depth": source_config.depth, **extra}
        if variant != "scratch":
          overrides["init_from"] = str(source)
        if variant == "probe_lr":
          overrides["learning_rate"] = args.probe_learning_rate
        result = run(TARGET_CONFIG, overrides, tmp / f"{variant}-{epochs}",
                     args.override)
        # The temporary source path means nothing after the run.
        result["command"] = result["command"].replace(str(source), "<source workdir>")
        result["overrides"]["init_from"] = (
            "<source workdir>" if "init_from" in overrides else "")
        record["runs"][f"{variant}-{epochs}"] = {"variant": variant,
                                                 "epochs": epochs, **result}
        acc = result["test_accuracy"]
        print(f"{variant} {epochs} epoch(s): {acc['mean']:.4f} ± {acc['std']:.4f} "
              f"({result['final_test_accuracy']})", flush=True)
        save()
  record["complete"] = True
  save()


if __name__ == "__main__":
  ba.run_main(main)
