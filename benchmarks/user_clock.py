"""The user's clock: `mnist-jax train --config=configs/mnist_speedrun.py` from
the shell prompt to its final line and to its exit, against the PyTorch
recipe run as its user runs it (`python train_mnist_fast.py`: here
benchmarks/torch_recipe.py, which loads MNIST's IDX gzip files, trains one
epoch, evaluates and prints the accuracy).

Each round runs fresh processes in turn, so that a drift in the machine's
speed affects all alike: PyTorch; mnist_jax with an empty persistent
compilation cache (a fresh XDG_CACHE_HOME: "cold"); mnist_jax again with the
cache that run filled ("warm"), each mnist_jax run in a new workdir. A run's
clock starts when it is spawned and stops at its last printed line and at
its exit; output is read as a terminal would show it (PYTHONUNBUFFERED).

Where mnist_jax's seconds go: each round also runs the same command, cold
and warm, in an instrumented child (this script's `--phases_child`) that
stamps the start and end of each step of a run (interpreter start, imports,
flags and config, backend, data, model initialisation, device placement,
checkpoint manager, compilation, training and evaluation from metrics.jsonl,
checkpoint write, files, exit), and `python -X importtime -c "import
mnist_jax.main"` says which libraries the imports are.

Command (from the repo root; needs torch: `pip install -e '.[benchmark]'`):
  python benchmarks/user_clock.py --data_dir=../shared/datasets [--rounds=5]
Tiny mode (seconds): --config=configs/mnist160.py --rounds=1.
Writes benchmarks/results/<backend>-<device kind>/user-clock-<dataset>.json.
"""

import time

STARTED = time.time()  # This process's start, for the instrumented child.

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import collections
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEEDRUN = "configs/mnist_speedrun.py"
# The steps the instrumented child stamps: (step, module, function), in run
# order. A call inside another stamped call counts once, for the outer one.
STEPS = (
    ("backend", "runtime", "start"),
    ("data", "data", "load"),
    ("model_init", "state", "build"),
    ("device_placement", "feed", "place_data"),
    ("device_placement", "distributed", "put_global"),
    ("checkpoint_open", "checkpoint", "Checkpoints.__init__"),
    ("checkpoint_open", "checkpoint", "Checkpoints.restore_latest"),
    ("compile", "training", "_compile"),
    ("checkpoint_write", "between_epochs", "Saver.save"),
    ("checkpoint_write", "checkpoint", "Checkpoints.wait"),
    ("checkpoint_write", "checkpoint", "Checkpoints.close"),
    ("files", "outputs", "RunFiles.add_epoch"),
    ("files", "outputs", "RunFiles.finish"),
    ("files", "outputs", "RunFiles.close"),
    ("final_line", "training", "_finish_on_console"),
)


def phases_child(marks_path: str, argv: list[str]):
  """`mnist-jax <argv>` in this process, its STEPS stamped (time.time()),
  written to `marks_path` as it returns. Runs before this script's own
  imports, which import JAX."""
  stamps = {"spawned": float(os.environ["USER_CLOCK_SPAWNED"]),
            "started": STARTED, "steps": [], "missing": []}
  import mnist_jax.main  # pylint: disable=unused-import  (the train command's imports)
  stamps["imported"] = time.time()
  active = []  # The stamped calls under way.

  def stamped(fn, step):
    def call(*a, **k):
      start = time.time()
      active.append(step)
      try:
        return fn(*a, **k)
      finally:
        active.pop()
        if not active:
          stamps["steps"].append((step, start, time.time()))
    return call

  for step, module, name in STEPS:
    owner = importlib.import_module(f"mnist_jax.{module}")
    holder, _, attribute = name.rpartition(".")
    holder = getattr(owner, holder) if holder else owner
    if not hasattr(holder, attribute):  # Renamed: its seconds go to "other".
      stamps["missing"].append(f"{module}.{name}")
      continue
    setattr(holder, attribute, stamped(getattr(holder, attribute), step))
  from mnist_jax import __main__ as dispatcher
  from mnist_jax import cli
  run = cli.run

  def stamped_run(main):  # The command; then the process exits.
    try:
      run(main)
    finally:  # absl exits through SystemExit.
      stamps["returned"] = time.time()
      Path(marks_path).write_text(json.dumps(stamps))

  cli.run = stamped_run
  sys.argv = ["mnist-jax", *argv]
  dispatcher.main()


