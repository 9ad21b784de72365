"""The benchmark harness: every figure for this machine, one record, the tables.

Command (from the repo root, data in ../shared/datasets):
  python benchmarks/run.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/harness-<N>dev-<date>.json
and regenerates the tables in benchmarks/README.md from every record there
(`python benchmarks/tables.py` does only the latter).

Sections (`--sections`, run in the order given; by default all, but memory
on CPU):
  throughput        training images/s of each model at each batch size, as
                    mnist_jax runs by default (on CPU: each batch size in a
                    child process on its automatic number of virtual devices,
                    runtime.auto_cpu_devices): the median of `--repeats`
                    timed windows after a warm-up window, with the min..max
                    spread; the variants take turns window by window. Each
                    window uses mnist_jax's own loop and its backend's default
                    steps per call. Also the compile times of the train step
                    and of evaluation.
  strategies        the execution strategies of benchmarks/strategies.py
                    side by side (host-fed loop, one step per call, scan
                    chunks, the whole window in one call).
  time_to_accuracy  the speedrun configs, `--seeds` seeds each, each seed
                    `python -m mnist_jax.main` in a fresh process as a user
                    runs it: training seconds until the end-of-epoch test
                    accuracy first reaches the target (compilation and
                    evaluation excluded; compile time reported apart), mean
                    and spread over the seeds that reached it, and the
                    fraction that did.
  scaling           throughput over 1, 2 and 8 devices: on CPU, virtual
                    devices (`--xla_force_host_platform_device_count`), one
                    child process per count; elsewhere, the devices present.
  members           N models trained at once (config.num_seeds=N, one
                    program) against one, with each `--member_loops` way of
                    running them (config.member_loop: vmap, unroll):
                    images/s summed over the members, so the ratio to N=1 is
                    the speed-up over N sequential runs (1.0: no gain). On
                    CPU in a child process on mnist_jax's default devices.
  memory            the device's peak memory (`memory_stats()`'s
                    peak_bytes_in_use) while training one window of each
                    `--memory_models` model at each batch size, with XLA's
                    compile-time figures of the training call beside it
                    (`memory_analysis()`). The peak cannot be reset, so each
                    model runs in a fresh child process, batch sizes
                    ascending: the peak after batch b covers the smaller
                    ones too, and is b's own when memory grows with the
                    batch (it does: the parameters and data are fixed). The
                    CPU backend reports no such figure: its rows say so
                    (there the section runs only when asked for).

All timings wait for the device (`block_until_ready`) and exclude loading the
data and compiling. A difference within the min..max spreads is reported as
no difference.

`--budgets=section=seconds,...` bounds sections in time (benchmarks/
device_suite.sh uses it on a rented GPU): such a section starts no more work
(a variant, a seed, a model) once what it has done so far projects past its
budget, and lists what it left out under the record's "skipped". The record
is rewritten after every section, so a run stopped from outside keeps the
sections it finished.
"""

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("throughput", "strategies", "time_to_accuracy", "scaling", "members",
            "memory")
# What memory_stats() gives where the backend keeps no such count.
NOT_REPORTED = "not reported by the {} backend"
# (config file, target test accuracy) of each speedrun.
SPEEDRUNS = {"mnist_speedrun": 0.99, "fashion_speedrun": 0.925}


sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position

_names = ba.items


def _ints(text: str) -> list[int]:
  return [int(x) for x in ba.items(text)]


def _budgets(text: str) -> str:
  """`--budgets`: section=seconds,... (checked; the text is kept)."""
  for item in _names(text):
    section, _, seconds = item.partition("=")
    try:
      ok = section in SECTIONS and float(seconds) > 0
    except ValueError:
      ok = False
    if not ok:
      raise argparse.ArgumentTypeError(
          f"item {item!r}: expected section=seconds, a positive number of "
          f"seconds for a section of {', '.join(SECTIONS)}")
  return text


