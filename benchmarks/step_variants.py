"""The speedrun step on XLA:CPU, written other ways, timed inside mnist_jax's
real training loop (issue 22).

Each variant is the training step of configs/mnist_speedrun.py (or
`--config`) as `training` runs it: its state from `state.build`, its chunks
compiled by `steps.make_train_chunk` on mnist_jax's default devices for
the config (`runtime.configure_cpu_devices`: batch 128 on 2 virtual CPU
devices on a 2-core machine) and dispatched by `loop.run_epoch` over the
epoch's permutation of the device-resident data. Only one thing changes
per variant, patched in while its chunk is traced:

  xla            the current step (XLA's convolutions, one step per call,
                 `loop.max_calls_in_flight` calls in flight).
  conv1_im2col   conv1 as im2col + one matmul: the kernel's shifted slices
                 of the input concatenated on the channel axis, times the
                 kernel as a [kh*kw*ci, co] matrix (autodiff of that).
  conv1_wgrad    conv1 by XLA, but its weight gradient by a custom VJP:
                 patches^T @ dy, the patches built as above; the input
                 gradient is XLA's transpose of the convolution.
  convs_im2col   both convolutions as im2col + matmul.
  convs_wgrad    both convolutions' weight gradients as patches^T @ dy.
  dense_wgrad    both dense layers by a custom VJP whose weight gradient is
                 the explicit matmul x^T @ dy (input gradient dy @ W^T,
                 bias gradient the batch sum).
  unroll2, unroll4, unroll8   2, 4 or 8 steps per compiled call, unrolled
                 as straight-line code (a Python loop at trace time) instead
                 of `lax.scan`, whose loop XLA:CPU runs slowly.
  in_flight3, in_flight4   the current step with 3 or 4 calls in flight
                 before the host waits on the oldest (the loop's default is
                 2 on several CPU devices: its all-reduce can deadlock when
                 many are queued).

Before anything is timed, each model variant's gradient on the epoch's
first batch is checked against the current step's (XLA's): the largest
|difference| of each parameter must be within tests/tolerances.py's
float32_sum bound, over the terms of the longest chain of sums
(`sums_of(params, batch, conv1's output positions)`) at the leaf's largest
mean |per-example gradient|, as tests/test_sharding.py bounds a device
split. A variant that fails is recorded, not timed. unroll* and
in_flight* run the current model's step, unchanged.

Timing: each round, every variant in turn trains `--steps` steps (the
config's epoch by default) from the same initial state, waited for at the
end; one warm-up round, then `--rounds` timed ones. Reported per variant:
wall and process CPU milliseconds per step, median, min and max over the
rounds, the median's ratio to xla's and whether the two spreads are apart;
and how far its parameters after the last window are from xla's (0: the
same step, bit for bit).
The measurement runs in a child process with a `--timeout`: a variant that
hangs (an all-reduce deadlock) is recorded as such and the rest are
measured again without it.

Command (CPU; other processes on the machine paused for the recorded run):
  python benchmarks/step_variants.py --data_dir=../shared/datasets \
      --conditions="other processes paused"
  python benchmarks/step_variants.py --tiny   # mnist160, a few steps: a check
writes benchmarks/results/<backend>-<device kind>/step-variants-b<B>-<N>dev.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position

VARIANTS = ("xla", "conv1_im2col", "conv1_wgrad", "convs_im2col", "convs_wgrad",
            "dense_wgrad", "unroll2", "unroll4", "unroll8", "in_flight3",
            "in_flight4")
DEFAULT_CONFIG = "configs/mnist_speedrun.py"
# --tiny: the shipped 160-image MNIST (its 80 training images), a batch of
# 16, 4 steps, 1 round.
TINY = {"dataset": "mnist160", "batch_size": 16, "steps": 4, "rounds": 1}


def steps_per_call(name: str) -> int:
  return int(name.removeprefix("unroll")) if name.startswith("unroll") else 1


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=DEFAULT_CONFIG, type=ba.existing_file)
  parser.add_argument("--override", action="append", default=[],
                      help="field=value of the config, repeatable")
  parser.add_argument("--dataset", default=None,
                      help="default: the config's (mnist)")
  parser.add_argument("--data_dir", default=None, type=ba.existing_dir)
  parser.add_argument("--batch_size", type=ba.positive_int, default=None,
                      help="default: the config's (128)")
  parser.add_argument("--steps", type=ba.positive_int, default=None,
                      help="steps per timed window; default: the config's epoch")
  parser.add_argument("--rounds", type=ba.positive_int, default=5)
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      type=ba.names(VARIANTS))
  parser.add_argument("--timeout", type=ba.positive_float, default=300,
                      help="seconds one window (or the compilation before "
                      "them) may take before its variant counts as hung")
  parser.add_argument("--conditions", default="",
                      help="what else ran on the machine, for the record")
  parser.add_argument("--tiny", action="store_true",
                      help="a quick check: " + ", ".join(f"{k}={v}" for k, v in TINY.items()))
  parser.add_argument("--name", default="", help="suffix of the record's name")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  parser.add_argument("--child_out", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.tiny:
    for field, value in TINY.items():
      if getattr(args, field) in (None, parser.get_default(field)):
        setattr(args, field, value)
  # --tiny: mnist160's few batches make the epoch.
  overrides = ["steps_per_epoch=0"] * args.tiny + list(args.override)
  if args.dataset:
    overrides.append(f"dataset={args.dataset}")
  if args.batch_size:
    overrides.append(f"batch_size={args.batch_size}")
  ba.check_overrides(parser, [args.config], overrides)
  args.config_overrides = overrides
  if args.steps:
    for name in args.variants.split(","):
      if args.steps % steps_per_call(name):
        parser.error(f"argument --steps: {args.steps} steps are not whole calls "
                     f"of {name}'s {steps_per_call(name)} steps; pass a "
                     f"multiple of {steps_per_call(name)}")
  return args


# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mnist_jax import config as config_lib
from mnist_jax import data, feed, loop, models, runtime, sharding, steps, timing
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError
from mnist_jax.pooling import max_pool_2x2_first
# pylint: enable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, str(ROOT / "tests"))
import tolerances  # pylint: disable=g-import-not-at-top,wrong-import-position

# The convolution and its patches + matmul form, as cpu_variants.py (the
# isolated-step benchmark) measured them.
from cpu_variants import conv_xla, patches  # pylint: disable=g-import-not-at-top,wrong-import-position
from cpu_variants import conv_matmul as conv_im2col  # pylint: disable=g-import-not-at-top,wrong-import-position


@jax.custom_vjp
def conv_wgrad(x, k):
  """XLA's convolution; its weight gradient patches^T @ dy."""
  return conv_xla(x, k)


