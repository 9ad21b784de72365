"""Execution strategies side by side, in one run, on the same model and data.

  host_loop    a conventional loop: shuffle on the host, slice each batch from
               host numpy, copy it to the device, one compiled step per batch.
  device_step  mnist_jax's loop: the dataset on device, each step gathers its
               batch by an on-device permutation, one step per compiled call.
  scan_chunk   the same, `--chunk` steps per call (`lax.scan`).
  whole_window the same, every step of the timed window in one call (the
               whole-epoch strategy when the window is an epoch).
  device_step_progress  device_step with the live progress line drawn (to a
               terminal that discards it), to show what the display costs.

Throughput is the median over `--repeats` timed windows of `--window_steps`
steps, after one warm-up window, each timed until the device has finished
(`block_until_ready`); data loading and compilation are excluded (compile
time is reported apart). The strategies take turns window by window, so a
drift in the machine's speed affects them alike. Each strategy trains its
own copy of the same initial state.

Command (CPU, this repo's checkout, data in ../shared/datasets):
  python benchmarks/strategies.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/strategies-*.json.
"""

import argparse
import functools
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_args as ba  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from configs import default
from mnist_jax import assembly, data, feed, loop, progress, runtime, sharding
from mnist_jax import steps, timing
from mnist_jax import config as config_lib
from mnist_jax.errors import UserError

STRATEGIES = ("host_loop", "device_step", "scan_chunk", "whole_window",
              "device_step_progress")


class _NullTerminal(io.StringIO):
  def isatty(self):
    return True


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="cnn", type=ba.config_values("model"))
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--batch_size", type=ba.positive_int, default=128)
  parser.add_argument("--window_steps", type=ba.positive_int, default=32)
  parser.add_argument("--chunk", type=ba.positive_int, default=8,
                      help="steps per call of scan_chunk; divides --window_steps")
  parser.add_argument("--repeats", type=ba.positive_int, default=5)
  parser.add_argument("--strategies", default=",".join(STRATEGIES),
                      type=ba.names(STRATEGIES))
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  if "scan_chunk" in args.strategies.split(",") and args.window_steps % args.chunk:
    parser.error(f"argument --window_steps: {args.window_steps} steps are not "
                 f"whole chunks of --chunk={args.chunk}; pass a multiple of "
                 f"{args.chunk}")
  return args


def _check_window(dataset: data.Dataset, batch: int, window: int,
                  chunk_steps: int, names):
  """The window is whole chunks, and fits in one epoch's shuffle of the
  training images, from which it is cut (feed.epoch_permutation)."""
  if "scan_chunk" in names and window % chunk_steps:
    raise UserError(f"--window_steps={window} must be whole chunks of "
                    f"--chunk={chunk_steps}")
  num_train = len(dataset.train_labels)
  if window * batch > num_train:
    raise UserError(f"--window_steps={window}: {window} steps of batch {batch} "
                    f"take {window * batch} training images, and {dataset.name} "
                    f"has {num_train}; pass --window_steps="
                    f"{max(1, num_train // batch)} or less")