def budgets_of(text: str) -> dict[str, float]:
  """{section: seconds} of a checked `--budgets`."""
  return {item.partition("=")[0]: float(item.partition("=")[2])
          for item in _names(text)}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  model_names = ba.config_values("model")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--sections", default=None, type=ba.names(SECTIONS),
                      help="default: all, but memory on CPU (no peak to report)")
  parser.add_argument("--models", default="mlp,cnn,speedrun", type=model_names,
                      help="throughput models, in the order they are measured")
  parser.add_argument("--batch_sizes", default=None, type=ba.positive_ints,
                      help="default 64,128,256,512 on CPU, 128,512,2048 elsewhere")
  parser.add_argument("--dtypes", default=None, type=ba.config_values("dtype"),
                      help="computation dtypes of the throughput section; "
                      "default float32 on CPU, float32,bfloat16 elsewhere")
  parser.add_argument("--window_images", type=ba.positive_int, default=None,
                      help="images per timed window; default 8192 on CPU, "
                      "an epoch elsewhere")
  parser.add_argument("--repeats", type=ba.positive_int, default=5)
  parser.add_argument("--strategies_model", default="cnn", type=model_names)
  parser.add_argument("--strategies_batch_size", type=ba.positive_int, default=128)
  parser.add_argument("--strategies_window_images", type=ba.positive_int, default=2048,
                      help="smaller than --window_images: on CPU the scanned "
                      "strategies run at a tenth of the speed")
  parser.add_argument("--speedruns", default=",".join(SPEEDRUNS),
                      type=ba.names(SPEEDRUNS))
  parser.add_argument("--seeds", type=ba.positive_int, default=5)
  parser.add_argument("--speedruns_in_process", action="store_true",
                      help="train each seed in this process instead of a fresh "
                      "`python -m mnist_jax.main` (compilation is outside the "
                      "clock either way; this skips each seed's start-up)")
  parser.add_argument("--override", action="append", default=[],
                      help="field=value set in each speedrun config (e.g. for "
                      "a quick check: num_epochs=1)")
  parser.add_argument("--device_counts", default="1,2,8", type=ba.positive_ints)
  parser.add_argument("--scaling_models", default="speedrun,cnn", type=model_names)
  parser.add_argument("--scaling_batch_size", type=ba.positive_int, default=256)
  parser.add_argument("--members", default="1", type=ba.positive_ints,
                      help="members (config.num_seeds) of each throughput row")
  parser.add_argument("--members_counts", default="1,2,4,8", type=ba.positive_ints,
                      help="the members section's counts")
  parser.add_argument("--members_models", default="speedrun,cnn", type=model_names)
  parser.add_argument("--member_loops", default="vmap,unroll",
                      type=ba.config_values("member_loop"),
                      help="config.member_loop values of the members section")
  parser.add_argument("--members_batch_size", type=ba.positive_int, default=128)
  parser.add_argument("--memory_models", default="mlp,cnn,speedrun", type=model_names)
  parser.add_argument("--memory_batch_sizes", default=None, type=ba.positive_ints,
                      help="default: the throughput batch sizes")
  parser.add_argument("--memory_in_process", action="store_true",
                      help="internal: measure the memory section in this process")
  parser.add_argument("--budgets", default="", type=_budgets,
                      help="section=seconds,...: sections that stop starting new "
                      "work once it projects past their budget")
  parser.add_argument("--dataset", default="mnist",
                      help="dataset of the throughput, strategies and scaling sections")
  parser.add_argument("--devices", type=ba.positive_int, default=None,
                      help="CPU only: run on this many virtual CPU devices")
  parser.add_argument("--out", default=None, help="JSON path of the record")
  parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"),
                      help="where records go, in <backend>-<device kind>/, "
                      "without --out")
  parser.add_argument("--git_commit", default=None,
                      help="the commit measured, where the checkout has no .git "
                      "(a copy of the working tree on a rented machine)")
  parser.add_argument("--no_tables", action="store_true",
                      help="do not regenerate benchmarks/README.md")
  args = parser.parse_args(argv)
  # The speedruns' configs take the overrides (time_to_accuracy applies them).
  ba.check_overrides(parser, [ROOT / "configs" / f"{name}.py"
                              for name in _names(args.speedruns)], args.override)
  return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices:
  # Must precede the first import of jax.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.devices}")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