def _conv_wgrad_fwd(x, k):
  return conv_xla(x, k), (x, k)


def _conv_wgrad_bwd(residuals, dy):
  x, k = residuals
  kh, kw, ci, co = k.shape
  dk = jnp.einsum("bhwp,bhwo->po", patches(x, kh, kw), dy).reshape(k.shape)
  _, input_vjp = jax.vjp(lambda x_: conv_xla(x_, k), x)  # XLA's own transpose.
  return input_vjp(dy)[0], dk


conv_wgrad.defvjp(_conv_wgrad_fwd, _conv_wgrad_bwd)


@jax.custom_vjp
def linear_wgrad(x, w, b):
  """x @ w + b, its weight gradient the explicit matmul x^T @ dy."""
  return x @ w + b


def _linear_fwd(x, w, b):
  return x @ w + b, (x, w)


def _linear_bwd(residuals, dy):
  x, w = residuals
  return dy @ w.T, x.T @ dy, dy.sum(0)


linear_wgrad.defvjp(_linear_fwd, _linear_bwd)


def _conv_pool_relu(conv_fn):
  """models._conv_pool_relu with another convolution."""
  def apply(conv: nnx.Conv, x):
    return nnx.relu(max_pool_2x2_first(conv_fn(x, conv.kernel[...])) + conv.bias[...])
  return apply


def _dense(layer: nnx.Linear, x):
  return linear_wgrad(x, layer.kernel[...], layer.bias[...])


def speedrun_call(conv1=conv_xla, conv2=conv_xla, dense=None):
  """A models.Speedrun.__call__ with other convolutions or dense layers."""
  first, second = _conv_pool_relu(conv1), _conv_pool_relu(conv2)
  dense = dense or (lambda layer, x: layer(x))

  def call(self, x_BHWC, dropout_key=None):
    x = second(self.conv2, first(self.conv1, x_BHWC))
    x = x.reshape(x.shape[0], -1)
    x = models._drop(self.dropout, nnx.relu(dense(self.dense1, x)), dropout_key, 0)  # pylint: disable=protected-access
    return dense(self.dense2, x)
  return call


