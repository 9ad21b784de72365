"""Host memory of a training run: the process's RSS at the end of each epoch.

Command (from the repo root):
  python benchmarks/host_memory.py --data_dir=/work/shared/datasets
      [--config=configs/mnist.py] [--epochs=2] [--override=field=value ...]
      [--tag=TAG] [--out=PATH]

trains the config in this process (training.train_and_evaluate, plots off) with
a callback that reads the resident set size (/proc/self/status: VmRSS) after
each epoch, and writes benchmarks/results/<backend>-<device kind>/
host-memory-<config stem>[-TAG].json: those readings, the peak RSS
(getrusage; it includes the moment of placing the data, when the host copy
and the devices' copies coexist) and the machine. On CPU each device's
arrays live in host memory, so the readings count every device's copy of
the dataset.

To compare two versions of mnist_jax, run this file from each checkout (copy
it into the older one) with a --tag for each, one after the other.
"""

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import timing, training  # pylint: disable=g-import-not-at-top,wrong-import-position
# The byclass benchmark's readings of VmRSS and getrusage's peak.
from emnist_scale import memory  # pylint: disable=g-import-not-at-top,wrong-import-position

MIB = 2 ** 20


def rss_bytes() -> int:
  current = memory()["rss_bytes"]
  if current is None:
    raise OSError("no VmRSS in /proc/self/status: this benchmark needs Linux")
  return current


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir,
                      help="default: the config's")
  parser.add_argument("--config", default="configs/mnist.py",
                      help="relative to the repo root")
  parser.add_argument("--epochs", type=ba.positive_int, default=2)
  parser.add_argument("--override", action="append", default=[],
                      help="field=value (repeatable)")
  parser.add_argument("--tag", default="")
  parser.add_argument("--out")
  args = parser.parse_args(argv)
  if not (ROOT / args.config).is_file():
    parser.error(f"argument --config: {ROOT / args.config} does not exist")
  ba.check_overrides(parser, [ROOT / args.config], args.override)
  return args


def main(argv=None):
  args = parse_args(argv)
  config = config_lib.from_file(str(ROOT / args.config))
  config_lib.apply_overrides(
      config, ([f"data_dir={args.data_dir}"] if args.data_dir else [])
      + ["plots=False", f"num_epochs={args.epochs}", *args.override])
  readings = []

  def after_epoch(record):
    gc.collect()  # What is unreachable is not what the run holds.
    readings.append({"epoch": record["epoch"], "rss_mib": rss_bytes() / MIB})

  before = rss_bytes()
  started = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="host-memory-") as workdir:
    result = training.train_and_evaluate(config, workdir, callbacks=[after_epoch])
  record = {
      "benchmark": "host-memory",
      "command": " ".join(["python benchmarks/host_memory.py"]
                          + (argv if argv is not None else sys.argv[1:])),
      "config": args.config,
      "overrides": args.override,
      "dataset": config.dataset,
      "rss_before_training_mib": before / MIB,
      "rss_after_each_epoch_mib": readings,
      "peak_rss_mib": memory()["peak_rss_bytes"] / MIB,
      "device_count": result.summary.get("device_count"),
      "final_test_accuracy": result.summary["final_test_accuracy"],
      "wall_seconds": time.perf_counter() - started,
      "load_average_after": list(os.getloadavg()),
      "machine": timing.machine_info(),
  }
  name = f"host-memory-{Path(args.config).stem}" + (f"-{args.tag}" if args.tag else "")
  timing.write_record(record, name, args.out, ROOT / "benchmarks" / "results")
  last = readings[-1]["rss_mib"]
  print(f"RSS after epoch {readings[-1]['epoch']}: {last:.0f} MiB; peak "
        f"{record['peak_rss_mib']:.0f} MiB; {record['device_count']} device(s)")


if __name__ == "__main__":
  ba.run_main(main)