def measure(dataset: data.Dataset, model_name: str, batch: int, window: int,
            chunk_steps: int, repeats: int, names=STRATEGIES) -> dict:
  """{strategy: {images_per_sec, compile_seconds, steps_per_call, ...}}."""
  config = default.get_config()
  config.model, config.batch_size = model_name, batch
  config_lib.validate(config)  # E.g. an unknown --model, with the fix.
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch, mesh, "--batch_size")
  _check_window(dataset, batch, window, chunk_steps, names)
  num_train = len(dataset.train_labels)
  # As a training run wires it; the strategies then compile their own calls.
  run = assembly.assemble(config, dataset,
                          runtime.Runtime(mesh, jax.default_backend(), True))
  graphs, recipe, tx = run.built.graphs, run.built.recipe, run.built.tx
  state0, device_data = run.state, run.device_data
  max_in_flight = loop.max_calls_in_flight(jax.default_backend(), mesh.devices.size)
  fresh_state = lambda: jax.tree.map(jnp.copy, state0)

  def host_loop():
    step = jax.jit(functools.partial(steps.train_step, graphs, recipe, tx),
                   donate_argnums=0)
    batch_sharding = sharding.batch_sharded(mesh)
    rng = np.random.default_rng(0)
    holder = {"state": fresh_state()}

    def run_window():
      perm = rng.permutation(num_train)[:window * batch].reshape(window, batch)
      in_flight = []
      for idx in perm:
        images, labels = jax.device_put(
            (dataset.train_images[idx], dataset.train_labels[idx]), batch_sharding)
        holder["state"], sums = step(holder["state"], images, labels)
        if max_in_flight:
          in_flight.append(sums[0])
          if len(in_flight) > max_in_flight:
            in_flight.pop(0).block_until_ready()
      return holder["state"].step

    _, compile_seconds = timing.timed(
        lambda: step.lower(holder["state"], dataset.train_images[:batch],
                           dataset.train_labels[:batch]).compile())
    return run_window, compile_seconds, 1

  def on_device(steps_per_call, with_progress=False):
    chunk = steps.make_train_chunk(graphs, recipe, tx, mesh, steps_per_call)
    perm_SB = feed.epoch_permutation(jax.random.key_data(jax.random.key(0)), 0,
                                     num_train, window, batch)
    holder = {"state": fresh_state()}
    _, compile_seconds = timing.timed(
        lambda: chunk.lower(holder["state"], steps.Totals.zeros(), device_data,
                            perm_SB).compile())
    calls = [loop.Chunk(chunk, steps_per_call)] * (window // steps_per_call)

    def run_window():
      bar = progress.EpochProgress(1, 1, window, batch, stream=_NullTerminal(),
                                   enabled=with_progress)
      holder["state"], totals = loop.run_epoch(
          calls, holder["state"], device_data, perm_SB, max_in_flight,
          on_dispatch=bar.dispatched if with_progress else None)
      if with_progress:
        bar.wait(totals.steps)
      return totals

    return run_window, compile_seconds, steps_per_call

  makers = {"host_loop": host_loop,
            "device_step": lambda: on_device(1),
            "scan_chunk": lambda: on_device(chunk_steps),
            "whole_window": lambda: on_device(window),
            "device_step_progress": lambda: on_device(1, with_progress=True)}
  prepared = {name: makers[name]() for name in names}
  seconds = timing.interleaved_windows(
      {name: run_window for name, (run_window, _, _) in prepared.items()},
      repeats)
  results = {}
  for name, (_, compile_seconds, steps_per_call) in prepared.items():
    results[name] = {"images_per_sec": timing.rate_stats(window * batch, seconds[name]),
                     "compile_seconds": compile_seconds,
                     "steps_per_call": steps_per_call}
  if "host_loop" in results:
    base = results["host_loop"]["images_per_sec"]
    for r in results.values():
      r["ratio_to_host_loop"] = r["images_per_sec"]["median"] / base["median"]
      r["differs_from_host_loop"] = not timing.overlap(r["images_per_sec"], base)
  return results


def main(argv=None):
  args = parse_args(argv)
  dataset = data.load(args.dataset, args.data_dir)
  results = measure(dataset, args.model, args.batch_size, args.window_steps,
                    args.chunk, args.repeats, args.strategies.split(","))
  for name, r in results.items():
    stats = r["images_per_sec"]
    print(f"{name:>20}: {stats['median']:>9,.0f} img/s (min {stats['min']:,.0f}, "
          f"max {stats['max']:,.0f}), compile {r['compile_seconds']:.2f} s", flush=True)
  machine = timing.machine_info()
  record = {"benchmark": "strategies", "model": args.model,
            "dataset": args.dataset, "batch_size": args.batch_size,
            "window_steps": args.window_steps, "chunk": args.chunk,
            "repeats": args.repeats, "machine": machine, "results": results}
  timing.write_record(
      record, f"strategies-{args.model}-b{args.batch_size}-{machine['device_count']}dev",
      out=args.out, results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  ba.run_main(main)
