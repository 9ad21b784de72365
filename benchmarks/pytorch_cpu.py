"""Time to accuracy on CPU: the published PyTorch recipe against mnist_jax's
configs/mnist_speedrun.py, in one process, alternating, seed by seed.

The peer (tuomaso/train_mnist_fast, `train_mnist_fast.py`) as published:
conv 24 5x5, max-pool, ReLU, conv 32 3x3, max-pool, ReLU, dense 256, ReLU,
dense 10; PyTorch's default initialisation (weights and biases uniform in
+-1/sqrt(fan_in)); inputs standardised with MNIST's mean 0.1307 and std
0.3081; Adam(lr=1e-2, betas=(0.7, 0.9)); OneCycleLR(max_lr=1e-2,
total_steps=ceil(60000 / 256), cycle_momentum=False), stepped after every
batch; batch 256 including the last partial batch (96 images); one epoch
over the training set in one shuffled order; eager PyTorch, no
torch.compile. Only the data order's source differs: the recipe shuffles
once while preparing its files, here each run draws torch.randperm from its
seed.

mnist_jax: configs/mnist_speedrun.py as shipped, with `seed` set per run,
trained by the same pieces as training.train_and_evaluate (assembly.assemble's
run, its chunks compiled ahead of time, loop.run_epoch over
feed.epoch_permutation, the compiled evaluation), less its files,
checkpoints and progress line.

How it is timed: both frameworks train on the same uint8 arrays, in this one
process, with the same number of threads (`torch.set_num_threads`; XLA sizes
its pool from the CPUs the process may run on, so the process is pinned to
the first `--threads` of them before JAX starts). Seeds 0..N-1: for each
seed, PyTorch trains and evaluates, then mnist_jax does, so that a drift in
the machine's speed affects both alike. A run's training time runs
(time.perf_counter) from its first step to the end of its last (PyTorch on
CPU is synchronous; JAX's epochs are waited for). Outside the clock:
loading, model construction, initialisation, JAX's ahead-of-time
compilation (reported apart, as airbench reports it) and `--warmup_steps`
of each framework on throwaway copies, and evaluation.

Time to 99%: the recipe evaluates once, after its last epoch, so a run's
time to 99% is its training time when its test accuracy is at least
`--target`, and the run did not reach it otherwise. Reported per framework:
training seconds (median, min..max), images/s, test accuracy (mean, std,
min, max and every seed), how many runs fell below the target, and the ratio
of mnist_jax's median training seconds to PyTorch's.

`--members=N` (10 by default; 0: off) goes further: after the alternating
runs, mnist_jax trains seeds 0..N-1 at once, in one run of
`--config.num_seeds=N`, timed against the sum of N sequential PyTorch runs
(the first N of the alternating ones). `--skip_compare` measures only that.

Command (CPU, data in ../shared/datasets; `pip install -e '.[benchmark]'`):
  python benchmarks/pytorch_cpu.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/pytorch-recipe-vs-speedrun-<N>dev.json.
"""

import argparse
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position