if __name__ == "__main__" and sys.argv[1:2] == ["--phases_child"]:
  phases_child(sys.argv[2], sys.argv[3:])
  sys.exit(0)

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba
import startup
from mnist_jax import config as config_lib
from mnist_jax import timing
from mnist_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position


def timed_child(command: list[str], env: dict[str, str]) -> dict:
  """Runs `command`; seconds from its spawn to its last line and to its exit."""
  start = time.perf_counter()
  lines = []
  with subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"},
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as child:
    for line in child.stdout:
      if line.strip():
        lines.append((time.perf_counter() - start, line.rstrip()))
  exit_seconds = time.perf_counter() - start
  if child.returncode or not lines:
    last = lines[-1][1] if lines else "no output"
    raise UserError(f"{last.removeprefix('error: ')} (in a child process, exit "
                    f"{child.returncode}: {' '.join(command[:3])} ...)")
  return {"exit_seconds": exit_seconds, "final_line_seconds": lines[-1][0],
          "final_line": lines[-1][1]}


def train_args(args, workdir: Path) -> list[str]:
  """`train ...`: the command's arguments, as a user types them."""
  command = ["train", f"--config={args.config}", f"--workdir={workdir}"]
  command += [f"--config.dataset={args.dataset}"] if args.dataset else []
  command += [f"--config.data_dir={args.data_dir}"] if args.data_dir else []
  return command + [f"--config.{o}" for o in args.override]


def run_jax(args, workdir: Path, cache_home: Path) -> dict:
  """`mnist-jax train ...`, the console script of this Python's environment."""
  script = Path(sys.executable).parent / "mnist-jax"
  launcher = [str(script)] if script.exists() else [sys.executable, "-m", "mnist_jax"]
  result = timed_child(launcher + train_args(args, workdir),
                       startup.environment(cache_home))
  summary = json.loads((workdir / "summary.json").read_text())
  return {**result, **startup.first_step(workdir),
          "train_seconds": summary["train_seconds"],
          "test_accuracy": summary["final_test_accuracy"]}


def run_torch(args) -> dict:
  """`python benchmarks/torch_recipe.py ...`: the recipe as its user runs it."""
  command = [sys.executable, str(ROOT / "benchmarks" / "torch_recipe.py"),
             f"--dataset={args.torch_dataset}"]
  command += [f"--data_dir={args.data_dir}"] if args.data_dir else []
  result = timed_child(command, dict(os.environ))
  # "test accuracy A% (E s evaluating), T s training, F s from the script's
  # start to the first step; jax imported: B"
  accuracy, eval_s, train_s, first_step = map(
      float, re.findall(r"\d+\.\d+", result["final_line"])[:4])
  return {**result, "test_accuracy": accuracy / 100, "eval_seconds": eval_s,
          "train_seconds": train_s, "seconds_to_first_step": first_step,
          "jax_imported": result["final_line"].endswith("True")}


def run_phases(args, workdir: Path, cache_home: Path) -> dict:
  """The instrumented child: the seconds of each step of a run."""
  marks = workdir.with_suffix(".json")
  env = {**startup.environment(cache_home), "USER_CLOCK_SPAWNED": repr(time.time())}
  result = timed_child([sys.executable, __file__, "--phases_child", str(marks),
                        *train_args(args, workdir)], env)
  exited = time.time()
  stamps = json.loads(marks.read_text())
  seconds = collections.Counter()
  for step, start, end in stamps["steps"]:
    seconds[step] += end - start
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  seconds["training"] = sum(r["epoch_seconds"] for r in records)
  seconds["evaluation"] = sum(r["eval_seconds"] for r in records)
  seconds["interpreter"] = stamps["started"] - stamps["spawned"]
  seconds["imports"] = stamps["imported"] - stamps["started"]
  seconds["flags_and_config"] = stamps["steps"][0][1] - stamps["imported"]
  seconds["exit"] = exited - stamps["returned"]
  seconds["other"] = result["exit_seconds"] - sum(seconds.values())
  return {"exit_seconds": result["exit_seconds"], "seconds": dict(seconds),
          "missing_steps": stamps["missing"]}


