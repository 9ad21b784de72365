"""compare before and after seeds-as-members, side by side in one run.

`mnist-jax compare A.py B.py --seeds=K --seeds_as=members` trains each
config's K seeds as the members of one compiled run (after);
`--seeds_as=separate` trains them as K runs one after another (before, the
old way). This script runs both commands as fresh
processes, alternating within the one invocation (round r runs before then
after for even r, after then before for odd r), each in a new workdir and
with an empty persistent compilation cache (as a comparison of new configs
meets it), and records per side: the wall time of the command from spawn to
exit, each config's training seconds (the runs' summed `train_seconds`) and
every seed's reported test accuracy, which must be the same on both sides
(members compute what separate runs do). Ratios are after over before.

Command (from the repo root):
  python benchmarks/compare_members.py --data_dir=../shared/datasets \
      [--seeds=5] [--rounds=2] [--override=num_epochs=1] [--note="..."]
Tiny mode (seconds): --configs=configs/mnist160.py --seeds=2 --rounds=1
  --override=num_epochs=1.
Writes benchmarks/results/<backend>-<device kind>/compare-members-<configs>.json.
"""

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_args as ba
from mnist_jax import compare, timing
# pylint: enable=g-import-not-at-top,wrong-import-position

SIDES = {"before": ["--seeds_as=separate"], "after": ["--seeds_as=members"]}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="configs/mnist.py,configs/mnist_speedrun.py",
                      type=ba.items, help="comma-separated config files")
  parser.add_argument("--seeds", type=ba.positive_int, default=5)
  parser.add_argument("--rounds", type=ba.positive_int, default=2,
                      help="rounds of both sides, the order alternating")
  parser.add_argument("--override", action="append", default=[],
                      metavar="FIELD=VALUE", help="compare's --override (repeatable)")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--note", default="", help="conditions a reader must know, "
                      "e.g. that other jobs shared the machine")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  for path in args.configs:
    if not Path(path).is_file():
      parser.error(f"argument --configs: {path} does not exist")
  if args.data_dir:
    args.override.append(f"data_dir={Path(args.data_dir).resolve()}")
  ba.check_overrides(parser, args.configs, args.override)
  return args


def command(args, side: str, workdir: Path) -> list[str]:
  return ([sys.executable, "-m", "mnist_jax", "compare", *args.configs,
           f"--seeds={args.seeds}", *(f"--override={o}" for o in args.override),
           f"--workdir={workdir}", *SIDES[side]])


def run_side(args, side: str, tmp: Path, round_: int) -> dict:
  """One compare command, timed; what its comparison .json says."""
  workdir, cache = tmp / f"{side}{round_}", tmp / f"cache-{side}{round_}"
  env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  ba.run_child(command(args, side, workdir), echo=False, cwd=ROOT, env=env,
               stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  names = [Path(p).stem for p in args.configs]
  record = json.loads((workdir / f"{compare.comparison_stem(names)}.json").read_text())
  configs = {}
  for name, result in record["configs"].items():
    runs = result["runs"]
    configs[name] = {
        "trained_as": result["trained_as"],
        # A members run's time is each seed's run_train_seconds; once.
        "train_seconds": (runs[0]["run_train_seconds"] if "run_train_seconds" in runs[0]
                          else sum(r["train_seconds"] for r in runs)),
        "reported_test_accuracy": [r["reported_test_accuracy"] for r in runs],
        "mean": result["test_accuracy"]["mean"]}
  return {"side": side, "round": round_, "wall_seconds": wall,
          "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
          "configs": configs}


def summarise(runs: list[dict]) -> dict:
  """Per round, after over before (wall time, each config's training
  time); their medians; and whether every seed's accuracy agreed."""
  rounds = sorted({r["round"] for r in runs})
  by = {(r["round"], r["side"]): r for r in runs}
  ratios = []
  for k in rounds:
    before, after = by[(k, "before")], by[(k, "after")]
    ratios.append({
        "round": k, "wall_seconds": after["wall_seconds"] / before["wall_seconds"],
        **{f"train_seconds_{name}": after["configs"][name]["train_seconds"]
           / before["configs"][name]["train_seconds"] for name in before["configs"]}})
  spread = {}
  for name in runs[0]["configs"]:
    seen = [r["configs"][name]["reported_test_accuracy"] for r in runs]
    spread[name] = max(abs(a - b) for other in seen
                       for a, b in zip(other, seen[0], strict=True))
  return {"after_over_before": ratios,
          "median_after_over_before": {key: statistics.median(r[key] for r in ratios)
                                       for key in ratios[0] if key != "round"},
          "max_abs_accuracy_difference": spread,
          "same_accuracies": all(v == 0 for v in spread.values())}


def main(argv=None):
  args = parse_args(argv)
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for k in range(args.rounds):
      for side in (("before", "after") if k % 2 == 0 else ("after", "before")):
        runs.append(run_side(args, side, Path(tmp), k))
        print(f"round {k + 1}/{args.rounds} {side}: {runs[-1]['wall_seconds']:.1f} s, "
              + ", ".join(f"{n} {c['train_seconds']:.1f} s training, mean "
                          f"{100 * c['mean']:.2f}%" for n, c in runs[-1]["configs"].items()),
              flush=True)
  summary = summarise(runs)
  print(json.dumps(summary, indent=1))
  record = {
      "benchmark": "compare_members",
      "command": "python benchmarks/compare_members.py " + shlex.join(
          argv if argv is not None else sys.argv[1:]),
      "commands": {side: "mnist-jax compare " + " ".join(
          command(args, side, Path("<tmp>"))[4:]) for side in SIDES},
      "configs": args.configs, "seeds": args.seeds, "rounds": args.rounds,
      "overrides": args.override, "lscpu_model_name": timing.lscpu_model(),
      "machine": timing.machine_info(), "note": args.note,
      "compare_py_sha256": hashlib.sha256(
          (ROOT / "mnist_jax" / "compare.py").read_bytes()).hexdigest(),
      "conditions": "each side a fresh process, a new workdir and an empty "
                    "compilation cache; sides alternate within each round",
      "runs": runs, **summary}
  names = "-".join(Path(p).stem for p in args.configs)
  timing.write_record(record, f"compare-members-{names}", out=args.out,
                      results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  ba.run_main(main)
