"""The benchmark harness: every figure for this machine, one record, the tables.

Command (from the repo root, data in ../shared/datasets):
  python benchmarks/run.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/harness-<N>dev-<date>.json
and regenerates the tables in benchmarks/README.md from every record there
(`python benchmarks/tables.py` does only the latter).

Sections (`--sections`, all by default):
  throughput        training images/s of each model at each batch size, as
                    mnist_jax runs by default (on CPU: each batch size in a
                    child process on its automatic number of virtual devices,
                    sharding.auto_cpu_devices): the median of `--repeats`
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

All timings wait for the device (`block_until_ready`) and exclude loading the
data and compiling. A difference within the min..max spreads is reported as
no difference.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("throughput", "strategies", "time_to_accuracy", "scaling", "members")
# (config file, target test accuracy) of each speedrun.
SPEEDRUNS = {"mnist_speedrun": 0.99, "fashion_speedrun": 0.925}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--sections", default=",".join(SECTIONS))
  parser.add_argument("--models", default="mlp,cnn,speedrun")
  parser.add_argument("--batch_sizes", default=None,
                      help="default 64,128,256,512 on CPU, 128,512,2048 elsewhere")
  parser.add_argument("--dtypes", default=None,
                      help="computation dtypes of the throughput section; "
                      "default float32 on CPU, float32,bfloat16 elsewhere")
  parser.add_argument("--window_images", type=int, default=None,
                      help="images per timed window; default 8192 on CPU, "
                      "an epoch elsewhere")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--strategies_batch_size", type=int, default=128)
  parser.add_argument("--strategies_window_images", type=int, default=2048,
                      help="smaller than --window_images: on CPU the scanned "
                      "strategies run at a tenth of the speed")
  parser.add_argument("--speedruns", default=",".join(SPEEDRUNS))
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--override", action="append", default=[],
                      help="field=value set in each speedrun config (e.g. for "
                      "a quick check: num_epochs=1)")
  parser.add_argument("--device_counts", default="1,2,8")
  parser.add_argument("--scaling_models", default="speedrun,cnn")
  parser.add_argument("--scaling_batch_size", type=int, default=256)
  parser.add_argument("--members", default="1",
                      help="members (config.num_seeds) of each throughput row")
  parser.add_argument("--members_counts", default="1,2,4,8",
                      help="the members section's counts")
  parser.add_argument("--members_models", default="speedrun,cnn")
  parser.add_argument("--member_loops", default="vmap,unroll",
                      help="config.member_loop values of the members section")
  parser.add_argument("--members_batch_size", type=int, default=128)
  parser.add_argument("--dataset", default="mnist",
                      help="dataset of the throughput, strategies and scaling sections")
  parser.add_argument("--devices", type=int, default=None,
                      help="CPU only: run on this many virtual CPU devices")
  parser.add_argument("--out", default=None, help="JSON path of the record")
  parser.add_argument("--no_tables", action="store_true",
                      help="do not regenerate benchmarks/README.md")
  return parser.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices:
  # Must precede the first import of jax.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.devices}")

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

import strategies  # pylint: disable=g-import-not-at-top,wrong-import-position
import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import compare, data, sharding, timing, train  # pylint: disable=g-import-not-at-top,wrong-import-position


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
  return [x for x in text.split(",") if x]


def _trainer(model_name: str, batch: int, window_steps: int,
             dataset: data.Dataset, device_data, mesh, dtype: str = "float32",
             members: int = 1, member_loop: str = "auto"):
  """(run_window, compile seconds of train step, of evaluation, steps per call)."""
  config = default.get_config()
  config.model, config.batch_size, config.dtype = model_name, batch, dtype
  config.num_seeds, config.member_loop = members, member_loop
  backend = jax.default_backend()
  model, state, tx = train.create_model_and_state(
      config, dataset.num_classes, len(dataset.train_labels) // batch)
  state = jax.device_put(state, sharding.replicated(mesh))
  steps_per_call = train.default_steps_per_call(backend, window_steps)
  perm = train.epoch_permutation(train.data_keys(config), 0,
                                 len(dataset.train_labels), window_steps, batch)
  chunk, train_compile = timing.timed(
      lambda: train.make_train_chunk(model, tx, mesh, steps_per_call).lower(
          state, train.Totals.zeros(state.step.shape), device_data, perm).compile())
  eval_batch = train.evaluation_batch_size(config, len(dataset.test_labels),
                                           mesh.devices.size)
  _, eval_compile = timing.timed(
      lambda: train.make_evaluate(
          model, mesh, eval_batch, len(device_data.test_labels) // eval_batch
      ).lower(state, device_data).compile())
  calls = [train.Chunk(chunk, steps_per_call)] * (window_steps // steps_per_call)
  max_in_flight = train.max_calls_in_flight(backend, mesh.devices.size)
  holder = {"state": state}

  def run_window():
    holder["state"], totals = train.run_epoch(calls, holder["state"], device_data,
                                              perm, max_in_flight)
    return totals

  return run_window, train_compile, eval_compile, steps_per_call


def throughput(dataset: data.Dataset, models: list[str], batch_sizes: list[int],
               window_images: int, repeats: int,
               dtypes: tuple[str, ...] = ("float32",),
               member_counts: tuple[int, ...] = (1,),
               member_loops: tuple[str, ...] = ("auto",)) -> list[dict]:
  """Rows of training images/s, summed over the members of vectorised runs."""
  mesh = sharding.make_mesh()
  device_data = train.place_data(dataset, mesh, default.get_config().eval_batch_size)
  prepared, rows = {}, []
  for dtype in dtypes:
    for model_name in models:
      for batch in batch_sizes:
        for members, loop in [(1, "auto")] * (1 in member_counts) + [
            (m, loop) for m in member_counts if m > 1 for loop in member_loops]:
          if batch % mesh.devices.size:
            continue
          window_steps = max(1, window_images // batch)
          run_window, train_compile, eval_compile, steps_per_call = _trainer(
              model_name, batch, window_steps, dataset, device_data, mesh, dtype,
              members, loop)
          prepared[(model_name, batch, dtype, members, loop)] = run_window
          rows.append({"model": model_name, "batch_size": batch, "dtype": dtype,
                       "members": members, "member_loop": loop,
                       "window_steps": window_steps,
                       "steps_per_call": steps_per_call,
                       "compile_train_seconds": train_compile,
                       "compile_eval_seconds": eval_compile})
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


def time_to_accuracy(data_dir: str | None, speedruns: list[str], seeds: int,
                     overrides: list[str] = ()) -> list[dict]:
  """Each seed is `python -m mnist_jax.main` in a fresh process, as a user runs it."""
  rows = []
  for name in speedruns:
    target = SPEEDRUNS[name]
    config = compare.load_config(str(ROOT / "configs" / f"{name}.py"))
    compare.apply_overrides(config, overrides)  # For the record's epochs and batch.
    runs = []
    for seed in range(seeds):
      with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "mnist_jax.main",
                   f"--config={ROOT / 'configs' / f'{name}.py'}",
                   f"--workdir={workdir}", f"--config.seed={seed}",
                   "--config.plots=False"]
        command += [f"--config.{o}" for o in overrides]
        if data_dir:
          command.append(f"--config.data_dir={data_dir}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("XLA_FLAGS", None)  # mnist_jax's own choice of devices.
        subprocess.run(command, check=True, cwd=ROOT, env=env)
        summary = json.loads((Path(workdir) / "summary.json").read_text())
        history = train.read_metrics(Path(workdir))
      runs.append({"seed": seed, "seconds_to_target": _seconds_to(history, target),
                   "final_test_accuracy": summary["final_test_accuracy"],
                   "train_seconds": summary["train_seconds"],
                   "compile_seconds": summary["compile_seconds"],
                   "device_count": summary["device_count"],
                   "test_accuracy_by_epoch": [r["test_accuracy"] for r in history]})
    reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    finals = [r["final_test_accuracy"] for r in runs]
    row = {"config": name, "target": target, "seeds": seeds,
           "num_epochs": config.num_epochs, "batch_size": config.batch_size,
           "fraction_reached": len(reached) / seeds,
           "seconds_to_target": timing.spread(reached) if reached else None,
           "final_test_accuracy": timing.spread(finals),
           "compile_seconds": statistics.median(r["compile_seconds"] for r in runs),
           "device_count": runs[0]["device_count"],
           "runs": runs}
    rows.append(row)
    spent = row["seconds_to_target"]
    print(f"  {name}: {100 * row['final_test_accuracy']['mean']:.2f}% mean final, "
          f"target {100 * target:.1f}% reached by {len(reached)}/{seeds} seeds"
          + (f" in {spent['mean']:.2f} s mean ({spent['min']:.2f}..{spent['max']:.2f})"
             if spent else ""), flush=True)
  return rows


def _child_throughput(args, models: str, batch: int, devices: int,
                      members: str = "1", loops: str = "auto") -> list[dict]:
  """The throughput section in a fresh process on `devices` virtual CPU devices."""
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "child.json"
    command = [sys.executable, __file__, "--sections=throughput",
               f"--devices={devices}", f"--models={models}", f"--members={members}",
               f"--member_loops={loops}",
               f"--batch_sizes={batch}", f"--window_images={_window_images(args)}",
               f"--dtypes={','.join(_dtypes(args))}",
               f"--repeats={args.repeats}", f"--dataset={args.dataset}",
               f"--out={out}", "--no_tables"]
    if args.data_dir:
      command.append(f"--data_dir={args.data_dir}")
    env = {**os.environ}
    env.pop("XLA_FLAGS", None)  # The child sets its own device count.
    subprocess.run(command, check=True, env=env)
    rows = json.loads(out.read_text())["throughput"]
  return [{**row, "device_count": devices} for row in rows]


def default_throughput(args, dataset, batch_sizes: list[int]) -> list[dict]:
  """Throughput as mnist_jax runs by default: on CPU each batch size on its
  automatic number of virtual devices (sharding.auto_cpu_devices), one child
  process each; elsewhere all the devices, in this process."""
  if jax.default_backend() != "cpu" or args.devices:
    rows = throughput(dataset, _names(args.models), batch_sizes,
                      _window_images(args), args.repeats, _dtypes(args),
                      tuple(_ints(args.members)), tuple(_names(args.member_loops)))
    return [{**row, "device_count": jax.device_count()} for row in rows]
  cores = len(os.sched_getaffinity(0))
  rows = []
  for batch in batch_sizes:
    by_count = {}  # The models that share a device count share a child.
    for model in _names(args.models):
      by_count.setdefault(sharding.auto_cpu_devices(batch, cores, model), []).append(model)
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


def members_section(args) -> list[dict]:
  """Vectorised members against one: each model at the members batch size
  (on CPU in a child process on its default devices)."""
  batch, counts = args.members_batch_size, args.members_counts
  if jax.default_backend() != "cpu":
    dataset = data.load(args.dataset, args.data_dir)
    rows = throughput(dataset, _names(args.members_models), [batch],
                      _window_images(args), args.repeats,
                      member_counts=tuple(_ints(counts)),
                      member_loops=tuple(_names(args.member_loops)))
    rows = [{**row, "device_count": jax.device_count()} for row in rows]
  else:
    cores = len(os.sched_getaffinity(0))
    rows = []
    for model in _names(args.members_models):
      rows += _child_throughput(args, model, batch,
                                sharding.auto_cpu_devices(batch, cores, model), counts,
                                args.member_loops)
  for row in rows:
    base = next(r for r in rows if r["model"] == row["model"] and r["members"] == 1)
    row["speedup_over_sequential"] = (row["images_per_sec"]["median"]
                                      / base["images_per_sec"]["median"])
    row["differs_from_sequential"] = not timing.overlap(row["images_per_sec"],
                                                        base["images_per_sec"])
  return rows


def _dtypes(args) -> tuple[str, ...]:
  if args.dtypes:
    return tuple(_names(args.dtypes))
  return ("float32",) if jax.default_backend() == "cpu" else ("float32", "bfloat16")


def _window_images(args) -> int:
  if args.window_images:
    return args.window_images
  return 8192 if jax.default_backend() == "cpu" else 60_000


def main(args):
  sections = _names(args.sections)
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    sys.exit(f"error: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
  on_cpu = jax.default_backend() == "cpu"
  batch_sizes = _ints(args.batch_sizes or ("64,128,256,512" if on_cpu
                                           else "128,512,2048"))
  record = {"benchmark": "harness", "machine": timing.machine_info(),
            "overrides": args.override,
            "dataset": args.dataset, "repeats": args.repeats,
            "window_images": _window_images(args), "sections": sections}
  started = time.perf_counter()
  dataset = None
  if {"throughput", "strategies"} & set(sections):
    dataset = data.load(args.dataset, args.data_dir)
  if "throughput" in sections:
    print("throughput", flush=True)
    record["throughput"] = default_throughput(args, dataset, batch_sizes)
  if "strategies" in sections:
    print("strategies", flush=True)
    batch, chunk = args.strategies_batch_size, 8
    # Whole chunks, within one epoch of the dataset.
    images = min(args.strategies_window_images, len(dataset.train_labels))
    window = max(chunk, images // batch // chunk * chunk)
    record["strategies"] = {
        "model": "cnn", "batch_size": batch, "window_steps": window, "chunk": chunk,
        "results": strategies.measure(dataset, "cnn", batch, window, chunk,
                                      args.repeats)}
    for name, r in record["strategies"]["results"].items():
      print(f"  {name:>20}: {r['images_per_sec']['median']:>10,.0f} img/s", flush=True)
  if "time_to_accuracy" in sections:
    print("time to accuracy", flush=True)
    record["time_to_accuracy"] = time_to_accuracy(
        args.data_dir, _names(args.speedruns), args.seeds, args.override)
  if "scaling" in sections:
    print("scaling", flush=True)
    record["scaling"] = scaling(args)
  if "members" in sections:
    print("members", flush=True)
    record["members"] = members_section(args)
  record["harness_seconds"] = time.perf_counter() - started
  machine = record["machine"]
  stamp = machine["date"].replace(":", "").replace("-", "")[:13]
  timing.write_record(record, f"harness-{machine['device_count']}dev-{stamp}",
                      out=args.out, results_dir=ROOT / "benchmarks" / "results")
  if not args.no_tables:
    tables.write_readme()


if __name__ == "__main__":
  main(ARGS)