def import_times() -> dict:
  """`python -X importtime -c "import mnist_jax.main"`: seconds by package."""
  out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        "import mnist_jax.main"], cwd=ROOT, capture_output=True,
                       text=True, env=startup.environment(Path(tempfile.gettempdir())),
                       check=True).stderr
  by_package = collections.Counter()
  for line in out.splitlines():
    fields = line.removeprefix("import time:").split("|")
    if len(fields) == 3 and fields[0].strip().isdigit():
      by_package[fields[2].strip().split(".")[0]] += int(fields[0]) / 1e6
  top = dict(by_package.most_common(8))
  return {"total_seconds": sum(by_package.values()), "by_package": {
      **top, "other": sum(by_package.values()) - sum(top.values())}}


def spread(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values),
          "max": max(values)}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=SPEEDRUN, type=ba.existing_file)
  parser.add_argument("--dataset", default=None, help="both sides' dataset; "
                      "default: the config's")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--rounds", type=ba.positive_int, default=5,
                      help="rounds of: PyTorch, mnist_jax cold, mnist_jax warm")
  parser.add_argument("--override", action="append", default=[],
                      metavar="FIELD=VALUE", help="a change to --config for "
                      "mnist_jax (repeatable); the record names them")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  ba.check_overrides(parser, [args.config], args.override
                     + ([f"dataset={args.dataset}"] if args.dataset else []))
  # PyTorch's dataset: mnist_jax's.
  args.torch_dataset = args.dataset or config_lib.from_file(args.config).dataset
  # As a user types it from the repository's root, where the children run.
  args.config = os.path.relpath(Path(args.config).resolve(), ROOT)
  args.data_dir = args.data_dir and str(Path(args.data_dir).resolve())
  return args


def main(argv=None):
  args = parse_args(argv)
  runs = {"torch": [], "jax_cold": [], "jax_warm": []}
  phases, imports = {"cold": [], "warm": []}, []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    for r in range(args.rounds):
      runs["torch"].append(run_torch(args))
      # The cold run fills the round's empty cache; the warm run reuses it.
      runs["jax_cold"].append(run_jax(args, tmp / f"cold{r}", tmp / f"cache{r}"))
      runs["jax_warm"].append(run_jax(args, tmp / f"warm{r}", tmp / f"cache{r}"))
      phases["cold"].append(run_phases(args, tmp / f"pcold{r}", tmp / f"pcache{r}"))
      phases["warm"].append(run_phases(args, tmp / f"pwarm{r}", tmp / f"pcache{r}"))
      imports.append(import_times())
      print(f"round {r + 1}/{args.rounds}: " + ", ".join(
          f"{name} {runs[name][-1]['exit_seconds']:.1f} s" for name in runs),
            flush=True)
  medians = {name: {key: spread([run[key] for run in rs]) for key in
                    ("exit_seconds", "final_line_seconds", "seconds_to_first_step",
                     "train_seconds")} for name, rs in runs.items()}
  breakdown = {state: {step: spread([p["seconds"].get(step, 0.0) for p in ps])
                       for step in ps[0]["seconds"]} for state, ps in phases.items()}
  for name, m in medians.items():
    print(f"{name:>9}: {m['exit_seconds']['median']:6.2f} s to exit "
          f"({m['exit_seconds']['min']:.2f}..{m['exit_seconds']['max']:.2f}), "
          f"{m['final_line_seconds']['median']:.2f} s to the final line, "
          f"{m['seconds_to_first_step']['median']:.2f} s to the first step, "
          f"{m['train_seconds']['median']:.2f} s training (medians of {args.rounds})")
  for state, steps in breakdown.items():
    print(f"mnist_jax {state}: " + ", ".join(
        f"{step} {s['median']:.2f}" for step, s in
        sorted(steps.items(), key=lambda kv: -kv[1]["median"])))
  dataset = args.torch_dataset
  record = {
      "benchmark": "user_clock", "dataset": dataset, "rounds": args.rounds,
      "commands": {"jax": "mnist-jax " + " ".join(train_args(args, Path("<tmp>"))),
                   "torch": f"python benchmarks/torch_recipe.py --dataset={dataset}"
                            + (f" --data_dir={args.data_dir}" if args.data_dir else "")},
      "overrides": args.override, "lscpu_model_name": timing.lscpu_model(),
      "machine": timing.machine_info(), "runs": runs, "medians": medians,
      "jax_over_torch_exit_seconds": {
          state: medians[f"jax_{state}"]["exit_seconds"]["median"]
          / medians["torch"]["exit_seconds"]["median"] for state in ("cold", "warm")},
      "phases": phases, "phase_medians": breakdown, "imports": imports}
  timing.write_record(record, f"user-clock-{dataset}", out=args.out,
                      results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  ba.run_main(main)