ORIGINAL_CALL = models.Speedrun.__call__
MODELS = {  # None: the current model, unpatched.
    "xla": None,
    "conv1_im2col": speedrun_call(conv1=conv_im2col),
    "conv1_wgrad": speedrun_call(conv1=conv_wgrad),
    "convs_im2col": speedrun_call(conv1=conv_im2col, conv2=conv_im2col),
    "convs_wgrad": speedrun_call(conv1=conv_wgrad, conv2=conv_wgrad),
    "dense_wgrad": speedrun_call(dense=_dense),
}


class patched:  # pylint: disable=invalid-name
  """Inside the context, Speedrun's call is variant `name`'s (while its
  programs are traced). The unrollN variants ask steps.make_train_chunk to
  unroll, as loop.compile_steps does on CPU since 1e1b832 (when the records
  were made, this benchmark patched steps._repeat to the same effect)."""

  def __init__(self, name: str):
    self.call = MODELS.get(name)

  def __enter__(self):
    if self.call is not None:
      models.Speedrun.__call__ = self.call

  def __exit__(self, *exc_info):
    models.Speedrun.__call__ = ORIGINAL_CALL


def check_gradients(built, dataset, recipe, idx, names) -> dict:
  """{variant: {max_abs_difference, bound, passed}}: each model variant's
  gradient on the batch `idx` against the current model's (see the
  docstring for the bound)."""
  images = models.normalize(jnp.asarray(dataset.train_images[idx]),
                            recipe.pixel_mean, recipe.pixel_std)
  labels = jnp.asarray(dataset.train_labels[idx])
  params, rest = built.state.params, built.state.rest

  def loss(params, x, y):
    module = nnx.merge(built.graphs.train, params, rest, copy=True)
    logits = module(x)
    targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]),
                                  recipe.label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()

  reference = jax.jit(jax.grad(loss))(params, images, labels)
  per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(
      params, images[:, None], labels[:, None])
  magnitudes = [float(jnp.abs(g).mean(0).max()) for g in jax.tree.leaves(per_example)]
  h, w = images.shape[1:3]
  n_terms = tolerances.sums_of(params, batch=len(labels), positions=(h - 4) * (w - 4))
  results = {}
  for name in names:
    if MODELS.get(name) is None:
      continue
    with patched(name):
      grads = jax.jit(jax.grad(loss))(params, images, labels)
    diffs = [float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(reference), jax.tree.leaves(grads), strict=True)]
    bounds = [tolerances.float32_sum(n_terms, m) for m in magnitudes]
    worst = int(np.argmax([d / b for d, b in zip(diffs, bounds)]))
    results[name] = {"max_abs_difference": diffs[worst], "bound": bounds[worst],
                     "leaf": jax.tree_util.keystr(jax.tree.leaves_with_path(grads)[worst][0]),
                     "n_terms": n_terms,
                     "passed": all(d <= b for d, b in zip(diffs, bounds))}
  return results


def _stats(values) -> dict:
  return {"median": float(np.median(values)), "min": float(min(values)),
          "max": float(max(values)), "windows": len(values)}