def _available_cpus() -> list[int]:
  """The CPUs this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--seeds", type=int, default=10,
                      help="runs per framework, seeds 0..N-1, alternating")
  parser.add_argument("--members", type=int, default=10,
                      help="mnist_jax's num_seeds=N run against N sequential "
                      "PyTorch runs; 0: off")
  parser.add_argument("--target", type=float, default=0.99,
                      help="test accuracy whose time is reported")
  parser.add_argument("--threads", type=int, default=len(_available_cpus()),
                      help="threads of both frameworks; default: every CPU "
                      "this process may run on")
  parser.add_argument("--warmup_steps", type=int, default=5,
                      help="untimed steps of each framework before the runs")
  parser.add_argument("--jax_devices", type=int, default=None,
                      help="virtual XLA CPU devices; default: mnist_jax's own "
                      "choice for the config (runtime.auto_cpu_devices)")
  parser.add_argument("--override", action="append", default=[],
                      metavar="FIELD=VALUE", help="a change to "
                      "configs/mnist_speedrun.py, e.g. batch_size=128 "
                      "(repeatable); the record names them")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  for name in ("seeds", "threads"):
    if getattr(args, name) <= 0:
      parser.error(f"--{name} must be positive")
  if args.warmup_steps < 0 or args.members < 0:
    parser.error("--warmup_steps and --members must be 0 or more")
  if args.members > args.seeds:
    parser.error(f"--members={args.members} needs as many PyTorch runs: "
                 f"raise --seeds to {args.members}")
  if args.jax_devices is not None and args.jax_devices <= 0:
    parser.error("--jax_devices must be positive")
  if not 0 < args.target <= 1:
    parser.error(f"--target={args.target}: a test accuracy, in (0, 1]")
  if args.threads > len(_available_cpus()):
    parser.error(f"--threads={args.threads} exceeds the "
                 f"{len(_available_cpus())} CPUs this process may run on")
  return args


def configure_process(args: argparse.Namespace):
  """What must happen before JAX starts: CPU backend, devices, thread count.

  XLA:CPU sizes its thread pool from the CPUs the process may run on, so the
  process (and every thread it starts later, torch's included) is pinned to
  the first `--threads` of them.
  """
  os.environ["JAX_PLATFORMS"] = "cpu"
  if (args.jax_devices is None and "xla_force_host_platform_device_count"
      not in os.environ.get("XLA_FLAGS", "")):
    # mnist_jax's own default on this CPU (importing it starts no backend).
    from mnist_jax import registry, runtime  # pylint: disable=g-import-not-at-top
    config = speedrun_config(0, args.override)
    args.jax_devices = runtime.auto_cpu_devices(
        config.batch_size, args.threads,
        dense_only=registry.resolve("model", config.model).dense_only)
  if args.jax_devices is not None:
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "",
                   os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = " ".join(
        flags.split() +
        [f"--xla_force_host_platform_device_count={args.jax_devices}"])
  cpus = _available_cpus()
  if args.threads < len(cpus):
    os.sched_setaffinity(0, cpus[:args.threads])


def speedrun_config(seed: int, overrides: list[str] = (), num_seeds: int = 1):
  """configs/mnist_speedrun.py as shipped, at `seed`, with `overrides`
  ("field=value", as `mnist-jax compare --override` takes them)."""
  # pylint: disable=g-import-not-at-top
  from configs import mnist_speedrun
  from mnist_jax import config as config_lib
  config = mnist_speedrun.get_config()
  config_lib.apply_overrides(config, overrides)
  config.seed, config.num_seeds = seed, num_seeds
  config_lib.validate(config)  # A bad --override: one line, with the fix.
  return config


if __name__ == "__main__":
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    configure_process(parse_args())
  except UserError as e:  # A bad --override.
    sys.exit(f"error: {e}")

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

try:
  import torch
except ImportError:
  sys.exit("error: PyTorch is not installed; pip install -e '.[benchmark]'")

from mnist_jax import assembly, data, feed, loop, models, runtime, sharding, timing
from mnist_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position

# PyTorch: the published recipe (torch_recipe.py, which imports no JAX).
# pylint: disable-next=g-import-not-at-top,wrong-import-position,unused-import
from torch_recipe import (RECIPE, evaluate, make_torch_model, make_torch_optimizer,
                          steps_per_epoch, tensors, torch_normalize, train_epoch)


def prepare_torch(dataset: data.Dataset,
                  warmup_steps: int) -> tuple[Callable[[int], dict], dict]:
  """Returns (run, info): `run(seed)` trains a fresh model and evaluates it."""
  # Standardised once, outside the clock, as the recipe's files are.
  train_x, train_y, test_x, test_y = tensors(dataset)
  num_steps = steps_per_epoch(len(train_y))

  def run(seed: int) -> dict:
    model = make_torch_model(dataset.num_classes, seed, dataset.image_shape)
    optimizer, scheduler = make_torch_optimizer(model, num_steps * RECIPE["epochs"])
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))

    def train_all():
      for _ in range(RECIPE["epochs"]):
        train_epoch(model, optimizer, scheduler, train_x, train_y, order)
    _, train_seconds = timing.timed(train_all)
    accuracy, eval_seconds = timing.timed(lambda: evaluate(model, test_x, test_y))
    return {"seed": seed, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "test_accuracy": accuracy}

  if warmup_steps:  # First-call allocations, oneDNN primitive creation.
    model = make_torch_model(dataset.num_classes, 0, dataset.image_shape)
    optimizer, scheduler = make_torch_optimizer(model, num_steps)
    train_epoch(model, optimizer, scheduler, train_x, train_y,
                torch.arange(len(train_y)), max_steps=warmup_steps)
  num_params = sum(p.numel() for p in make_torch_model(
      dataset.num_classes, 0, dataset.image_shape).parameters())
  info = {"num_params": num_params, "steps_per_epoch": num_steps,
          "images_per_epoch": len(train_y), "recipe": RECIPE,
          "version": torch.__version__, "num_threads": torch.get_num_threads(),
          "mkldnn": torch.backends.mkldnn.is_available()}
  return run, info


# mnist_jax: configs/mnist_speedrun.py as shipped.


def prepare_jax(dataset: data.Dataset, config,
                warmup_steps: int) -> tuple[Callable[[int], dict], dict]:
  """Returns (run, info): `run(seed)` trains fresh state from `seed` (all of
  `config.num_seeds` members at once) as train_and_evaluate does, and
  evaluates it. Each seed's run is assembled as train_and_evaluate's is
  (assembly.assemble); the first's data and compiled calls serve all."""
  on = runtime.Runtime(sharding.make_mesh(), jax.default_backend(), True)

  def assembled(seed: int, place: bool = False) -> assembly.Run:
    seeded = config.copy_and_resolve_references()
    seeded.seed = seed
    return assembly.assemble(seeded, dataset, on, place=place)

  run0 = assembled(0, place=True)
  plan, state0, key0 = run0.plan, run0.state, run0.data_key
  device_data = run0.device_data
  permutation = lambda key, epoch: feed.epoch_permutation(
      key, epoch, plan.num_train, plan.steps_per_epoch, plan.batch_size)

  def compile_all():
    compiled = run0.compile().compiled
    return [compiled.chunks[n] for n in plan.calls], compiled.evaluate

  (calls, evaluate), compile_seconds = timing.timed(compile_all)
  max_in_flight = loop.max_calls_in_flight(plan.backend, plan.num_devices)

  def run(seed: int) -> dict:
    fresh = assembled(seed)
    state, data_key = fresh.state, fresh.data_key
    jax.block_until_ready((state, data_key))

    def train_all():
      nonlocal state
      for epoch in range(1, config.num_epochs + 1):
        state, totals = loop.run_epoch(calls, state, device_data,
                                       permutation(data_key, epoch), max_in_flight)
        totals.steps.block_until_ready()  # As train_and_evaluate, each epoch.
      return jax.block_until_ready(state)

    _, train_seconds = timing.timed(train_all)
    (totals, _), eval_seconds = timing.timed(
        lambda: jax.block_until_ready(evaluate(state, device_data)))
    accuracy = np.asarray(totals.correct) / np.asarray(totals.count)
    return {"seed": seed, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "test_accuracy": (float(accuracy) if accuracy.ndim == 0
                              else [float(a) for a in accuracy])}

  if warmup_steps:
    warmup_calls, steps = [], 0
    for call in calls:
      if steps >= warmup_steps:
        break
      warmup_calls.append(call)
      steps += call.num_steps
    state, _ = loop.run_epoch(warmup_calls, jax.tree.map(jnp.copy, state0),
                              device_data, permutation(key0, 0), max_in_flight)
    jax.block_until_ready(state)
  info = {"num_params": models.num_params(state0.params) // config.num_seeds,
          "compile_seconds": compile_seconds,
          "steps_per_epoch": plan.steps_per_epoch,
          "images_per_epoch": plan.steps_per_epoch * plan.batch_size,
          "steps_per_call": plan.steps_per_call,
          "device_count": plan.num_devices, "members": config.num_seeds,
          "config": config.to_dict()}
  return run, info


# The comparison.


def summarize(runs: list[dict], epochs: int, images_per_epoch: int,
              target: float) -> dict:
  """Training seconds, images/s, accuracy spread and time to `target`."""
  seconds = [r["train_seconds"] for r in runs]
  accuracies = [r["test_accuracy"] for r in runs]
  reached = [r["train_seconds"] for r in runs if r["test_accuracy"] >= target]
  return {
      "train_seconds": {"median": statistics.median(seconds), "min": min(seconds),
                        "max": max(seconds), "mean": statistics.fmean(seconds)},
      "images_per_sec": timing.rate_stats(epochs * images_per_epoch, seconds),
      "test_accuracy": timing.spread(accuracies),
      "below_target": sum(a < target for a in accuracies),
      "time_to_target": (timing.spread(reached) if reached else None),
      "runs": runs,
  }


def compare(torch_summary: dict, jax_summary: dict) -> dict:
  """jax seconds / torch seconds (medians), and whether the ranges are apart."""
  t, j = torch_summary["train_seconds"], jax_summary["train_seconds"]
  return {"jax_over_torch_seconds": j["median"] / t["median"],
          "differs": not timing.overlap(j, t)}


def describe(name: str, summary: dict, target: float) -> str:
  s, a = summary["train_seconds"], summary["test_accuracy"]
  n = len(summary["runs"])
  return (f"{name:>10}: {s['median']:6.2f} s median training (min {s['min']:.2f}, "
          f"max {s['max']:.2f}), {summary['images_per_sec']['median']:,.0f} img/s; "
          f"test accuracy {100 * a['mean']:.2f}% mean (std {100 * a['std']:.2f}, "
          f"{100 * a['min']:.2f}..{100 * a['max']:.2f}%), "
          f"{summary['below_target']} of {n} below {100 * target:g}%")


def main(args: argparse.Namespace):
  torch.set_num_threads(args.threads)
  if jax.default_backend() != "cpu":
    sys.exit(f"error: JAX runs on {jax.default_backend()}, not the CPU")
  dataset = data.load(args.dataset, args.data_dir)
  config = speedrun_config(0, args.override)
  jax_run, jax_info = prepare_jax(dataset, config, args.warmup_steps)
  torch_run, torch_info = prepare_torch(dataset, args.warmup_steps)
  if torch_info["num_params"] != jax_info["num_params"]:
    sys.exit(f"error: parameter counts differ: torch {torch_info['num_params']}, "
             f"jax {jax_info['num_params']}")
  print(f"{dataset.name}: speedrun model ({jax_info['num_params']:,} parameters); "
        f"PyTorch's recipe: batch {RECIPE['batch_size']}, {RECIPE['epochs']} "
        f"epoch(s) of {torch_info['steps_per_epoch']} steps; mnist_jax: batch "
        f"{config.batch_size}, {config.num_epochs} epoch(s) of "
        f"{jax_info['steps_per_epoch']} steps on {jax_info['device_count']} "
        f"device(s), compiled in {jax_info['compile_seconds']:.2f} s; "
        f"{args.threads} thread(s)", flush=True)

  runs = {"torch": [], "jax": []}
  for seed in range(args.seeds):
    for name, run in (("torch", torch_run), ("jax", jax_run)):
      runs[name].append(run(seed))
      r = runs[name][-1]
      print(f"  seed {seed} {name:>5}: {r['train_seconds']:.2f} s, test accuracy "
            f"{100 * r['test_accuracy']:.2f}%", flush=True)
  summaries = {
      "torch": summarize(runs["torch"], RECIPE["epochs"],
                         torch_info["images_per_epoch"], args.target),
      "jax": summarize(runs["jax"], config.num_epochs,
                       jax_info["images_per_epoch"], args.target)}
  comparison = compare(summaries["torch"], summaries["jax"])
  print(describe("pytorch", summaries["torch"], args.target))
  print(describe("mnist_jax", summaries["jax"], args.target))
  verdict = ("the ranges are apart" if comparison["differs"]
             else "no measurable difference: the ranges overlap")
  print(f"mnist_jax / PyTorch training seconds: "
        f"{comparison['jax_over_torch_seconds']:.2f} ({verdict})", flush=True)

  members = None
  if args.members:
    members_config = speedrun_config(0, args.override, num_seeds=args.members)
    members_run, members_info = prepare_jax(dataset, members_config,
                                            args.warmup_steps)
    result = members_run(0)
    sequential = sum(r["train_seconds"] for r in runs["torch"][:args.members])
    accuracies = result["test_accuracy"]
    members = {
        "members": args.members, "member_loop": members_config.member_loop,
        "compile_seconds": members_info["compile_seconds"],
        "train_seconds": result["train_seconds"],
        "torch_sequential_train_seconds": sequential,
        "jax_over_torch_seconds": result["train_seconds"] / sequential,
        "test_accuracy": timing.spread(accuracies),
        "below_target": sum(a < args.target for a in accuracies),
        "test_accuracies": accuracies}
    print(f"{args.members} seeds in one mnist_jax run: {result['train_seconds']:.2f} s "
          f"against {sequential:.2f} s for {args.members} sequential PyTorch runs "
          f"({members['jax_over_torch_seconds']:.2f}); test accuracy "
          f"{100 * members['test_accuracy']['mean']:.2f}% mean, "
          f"{members['below_target']} below {100 * args.target:g}%")

  machine = timing.machine_info()
  record = {
      "benchmark": "pytorch_recipe_vs_speedrun", "dataset": dataset.name,
      "seeds": args.seeds, "target": args.target, "threads": args.threads,
      "warmup_steps": args.warmup_steps, "cpu_affinity": _available_cpus(),
      "overrides": args.override, "machine": machine,
      "torch": torch_info, "jax": jax_info,
      "results": summaries, "members": members, **comparison,
  }
  timing.write_record(record, f"pytorch-recipe-vs-speedrun-{machine['device_count']}dev",
                      out=args.out, results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  try:
    main(parse_args())
  except UserError as e:  # E.g. a batch size that the devices do not divide.
    sys.exit(f"error: {e}")
