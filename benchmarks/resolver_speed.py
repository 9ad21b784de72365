"""Training throughput of two checkouts, alternating: is a change free?

Command (from the repo root; the tree before the change as a git worktree):
  git worktree add /tmp/before 2e2f1ee
  python benchmarks/resolver_speed.py --before=/tmp/before --after=. \\
      --data_dir=../shared/datasets --rounds=6 --out=<record.json>

Each round runs each tree's own benchmarks/run.py (its throughput section:
mnist_jax's own loop, on the devices a user's run gets, `--repeats` timed
windows after a warm-up) in a fresh process with PYTHONPATH at that tree,
the two sides in turn, and the order swapped every round (before, after;
after, before; ...) so that a machine slowing down or speeding up over the
run loads both alike. Written for the plugins change (issue 24): the
built-in models now come through registry.resolve, as a user's own do.

The record holds, per model and side, every round's median images/s, their
median over the rounds and min..max (the side's drift), the commit each
side actually imported (from its run.py record), and the ratio after /
before of the medians, and of each round's pair (the two sides run one
after the other: least drift between them). `within_drift` says whether
each side's median lies inside the other's min..max: then the difference
is not told apart from the machine's own variation.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position


def _tree(text: str) -> Path:
  path = Path(text).resolve()
  if not (path / "benchmarks" / "run.py").is_file():
    raise argparse.ArgumentTypeError(f"{text!r} holds no benchmarks/run.py")
  return path


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--before", required=True, type=_tree,
                      help="the checkout before the change")
  parser.add_argument("--after", default=str(ROOT), type=_tree,
                      help="the checkout after it (default: this one)")
  parser.add_argument("--rounds", type=ba.positive_int, default=6)
  parser.add_argument("--models", default="speedrun,cnn",
                      type=ba.config_values("model"))
  parser.add_argument("--batch_size", type=ba.positive_int, default=256)
  parser.add_argument("--window_images", type=ba.positive_int, default=None,
                      help="run.py's (default: its own, 8192 on CPU)")
  parser.add_argument("--repeats", type=ba.positive_int, default=3,
                      help="timed windows per side per round")
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--note", default="")
  parser.add_argument("--out", required=True, help="JSON path of the record")
  return parser.parse_args(argv)


def _side(args, tree: Path, out: Path) -> dict:
  """One run of `tree`'s benchmarks/run.py: its record."""
  command = [sys.executable, str(tree / "benchmarks" / "run.py"),
             "--sections=throughput", f"--models={args.models}",
             f"--batch_sizes={args.batch_size}", f"--repeats={args.repeats}",
             f"--dataset={args.dataset}", f"--out={out}", "--no_tables"]
  if args.window_images:
    command.append(f"--window_images={args.window_images}")
  if args.data_dir:
    command.append(f"--data_dir={Path(args.data_dir).expanduser().resolve()}")
  env = {**os.environ, "PYTHONPATH": str(tree)}
  env.pop("XLA_FLAGS", None)
  ba.run_child(command, env=env, cwd=tree)
  return json.loads(out.read_text())


def _spread(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values),
          "max": max(values), "rounds": values}


def _load_average() -> list[float] | None:
  try:
    return list(os.getloadavg())
  except OSError:
    return None


def measure(args) -> dict:
  sides = {"before": args.before, "after": args.after}
  rates = {side: {} for side in sides}  # side -> model -> [images/s per round]
  commits, order, loads = {}, [], []
  with tempfile.TemporaryDirectory() as tmp:
    for round_ in range(args.rounds):
      turn = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
      order.append(turn)
      for side in turn:
        loads.append({"round": round_, "side": side, "load_average": _load_average()})
        record = _side(args, sides[side], Path(tmp) / f"{side}-{round_}.json")
        commits.setdefault(side, set()).add(
            (record.get("machine") or {}).get("git_commit"))
        for row in record["throughput"]:
          rate = row["images_per_sec"]["median"]
          rates[side].setdefault(row["model"], []).append(rate)
          print(f"round {round_ + 1}/{args.rounds} {side:>6} {row['model']:>9}: "
                f"{rate:,.0f} images/s", flush=True)
      sys.stdout.flush()
  models = {}
  for model in rates["after"]:
    before, after = _spread(rates["before"][model]), _spread(rates["after"][model])
    models[model] = {
        "before": before, "after": after,
        "ratio_after_over_before": after["median"] / before["median"],
        # Each round's two sides ran one after the other: their ratio sees
        # the least drift. Its median and spread over the rounds.
        "paired_ratios": _spread([a / b for a, b in zip(after["rounds"],
                                                        before["rounds"])]),
        "within_drift": (before["min"] <= after["median"] <= before["max"]
                         and after["min"] <= before["median"] <= after["max"]),
    }
  return {"models": models, "order": order, "load_averages": loads,
          "commits": {side: sorted(c for c in found if c)
                      for side, found in commits.items()}}


def main(argv=None):
  args = parse_args(argv)
  found = measure(args)
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  from mnist_jax import timing  # pylint: disable=g-import-not-at-top
  machine = timing.machine_info()  # benchmarks/tables.py orders records by its date.
  record = {
      "benchmark": "resolver_speed", "machine": machine,
      "command": " ".join([Path(sys.executable).name, *sys.argv]),
      "date": machine["date"],
      "hardware": {"cpu_model": timing.lscpu_model() or platform.processor() or None,
                   "cores": len(os.sched_getaffinity(0))},
      "software": {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "flax",
                                                               "optax")}
                  | {"python": platform.python_version()},
      "trees": {"before": str(args.before), "after": str(args.after)},
      "models": args.models, "batch_size": args.batch_size,
      "repeats_per_side": args.repeats, "rounds": args.rounds,
      "dataset": args.dataset, "note": args.note, **found,
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
  for model, row in found["models"].items():
    b, a = row["before"], row["after"]
    print(f"{model:>9}: before {b['median']:,.0f} ({b['min']:,.0f}..{b['max']:,.0f}), "
          f"after {a['median']:,.0f} ({a['min']:,.0f}..{a['max']:,.0f}) images/s; "
          f"after/before {row['ratio_after_over_before']:.3f}, paired "
          f"{row['paired_ratios']['median']:.3f} ({row['paired_ratios']['min']:.3f}.."
          f"{row['paired_ratios']['max']:.3f})"
          f"{' (within drift)' if row['within_drift'] else ''}")
  print(f"record: {args.out}")


if __name__ == "__main__":
  ba.run_main(main)