import strategies  # pylint: disable=g-import-not-at-top,wrong-import-position
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import assembly  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import data, feed, loop, outputs, runtime, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import config as config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import registry  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import steps, timing, training  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top,wrong-import-position


class Budget:
  """The seconds a section may take, counted from its creation; None: no limit.

  Work comes in items (a variant, a seed, a model); a section asks `fits`
  before each item but the first, with the item's expected cost, and lists
  what it leaves out with `skip`.
  """

  def __init__(self, seconds: float | None):
    self.seconds, self.started, self.skipped = seconds, time.perf_counter(), []

  def elapsed(self) -> float:
    return time.perf_counter() - self.started

  def fits(self, next_item: float, still_to_come: float = 0.0) -> bool:
    """Whether an item costing `next_item`, then `still_to_come` seconds of
    work already committed to, end within the budget."""
    return (self.seconds is None
            or self.elapsed() + next_item + still_to_come <= self.seconds)

  def skip(self, what: str):
    self.skipped.append(what)
    print(f"  skipped (over the {self.seconds:.0f} s budget): {what}", flush=True)


@dataclasses.dataclass
class Trainer:
  run_window: Callable[[], object]  # Trains one window; returns its Totals.
  compile_train_seconds: float
  compile_eval_seconds: float
  steps_per_call: int
  compiled_chunk: object  # The compiled training call (memory_analysis()).


