"""Turns a training run into a record under benchmarks/results/.

Command (from the repo root):
  python benchmarks/record_run.py --config=configs/mnist.py [--config.FIELD=VALUE ...]
      [--tag=TAG] [--note="shared machine"] [--workdir=DIR]
runs `python -m mnist_jax.main` with that config and those overrides in a
fresh process (as a user runs it: mnist_jax picks its own devices), then writes
benchmarks/results/<backend>-<device kind>/run-<config stem>-<tag>.json: the
run's summary.json, its per-epoch metrics.jsonl, the machine (CPU model, cores,
devices), versions, git commit, date, the commands and the note. The tag
defaults to the date, e.g. 20261121T0448.

  python benchmarks/record_run.py --from_workdir=runs/mnist [--name=mnist]
records a finished workdir instead, without training (the command that made
it is then unknown and recorded as null).

Every training figure quoted in README.md or a config's docstring cites such a
record (or a benchmark's), so anyone can check it and rerun the command.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position

# The packages whose versions decide a run's numbers.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "ml-collections")


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  """(the recorder's own flags, the --config.FIELD=VALUE overrides)."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", help="config file to train, e.g. configs/mnist.py")
  parser.add_argument("--from_workdir", help="record this finished workdir; no training")
  parser.add_argument("--workdir", help="where to train (default: a temporary folder)")
  parser.add_argument("--name", help="the record's config name (default: the "
                      "config file's stem, or the workdir's name)")
  parser.add_argument("--tag", help="the record's name ends run-<name>-<tag>.json; "
                      "default: the date")
  parser.add_argument("--note", default="", help="anything a reader of the "
                      "figures must know, e.g. that the machine was shared")
  parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
  argv = sys.argv[1:] if argv is None else list(argv)
  args, rest = parser.parse_known_args(argv)
  args.argv = argv
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    raise UserError(f"unknown arguments {' '.join(unknown)}; config fields are "
                    f"set as --config.FIELD=VALUE")
  if bool(args.config) == bool(args.from_workdir):
    raise UserError("pass either --config=configs/<name>.py (train, then record) "
                    "or --from_workdir=DIR (record a finished run)")
  if args.from_workdir and rest:
    raise UserError(f"{' '.join(rest)}: overrides need --config; a finished "
                    f"workdir's config is in its summary.json")
  if args.config and Path(args.config).is_file():  # Before training, not after.
    ba.check_overrides(parser, [args.config],
                       [o.removeprefix("--config.") for o in rest], "--config.FIELD")
  return args, rest


def versions() -> dict[str, str | None]:
  found = {}
  for package in PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = None
  return found


def read_run(workdir: Path) -> tuple[dict, list[dict]]:
  """(summary.json, the metrics.jsonl records) of a finished run."""
  summary_path = workdir / "summary.json"
  if not summary_path.is_file():
    raise UserError(f"{workdir} holds no summary.json: the run did not finish; "
                    f"rerun its command to resume it, then record it")
  try:
    summary = json.loads(summary_path.read_text())
    metrics = [json.loads(line) for line in
               (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(f"cannot read the run in {workdir} ({e}); rerun its "
                    f"command in a new --workdir") from None
  if len(metrics) != summary.get("num_epochs"):
    raise UserError(f"{workdir}/metrics.jsonl has {len(metrics)} epochs, its "
                    f"summary.json says {summary.get('num_epochs')}; rerun the "
                    f"command in a new --workdir")
  return summary, metrics


def code_version() -> dict[str, object]:
  """The commit checked out and the tracked files that differ from it, taken
  before training: the code that ran is that commit plus those changes."""
  def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
  try:
    return {"git_commit": git("rev-parse", "HEAD").strip(),
            "git_changed_files": git("diff", "--name-only", "HEAD").split()}
  except (OSError, subprocess.CalledProcessError):
    return {"git_commit": None, "git_changed_files": None}


def train(config: str, overrides: list[str], workdir: Path) -> float:
  """Runs mnist_jax.main in a fresh process; its wall seconds."""
  # Absolute paths: the run's working directory is the repo root.
  command = [sys.executable, "-m", "mnist_jax.main",
             f"--config={Path(config).resolve()}",
             f"--workdir={workdir.resolve()}", *overrides]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  start = time.perf_counter()
  # A failure: the run's one-line error, and nothing recorded.
  ba.run_child(command, cwd=ROOT, env=env)
  return time.perf_counter() - start


def record_run(args: argparse.Namespace, overrides: list[str]) -> Path:
  load_before = os.getloadavg()
  code = code_version()
  wall_seconds = None
  if args.from_workdir:
    workdir = Path(args.from_workdir)
    name = args.name or workdir.resolve().name
    summary, metrics = read_run(workdir)
  else:
    if not Path(args.config).is_file():
      raise UserError(f"config file {args.config} does not exist; pass "
                      f"--config=configs/<name>.py")
    name = args.name or Path(args.config).stem
    with tempfile.TemporaryDirectory() as tmp:
      workdir = Path(args.workdir or tmp)
      if workdir.exists() and any(workdir.iterdir()):
        raise UserError(f"--workdir={workdir} is not empty; training there would "
                        f"resume its run. Pick an empty folder, or record that "
                        f"run with --from_workdir={workdir}")
      wall_seconds = train(args.config, overrides, workdir)
      summary, metrics = read_run(workdir)
  # After training, so this process never held the devices the run needed.
  machine = timing.machine_info()
  # The run's own devices, which mnist_jax chose in its process.
  for key in ("backend", "device_kind", "device_count"):
    if key not in summary:
      raise UserError(f"{workdir}/summary.json has no '{key}' (an older "
                      f"mnist_jax wrote it); rerun its command to record it")
    machine[key] = summary[key]
  machine.update(code)
  machine["cpu_affinity"] = len(os.sched_getaffinity(0))
  record = {
      "benchmark": "run",
      "config": name,
      "overrides": overrides,
      # As a user would type it; the workdir was the recorder's.
      "command": (None if args.from_workdir else shlex.join(
          ([f"XLA_FLAGS={os.environ['XLA_FLAGS']}"] if os.environ.get("XLA_FLAGS") else [])
          + ["python", "-m", "mnist_jax.main", f"--config={args.config}", *overrides])),
      "record_command": shlex.join(["python", "benchmarks/record_run.py", *args.argv]),
      "from_workdir": args.from_workdir,
      "note": args.note,
      "load_average_before_after": [load_before[0], os.getloadavg()[0]],
      "wall_seconds": wall_seconds,
      "machine": machine,
      "versions": versions(),
      "summary": summary,
      "metrics": metrics,
  }
  tag = args.tag or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M")
  return timing.write_record(record, f"run-{name}-{tag}", results_dir=args.results_dir)


def main(argv=None):
  args, overrides = parse_args(argv)
  path = record_run(args, overrides)
  summary = json.loads(path.read_text())["summary"]
  print(f"{summary['dataset']}, {summary['model']}, {summary['num_epochs']} epochs: "
        f"final test accuracy {100 * summary['final_test_accuracy']:.2f}%, "
        f"{summary['train_seconds']:.1f} s training")


if __name__ == "__main__":
  ba.run_main(main)