def measure(args) -> dict:
  """The child's work: compile, check and time the variants."""
  config = config_lib.from_file(args.config)
  config_lib.apply_overrides(config, args.config_overrides)
  config_lib.validate(config)
  runtime.configure_cpu_devices(config, multi_process=False)
  dataset = data.load(config.dataset, args.data_dir)
  mesh = sharding.make_mesh()
  rt = runtime.Runtime(mesh, jax.default_backend(), True)
  plan = loop.Plan.make(dataset, rt, config.batch_size, 1, config.eval_batch_size,
                        config.steps_per_epoch)
  num_steps = args.steps or plan.steps_per_epoch
  if num_steps > plan.steps_per_epoch:
    raise UserError(f"--steps={num_steps} exceeds the config's epoch of "
                    f"{plan.steps_per_epoch} steps; pass at most that")
  built = state_lib.build(config, dataset.num_classes, plan.steps_per_epoch,
                          rt.backend, image_shape=dataset.image_shape)
  device_data = feed.place_data(dataset, mesh, plan.eval_batch_size)
  replicated = sharding.replicated(mesh)
  state0 = jax.device_put(built.state, replicated)
  data_key = jax.device_put(feed.data_keys(built.members), replicated)
  perm = feed.epoch_permutation(data_key, 1, plan.num_train, plan.steps_per_epoch,
                                plan.batch_size)
  names = args.variants.split(",")
  progress = Path(args.child_out).with_suffix(".progress")
  progress.write_text("checking gradients:")
  with jax.transfer_guard("allow"):
    grad_checks = check_gradients(built, dataset, built.recipe,
                                  np.asarray(perm[0]), names)
  for name, check in grad_checks.items():
    print(f"gradient {name:>14}: max |diff| {check['max_abs_difference']:.3g} "
          f"(bound {check['bound']:.3g}, {check['leaf']})"
          f"{'' if check['passed'] else ' FAILED: not timed'}", flush=True)
  timed = [n for n in names if grad_checks.get(n, {"passed": True})["passed"]]
  default_in_flight = loop.max_calls_in_flight(rt.backend, rt.num_devices)
  runs = {}
  for name in timed:
    k = steps_per_call(name)
    progress.write_text(f"compiling:{name}")
    with patched(name):
      start = time.perf_counter()
      fn = steps.make_train_chunk(built.graphs, built.recipe, built.tx, mesh, k,
                                   unroll=True).lower(
          state0, steps.Totals.zeros(), device_data, perm).compile()
      seconds = time.perf_counter() - start
    in_flight = (int(name.removeprefix("in_flight")) if name.startswith("in_flight")
                 else default_in_flight)
    runs[name] = {"chunks": [loop.Chunk(fn, k)] * (num_steps // k),
                  "in_flight": in_flight, "compile_seconds": seconds}
  wall = {n: [] for n in runs}
  cpu = {n: [] for n in runs}
  final = {}  # Each variant's parameters after its last window.
  for r in range(args.rounds + 1):
    for name, run in runs.items():
      progress.write_text(f"timing:{name}")
      state = jax.block_until_ready(jax.tree.map(jnp.copy, state0))
      start, start_cpu = time.perf_counter(), time.process_time()
      state, totals = loop.run_epoch(run["chunks"], state, device_data, perm,
                                     run["in_flight"])
      jax.block_until_ready((state, totals))
      if r:  # Round 0 warms up.
        wall[name].append(1000 * (time.perf_counter() - start) / num_steps)
        cpu[name].append(1000 * (time.process_time() - start_cpu) / num_steps)
      if r == args.rounds:
        final[name] = jax.device_get(state.params)
    if r:
      print(f"round {r}: " + ", ".join(f"{n} {wall[n][-1]:.2f}" for n in runs)
            + " ms/step", flush=True)
  progress.write_text("done:")
  variants = {}
  for name in names:
    row = {"steps_per_call": steps_per_call(name),
           "max_calls_in_flight": runs[name]["in_flight"] if name in runs else None,
           "gradient_check": grad_checks.get(name)}
    if name in runs:
      row.update(compile_seconds=runs[name]["compile_seconds"],
                 wall_ms_per_step=_stats(wall[name]), cpu_ms_per_step=_stats(cpu[name]))
    if name in runs and "xla" in final:
      # After the same steps from the same state: 0 where the variant
      # computes xla's step bit for bit.
      row["params_max_abs_difference_from_xla"] = max(
          float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
          zip(jax.tree.leaves(final["xla"]), jax.tree.leaves(final[name]), strict=True))
    variants[name] = row
  return {"dataset": dataset.name, "batch_size": config.batch_size,
          "devices": rt.num_devices, "steps_per_window": num_steps,
          "overrides": args.config_overrides, "variants": variants,
          "machine": timing.machine_info()}


def compare_to_current(variants: dict):
  """Each timed row's median over xla's, and whether their spreads are apart."""
  base = variants.get("xla", {}).get("wall_ms_per_step")
  base_cpu = variants.get("xla", {}).get("cpu_ms_per_step")
  if not base:
    return
  for row in variants.values():
    if "wall_ms_per_step" in row:
      w, c = row["wall_ms_per_step"], row["cpu_ms_per_step"]
      row["wall_ratio_to_xla"] = w["median"] / base["median"]
      row["cpu_ratio_to_xla"] = c["median"] / base_cpu["median"]
      row["apart_from_xla"] = (w["max"] < base["min"]) or (w["min"] > base["max"])


def _wait(child: subprocess.Popen, progress: Path, timeout: float) -> int | None:
  """The child's exit status, or None once `timeout` seconds pass without
  news in `progress` (a window begun or ended): then it is killed."""
  last, seen = time.perf_counter(), None
  while True:
    try:
      return child.wait(timeout=1)
    except subprocess.TimeoutExpired:
      pass
    news = progress.stat().st_mtime_ns if progress.exists() else None
    if news != seen:
      last, seen = time.perf_counter(), news
    elif time.perf_counter() - last > timeout:
      child.kill()
      child.wait()
      return None


def _echo(stream, tail: list):
  """Passes the child's stderr on, keeping its last line in `tail`."""
  for line in iter(stream.readline, b""):
    text = line.decode("utf-8", "replace")
    sys.stderr.write(text)
    sys.stderr.flush()
    if text.strip():
      tail[:] = [text.strip()]


def main(args):
  """Runs the measurement in a child; a hung variant is dropped and the rest
  measured again."""
  names = args.variants.split(",")
  hung = {}
  load_before = os.getloadavg()
  while True:
    with tempfile.TemporaryDirectory() as tmp:
      out = Path(tmp) / "child.json"
      argv = [a for a in sys.argv[1:] if not a.startswith("--variants")]
      command = [sys.executable, str(Path(__file__).resolve()), *argv,
                 f"--variants={','.join(names)}", f"--child_out={out}"]
      start = time.perf_counter()
      child = subprocess.Popen(command, stderr=subprocess.PIPE)
      tail = []
      echo = threading.Thread(target=_echo, args=(child.stderr, tail), daemon=True)
      echo.start()
      code = _wait(child, out.with_suffix(".progress"), args.timeout)
      if code is None:  # Hung.
        progress = out.with_suffix(".progress")
        stage, _, current = (progress.read_text() if progress.exists() else "").partition(":")
        if current not in names:
          raise UserError(f"the measurement made no progress for --timeout="
                          f"{args.timeout:g} s before any variant was timed; "
                          f"pass a longer one")
        print(f"{current} hung while {stage} (no progress for {args.timeout:g} s, "
              f"{time.perf_counter() - start:.0f} s into the run): measuring the "
              f"others again without it", file=sys.stderr, flush=True)
        hung[current] = {"hung": True, "while": stage, "timeout_seconds": args.timeout}
        names = [n for n in names if n != current]
        if not names:
          raise UserError("every variant hung") from None
        continue
      echo.join()
      if code:
        last = (tail[-1] if tail else "no error message").removeprefix("error: ")
        raise UserError(f"{last} (in the measuring child process, exit {code})")
      result = json.loads(out.read_text())
      break
  variants = result["variants"]
  for name, row in hung.items():
    variants[name] = {"steps_per_call": steps_per_call(name), **row}
  compare_to_current(variants)
  record = {"benchmark": "step_variants", "config": args.config,
            "conditions": args.conditions, "rounds": args.rounds,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            **result}
  print(f"{'variant':>14} {'wall ms/step':>12} {'(min..max)':>16} {'ratio':>6} "
        f"{'cpu ms/step':>11} {'ratio':>6}")
  for name, row in variants.items():
    if "wall_ms_per_step" not in row:
      print(f"{name:>14} {'hung' if row.get('hung') else 'gradient check failed'}")
      continue
    w, c = row["wall_ms_per_step"], row["cpu_ms_per_step"]
    print(f"{name:>14} {w['median']:12.2f} {w['min']:7.2f}..{w['max']:<7.2f} "
          f"{row.get('wall_ratio_to_xla', float('nan')):6.3f} {c['median']:11.2f} "
          f"{row.get('cpu_ratio_to_xla', float('nan')):6.3f}")
  timing.write_record(
      record, f"step-variants-b{result['batch_size']}-{result['devices']}dev{args.name}",
      out=args.out, results_dir=ROOT / "benchmarks" / "results")


def child_main(args):
  result = measure(args)
  Path(args.child_out).write_text(json.dumps(result))


if __name__ == "__main__":
  ARGS = parse_args()
  ba.run_main(child_main if ARGS.child_out else main, ARGS)