def _trainer(model_name: str, batch: int, window_steps: int,
             dataset: data.Dataset, device_data, mesh, dtype: str = "float32",
             members: int = 1, member_loop: str = "auto") -> Trainer:
  """A window of mnist_jax's own training loop, compiled."""
  config = default.get_config()
  config.model, config.batch_size, config.dtype = model_name, batch, dtype
  config.num_seeds, config.member_loop = members, member_loop
  config_lib.validate(config)  # E.g. an unknown --models name, with the fix.
  backend = jax.default_backend()
  # As a training run wires it, on the data placed once for every variant;
  # the window's calls are compiled here.
  run = assembly.assemble(config, dataset, runtime.Runtime(mesh, backend, True),
                          place=False)
  graphs, recipe, tx, state = run.built.graphs, run.built.recipe, run.built.tx, run.state
  steps_per_call = loop.default_steps_per_call(backend, window_steps)
  perm = feed.epoch_permutation(run.data_key, 0, len(dataset.train_labels),
                                window_steps, batch)
  chunk, train_compile = timing.timed(
      lambda: steps.make_train_chunk(graphs, recipe, tx, mesh, steps_per_call).lower(
          state, steps.Totals.zeros(state.step.shape), device_data, perm).compile())
  eval_batch = run.plan.eval_batch_size
  _, eval_compile = timing.timed(
      lambda: steps.make_evaluate(
          graphs, recipe, mesh, eval_batch, len(device_data.test_labels) // eval_batch
      ).lower(state, device_data).compile())
  calls = [loop.Chunk(chunk, steps_per_call)] * (window_steps // steps_per_call)
  max_in_flight = loop.max_calls_in_flight(backend, mesh.devices.size)
  holder = {"state": state}

  def run_window():
    holder["state"], totals = loop.run_epoch(calls, holder["state"], device_data,
                                             perm, max_in_flight)
    return totals

  return Trainer(run_window, train_compile, eval_compile, steps_per_call, chunk)


def throughput(dataset: data.Dataset, models: list[str], batch_sizes: list[int],
               window_images: int, repeats: int,
               dtypes: tuple[str, ...] = ("float32",),
               member_counts: tuple[int, ...] = (1,),
               member_loops: tuple[str, ...] = ("auto",),
               budget: Budget | None = None) -> list[dict]:
  """Rows of training images/s, summed over the members of vectorised runs.

  Model by model in `models` order, so that a budget leaves out the last
  models rather than a dtype. Each variant is compiled and run for one
  window, then all take turns for the timed windows.
  """
  budget = budget or Budget(None)
  mesh = sharding.make_mesh()
  device_data = feed.place_data(dataset, mesh, default.get_config().eval_batch_size)
  prepared, rows = {}, []
  prepare_seconds, window_seconds = [], []  # Of each prepared variant.
  for model_name in models:
    for dtype in dtypes:
      for batch in batch_sizes:
        for members, member_loop in [(1, "auto")] * (1 in member_counts) + [
            (m, member_loop) for m in member_counts if m > 1
            for member_loop in member_loops]:
          if batch % mesh.devices.size:
            continue
          key = (model_name, batch, dtype, members, member_loop)
          # The timed windows still to come: a warm-up and `repeats` each.
          committed = (repeats + 1) * sum(window_seconds)
          if prepared and not budget.fits(
              statistics.fmean(prepare_seconds) + (repeats + 1)
              * statistics.fmean(window_seconds), committed):
            budget.skip(" ".join(map(str, key)))
            continue
          window_steps = max(1, window_images // batch)
          started = time.perf_counter()
          trainer = _trainer(model_name, batch, window_steps, dataset, device_data,
                             mesh, dtype, members, member_loop)
          (first_window,) = timing.time_windows(trainer.run_window, 1, warmup=0)
          prepare_seconds.append(time.perf_counter() - started)
          window_seconds.append(first_window)
          print(f"  ready {' '.join(map(str, key))}: compiled in "
                f"{trainer.compile_train_seconds + trainer.compile_eval_seconds:.1f} s, "
                f"first window {first_window:.2f} s", flush=True)
          prepared[key] = trainer.run_window
          rows.append({"model": model_name, "batch_size": batch, "dtype": dtype,
                       "members": members, "member_loop": member_loop,
                       "window_steps": window_steps,
                       "steps_per_call": trainer.steps_per_call,
                       "compile_train_seconds": trainer.compile_train_seconds,
                       "compile_eval_seconds": trainer.compile_eval_seconds})
  seconds = timing.interleaved_windows(prepared, repeats)
  for row in rows:
    key = (row["model"], row["batch_size"], row["dtype"], row["members"],
           row["member_loop"])
    row["images_per_sec"] = timing.rate_stats(
        row["window_steps"] * row["batch_size"] * row["members"], seconds[key])
    stats = row["images_per_sec"]
    print(f"  {row['model']:>9} batch {row['batch_size']:>5} {row['dtype']:>8}"
          f" x{row['members']} {row['member_loop']:>6}: "
          f"{stats['median']:>10,.0f} img/s ({stats['min']:,.0f}..{stats['max']:,.0f}); "
          f"compile train {row['compile_train_seconds']:.2f} s, "
          f"eval {row['compile_eval_seconds']:.2f} s", flush=True)
  return rows


def _seconds_to(history: list[dict], target: float) -> float | None:
  """Training seconds until the end-of-epoch test accuracy first reaches `target`."""
  seconds = 0.0
  for record in history:
    seconds += record["epoch_seconds"]
    if record["test_accuracy"] >= target:
      return seconds
  return None


def _with_root_on_path(env: dict) -> dict:
  """`env` with the repo first on PYTHONPATH, keeping what was there (e.g.
  packages installed with `pip --target` on a machine set up by hand)."""
  return {**env, "PYTHONPATH": os.pathsep.join(
      [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])}


def _train_seed(name: str, seed: int, data_dir: str | None, overrides: list[str],
                workdir: str, in_process: bool) -> dict:
  """The summary of one seed of speedrun `name`, trained in `workdir`."""
  config_path = ROOT / "configs" / f"{name}.py"
  if in_process:
    config = config_lib.from_file(str(config_path))
    config_lib.apply_overrides(config, [f"seed={seed}", "plots=False", *overrides]
                            + ([f"data_dir={data_dir}"] if data_dir else []))
    return training.train_and_evaluate(config, workdir).summary
  command = [sys.executable, "-m", "mnist_jax.main", f"--config={config_path}",
             f"--workdir={workdir}", f"--config.seed={seed}",
             "--config.plots=False"]
  command += [f"--config.{o}" for o in overrides]
  if data_dir:
    command.append(f"--config.data_dir={data_dir}")
  env = _with_root_on_path(os.environ)
  env.pop("XLA_FLAGS", None)  # mnist_jax's own choice of devices.
  ba.run_child(command, cwd=ROOT, env=env)
  return json.loads((Path(workdir) / "summary.json").read_text())


def time_to_accuracy(data_dir: str | None, speedruns: list[str], seeds: int,
                     overrides: list[str] = (), in_process: bool = False,
                     budget: Budget | None = None) -> list[dict]:
  """Each seed is `python -m mnist_jax.main` in a fresh process, as a user
  runs it, or with `in_process` `training.train_and_evaluate` in this one."""
  budget, rows, seed_seconds = budget or Budget(None), [], []
  for name in speedruns:
    target = SPEEDRUNS[name]
    config = config_lib.from_file(str(ROOT / "configs" / f"{name}.py"))
    config_lib.apply_overrides(config, overrides)  # For the record's epochs and batch.
    runs = []
    for seed in range(seeds):
      if seed_seconds and not budget.fits(statistics.fmean(seed_seconds)):
        budget.skip(f"{name} seeds {seed}..{seeds - 1}")
        break
      started = time.perf_counter()
      with tempfile.TemporaryDirectory() as workdir:
        summary = _train_seed(name, seed, data_dir, overrides, workdir, in_process)
        history = outputs.read_metrics(Path(workdir))
      seed_seconds.append(time.perf_counter() - started)
      runs.append({"seed": seed, "seconds_to_target": _seconds_to(history, target),
                   "final_test_accuracy": summary["final_test_accuracy"],
                   "train_seconds": summary["train_seconds"],
                   "compile_seconds": summary["compile_seconds"],
                   "device_count": summary["device_count"],
                   "test_accuracy_by_epoch": [r["test_accuracy"] for r in history]})
    if not runs:
      continue
    reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    finals = [r["final_test_accuracy"] for r in runs]
    row = {"config": name, "target": target, "seeds": len(runs),
           "seeds_requested": seeds, "in_process": in_process,
           "num_epochs": config.num_epochs, "batch_size": config.batch_size,
           "fraction_reached": len(reached) / len(runs),
           "seconds_to_target": timing.spread(reached) if reached else None,
           "final_test_accuracy": timing.spread(finals),
           "compile_seconds": statistics.median(r["compile_seconds"] for r in runs),
           "device_count": runs[0]["device_count"],
           "runs": runs}
    rows.append(row)
    spent = row["seconds_to_target"]
    print(f"  {name}: {100 * row['final_test_accuracy']['mean']:.2f}% mean final, "
          f"target {100 * target:.1f}% reached by {len(reached)}/{len(runs)} seeds"
          + (f" in {spent['mean']:.2f} s mean ({spent['min']:.2f}..{spent['max']:.2f})"
             if spent else ""), flush=True)
  return rows


def _run_child(args, section: str, *flags: str, env: dict | None = None) -> list[dict]:
  """Rows of `section` measured by this script in a fresh process."""
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "child.json"
    command = [sys.executable, __file__, f"--sections={section}",
               f"--window_images={_window_images(args)}",
               f"--repeats={args.repeats}", f"--dataset={args.dataset}",
               *flags, f"--out={out}", "--no_tables"]
    if args.data_dir:
      command.append(f"--data_dir={args.data_dir}")
    env = {**os.environ, **(env or {})}
    env.pop("XLA_FLAGS", None)  # The child sets its own device count.
    ba.run_child(command, env=env)
    return json.loads(out.read_text())[section]


def _child_throughput(args, models: str, batch: int, devices: int,
                      members: str = "1", loops: str = "auto") -> list[dict]:
  """The throughput section in a fresh process on `devices` virtual CPU devices."""
  rows = _run_child(args, "throughput", f"--devices={devices}", f"--models={models}",
                    f"--members={members}", f"--member_loops={loops}",
                    f"--batch_sizes={batch}", f"--dtypes={','.join(_dtypes(args))}")
  return [{**row, "device_count": devices} for row in rows]


def _auto_cpu_devices(batch: int, cores: int, model: str) -> int:
  """mnist_jax's own device count for a batch of `model` on `cores` CPUs."""
  return runtime.auto_cpu_devices(batch, cores,
                                  dense_only=registry.resolve("model", model).dense_only)


def default_throughput(args, dataset, batch_sizes: list[int],
                       budget: Budget | None = None) -> list[dict]:
  """Throughput as mnist_jax runs by default: on CPU each batch size on its
  automatic number of virtual devices (runtime.auto_cpu_devices), one child
  process each (no budget); elsewhere all the devices, in this process."""
  if jax.default_backend() != "cpu" or args.devices:
    rows = throughput(dataset, _names(args.models), batch_sizes,
                      _window_images(args), args.repeats, _dtypes(args),
                      tuple(_ints(args.members)), tuple(_names(args.member_loops)),
                      budget)
    return [{**row, "device_count": jax.device_count()} for row in rows]
  cores = len(os.sched_getaffinity(0))
  rows = []
  for batch in batch_sizes:
    by_count = {}  # The models that share a device count share a child.
    for model in _names(args.models):
      by_count.setdefault(_auto_cpu_devices(batch, cores, model), []).append(model)
    for count, models in sorted(by_count.items()):
      rows += _child_throughput(args, ",".join(models), batch, count)
  return rows


def scaling(args) -> list[dict]:
  """Throughput of the scaling models on 1, 2 and 8 devices."""
  if jax.default_backend() != "cpu":
    counts = [jax.device_count()]  # The devices present; a mesh takes them all.
  else:
    counts = _ints(args.device_counts)
  rows = []
  for count in counts:
    if jax.default_backend() != "cpu":
      dataset = data.load(args.dataset, args.data_dir)
      found = throughput(dataset, _names(args.scaling_models),
                         [args.scaling_batch_size], _window_images(args), args.repeats)
    else:
      found = _child_throughput(args, args.scaling_models, args.scaling_batch_size,
                                count)
    for row in found:
      rows.append({**row, "device_count": count})
  for model_name in _names(args.scaling_models):
    mine = [r for r in rows if r["model"] == model_name]
    base = next((r for r in mine if r["device_count"] == 1), None)
    for r in mine:
      if base:
        r["speedup_over_1_device"] = (r["images_per_sec"]["median"]
                                      / base["images_per_sec"]["median"])
        r["differs_from_1_device"] = not timing.overlap(r["images_per_sec"],
                                                        base["images_per_sec"])
  return rows


def members_section(args, budget: Budget | None = None) -> list[dict]:
  """Vectorised members against one: each model at the members batch size
  (on CPU in a child process on its default devices, with no budget)."""
  batch, counts = args.members_batch_size, args.members_counts
  if jax.default_backend() != "cpu" or args.devices:
    dataset = data.load(args.dataset, args.data_dir)
    rows = throughput(dataset, _names(args.members_models), [batch],
                      _window_images(args), args.repeats,
                      member_counts=tuple(_ints(counts)),
                      member_loops=tuple(_names(args.member_loops)), budget=budget)
    rows = [{**row, "device_count": jax.device_count()} for row in rows]
  else:
    cores = len(os.sched_getaffinity(0))
    rows = []
    for model in _names(args.members_models):
      rows += _child_throughput(args, model, batch,
                                _auto_cpu_devices(batch, cores, model), counts,
                                args.member_loops)
  for row in rows:
    base = next((r for r in rows if r["model"] == row["model"] and r["members"] == 1),
                None)
    if base is None:  # Left out by the budget.
      continue
    row["speedup_over_sequential"] = (row["images_per_sec"]["median"]
                                      / base["images_per_sec"]["median"])
    row["differs_from_sequential"] = not timing.overlap(row["images_per_sec"],
                                                        base["images_per_sec"])
  return rows


def _compiled_memory(compiled) -> dict[str, int] | None:
  """XLA's compile-time buffer sizes of a compiled call, where it gives them."""
  try:
    stats = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, RuntimeError):
    return None
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "peak_memory_in_bytes")
  return None if stats is None else {
      f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def peak_memory(dataset: data.Dataset, model_name: str, batch_sizes: list[int],
                window_images: int, dtype: str = "float32") -> list[dict]:
  """In this process, batch sizes ascending: each trained for one window, then
  the device's peak bytes in use so far (memory_section says why so)."""
  mesh = sharding.make_mesh()
  device_data = feed.place_data(dataset, mesh, default.get_config().eval_batch_size)
  device = jax.local_devices()[0]
  rows = []
  for batch in sorted(batch_sizes):
    if batch % mesh.devices.size:
      continue
    window_steps = max(1, window_images // batch)
    trainer = _trainer(model_name, batch, window_steps, dataset, device_data, mesh,
                       dtype)
    jax.block_until_ready(trainer.run_window())
    stats = device.memory_stats()
    row = {"model": model_name, "batch_size": batch, "dtype": dtype,
           "window_steps": window_steps, "steps_per_call": trainer.steps_per_call,
           "device_count": mesh.devices.size,
           "compiled_train_bytes": _compiled_memory(trainer.compiled_chunk)}
    if stats and "peak_bytes_in_use" in stats:
      row.update(peak_bytes_in_use=int(stats["peak_bytes_in_use"]),
                 bytes_limit=stats.get("bytes_limit"))
    else:
      row["peak_bytes_in_use"] = NOT_REPORTED.format(jax.default_backend())
    rows.append(row)
    peak = row["peak_bytes_in_use"]
    print(f"  {model_name:>9} batch {batch:>5} {dtype:>8}: peak "
          + (f"{peak / 2**20:,.1f} MiB" if isinstance(peak, int) else peak), flush=True)
    del trainer  # Its state and compiled calls, before the next batch size.
  return rows


def memory_section(args, batch_sizes: list[int], budget: Budget | None = None
                   ) -> list[dict]:
  """Peak device memory of each memory model, each in a fresh process.

  `memory_stats()["peak_bytes_in_use"]` is the process's peak since it
  started and cannot be reset: a fresh process per model, batch sizes
  ascending, so each row's peak is that of its batch (memory grows with the
  batch: parameters, optimizer state and data do not change with it).
  """
  budget, rows, model_seconds = budget or Budget(None), [], []
  models = _names(args.memory_models)
  for i, model in enumerate(models):
    if model_seconds and not budget.fits(statistics.fmean(model_seconds)):
      for left_out in models[i:]:
        budget.skip(f"memory of {left_out}")
      break
    started = time.perf_counter()
    # Not the parent's preallocated 75% of the GPU: the child starts beside it.
    rows += _run_child(args, "memory", "--memory_in_process", f"--memory_models={model}",
                       f"--memory_batch_sizes={','.join(map(str, batch_sizes))}",
                       env={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    model_seconds.append(time.perf_counter() - started)
  return rows


def _dtypes(args) -> tuple[str, ...]:
  if args.dtypes:
    return tuple(_names(args.dtypes))
  return ("float32",) if jax.default_backend() == "cpu" else ("float32", "bfloat16")


def _window_images(args) -> int:
  if args.window_images:
    return args.window_images
  return 8192 if jax.default_backend() == "cpu" else 60_000


def _strategies_section(args, dataset) -> dict:
  batch, chunk = args.strategies_batch_size, 8
  # Whole chunks, within one epoch of the dataset.
  images = min(args.strategies_window_images, len(dataset.train_labels))
  window = max(chunk, images // batch // chunk * chunk)
  found = {"model": args.strategies_model, "batch_size": batch, "window_steps": window,
           "chunk": chunk,
           "results": strategies.measure(dataset, args.strategies_model, batch, window,
                                         chunk, args.repeats)}
  for name, r in found["results"].items():
    print(f"  {name:>20}: {r['images_per_sec']['median']:>10,.0f} img/s", flush=True)
  return found


def _check_windows(args, dataset: data.Dataset, sections: list[str],
                   batch_sizes: list[int], memory_batch_sizes: list[int]):
  """Each section's timed window fits in one epoch of `dataset`'s training
  images: a window is cut from one epoch's shuffle (feed.epoch_permutation)."""
  num_train = len(dataset.train_labels)
  batches = {"throughput": ("--batch_sizes", batch_sizes),
             "scaling": ("--scaling_batch_size", [args.scaling_batch_size]),
             "members": ("--members_batch_size", [args.members_batch_size]),
             "memory": ("--memory_batch_sizes", memory_batch_sizes),
             # The strategies window is at least one chunk of 8 steps.
             "strategies": ("--strategies_batch_size",
                            [8 * args.strategies_batch_size])}
  for section in sections:
    flag, sizes = batches.get(section, ("", []))
    for batch in sizes:
      if batch > num_train:
        raise UserError(f"{flag}: {section} needs {batch} training images a "
                        f"window at least, and {dataset.name} has {num_train}; "
                        f"use a smaller batch size")
      window = max(1, _window_images(args) // batch) * batch
      if section != "strategies" and window > num_train:
        raise UserError(f"--window_images={_window_images(args)}: a window at "
                        f"batch {batch} ({section}) takes {window} training "
                        f"images, and {dataset.name} has {num_train}; pass "
                        f"--window_images={num_train // batch * batch} or less")


def main(args):
  on_cpu = jax.default_backend() == "cpu"
  sections = _names(args.sections or ",".join(
      s for s in SECTIONS if not (on_cpu and s == "memory")))
  budgets = budgets_of(args.budgets)
  batch_sizes = _ints(args.batch_sizes or ("64,128,256,512" if on_cpu
                                           else "128,512,2048"))
  memory_batch_sizes = _ints(args.memory_batch_sizes or ",".join(map(str, batch_sizes)))
  record = {"benchmark": "harness", "machine": timing.machine_info(),
            "overrides": args.override,
            "dataset": args.dataset, "repeats": args.repeats,
            "window_images": _window_images(args), "sections": sections,
            "budgets": budgets}
  machine = record["machine"]
  if machine["git_commit"] is None and args.git_commit:
    machine["git_commit"] = args.git_commit
  stamp = machine["date"].replace(":", "").replace("-", "")[:13]
  started = time.perf_counter()
  dataset = None
  if set(sections) - {"time_to_accuracy"}:
    # Loaded here (the sections in child processes load it again) to refuse
    # a window or batch size that does not fit in it before measuring.
    dataset = data.load(args.dataset, args.data_dir)
    _check_windows(args, dataset, sections, batch_sizes, memory_batch_sizes)
  # In the order asked for: a run stopped from outside keeps the first ones.
  for section in sections:
    print(f"[{time.perf_counter() - started:.0f} s] {section.replace('_', ' ')}"
          + (f" (budget {budgets[section]:.0f} s)" if section in budgets else ""),
          flush=True)
    budget = Budget(budgets.get(section))
    if section == "throughput":
      record[section] = default_throughput(args, dataset, batch_sizes, budget)
    elif section == "strategies":
      record[section] = _strategies_section(args, dataset)
    elif section == "time_to_accuracy":
      record[section] = time_to_accuracy(args.data_dir, _names(args.speedruns),
                                         args.seeds, args.override,
                                         args.speedruns_in_process, budget)
    elif section == "scaling":
      record[section] = scaling(args)
    elif section == "members":
      record[section] = members_section(args, budget)
    elif section == "memory" and args.memory_in_process:
      record[section] = [row for model in _names(args.memory_models)
                         for row in peak_memory(dataset, model, memory_batch_sizes,
                                                _window_images(args))]
    elif section == "memory":
      record[section] = memory_section(args, memory_batch_sizes, budget)
    if budget.skipped:
      record.setdefault("skipped", {})[section] = budget.skipped
    record["harness_seconds"] = time.perf_counter() - started
    timing.write_record(record, f"harness-{machine['device_count']}dev-{stamp}",
                        out=args.out, results_dir=args.results_dir)
  print(f"[{time.perf_counter() - started:.0f} s] done", flush=True)
  if not args.no_tables:
    tables.write_readme()


if __name__ == "__main__":
  ba.run_main(main, ARGS)
