"""Where XLA:CPU spends the speedrun step's time, and what we tried against it.

Two measurements, each on `--devices` virtual CPU devices with the batch
split over them (as mnist_jax does):
  ops       the pieces of one step at `--batch_size`, each jitted and timed
            alone: forward, gradient with only some layers trainable, each
            convolution's forward / weight-gradient / input-gradient, the
            ReLU + max-pool forward and backward.
  variants  whole train steps (gradient and Adam update) of the same model
            written differently: XLA convolutions (mnist_jax's model),
            pooling before ReLU and bias, and convolutions whose weight
            gradient (custom VJP) or whole computation is patches + matmul.
            Every variant's gradient is first checked against the XLA one.
Times are medians of `--repeats` rounds of `--steps` steps, each step waited
for (multi-device XLA:CPU must not queue many steps); rounds interleave the
variants. Random inputs: data loading is not part of it.

Command (CPU):
  python benchmarks/cpu_variants.py --devices=1 --batch_size=128
  python benchmarks/cpu_variants.py --devices=4 --batch_size=256 --sections=variants
  python benchmarks/cpu_variants.py --sections=variants --variants=xla_conv \
      --xla_flags=--xla_cpu_multi_thread_eigen=false --name=-no-eigen-threads
writes benchmarks/results/<backend>-<device kind>/cpu-variants-b<B>-<N>dev.json.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_args as ba  # pylint: disable=g-import-not-at-top,wrong-import-position


SECTIONS = ("ops", "variants")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=ba.positive_int, default=1)
  parser.add_argument("--batch_size", type=ba.positive_int, default=128)
  parser.add_argument("--sections", default="ops,variants", type=ba.names(SECTIONS))
  parser.add_argument("--steps", type=ba.positive_int, default=20)
  parser.add_argument("--repeats", type=ba.positive_int, default=7)
  parser.add_argument("--variants", default=None,
                      help="comma-separated subset of the variants; default all")
  parser.add_argument("--xla_flags", default="",
                      help="extra XLA_FLAGS, e.g. XLA:CPU flags that select "
                      "other kernels (recorded with the machine)")
  parser.add_argument("--name", default="", help="suffix of the record's name")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.batch_size % args.devices:
    parser.error(f"argument --batch_size: {args.batch_size} does not split "
                 f"over --devices={args.devices}; pass a multiple of "
                 f"{args.devices}")
  return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # Before JAX starts.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.devices} "
                             + ARGS.xla_flags)

sys.path.insert(0, str(ROOT))
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from mnist_jax import models, sharding, timing  # pylint: disable=g-import-not-at-top,wrong-import-position

DIMS = ("NHWC", "HWIO", "NHWC")


def conv_xla(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DIMS)


def patches(x_BHWC, kh, kw):
  """[B, H-kh+1, W-kw+1, kh*kw*C]: each output pixel's receptive field."""
  _, h, w, _ = x_BHWC.shape
  oh, ow = h - kh + 1, w - kw + 1
  return jnp.concatenate([x_BHWC[:, i:i + oh, j:j + ow, :]
                          for i in range(kh) for j in range(kw)], axis=-1)


def conv_matmul(x, w):
  kh, kw, ci, co = w.shape
  return patches(x, kh, kw) @ w.reshape(kh * kw * ci, co)


@jax.custom_vjp
def conv_matmul_wgrad(x, w):
  """XLA's convolution forward; weight gradient as patches^T @ dy."""
  return conv_xla(x, w)


def _fwd(x, w):
  return conv_xla(x, w), (x, w)


def _bwd(residuals, dy):
  x, w = residuals
  kh, kw, ci, co = w.shape
  dw = jnp.einsum("bhwk,bhwo->ko", patches(x, kh, kw), dy).reshape(kh, kw, ci, co)
  dx = jax.lax.conv_general_dilated(
      dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), (1, 1),
      ((kh - 1, kh - 1), (kw - 1, kw - 1)), dimension_numbers=DIMS)
  return dx, dw


conv_matmul_wgrad.defvjp(_fwd, _bwd)


def max_pool_slices(x_BHWC):
  """2x2 max-pool as the maximum of four strided slices: its gradient is
  elementwise selects instead of reduce-max's indicator, count and divide."""
  return jnp.maximum(jnp.maximum(x_BHWC[:, 0::2, 0::2], x_BHWC[:, 0::2, 1::2]),
                     jnp.maximum(x_BHWC[:, 1::2, 0::2], x_BHWC[:, 1::2, 1::2]))


@jax.custom_vjp
def max_pool_mask(x_BHWC):
  """2x2 max-pool (reshape and max) whose gradient goes to every input equal
  to its window's maximum, in one select (ties, rare in float, each get it)."""
  return models.max_pool_2x2(x_BHWC)


def _pool_fwd(x):
  y = models.max_pool_2x2(x)
  return y, (x, y)


def _pool_bwd(residuals, dy):
  x, y = residuals
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c)
  hit = windows == y[:, :, None, :, None, :]
  return (jnp.where(hit, dy[:, :, None, :, None, :], 0.0).reshape(b, h, w, c),)


max_pool_mask.defvjp(_pool_fwd, _pool_bwd)


@jax.custom_vjp
def max_pool_first(x_BHWC):
  """2x2 max-pool whose gradient goes to the first maximum of each window
  (row by row), as PyTorch's max_pool2d routes it."""
  return models.max_pool_2x2(x_BHWC)


def _first_bwd(residuals, dy):
  x, y = residuals
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c)
  hit = windows == y[:, :, None, :, None, :]
  h00, h01, h10, h11 = hit[:, :, 0, :, 0], hit[:, :, 0, :, 1], hit[:, :, 1, :, 0], hit[:, :, 1, :, 1]
  t01 = h01 & ~h00
  t10 = h10 & ~(h00 | h01)
  t11 = ~(h00 | h01 | h10)
  take = jnp.stack([jnp.stack([h00, t01], axis=3), jnp.stack([t10, t11], axis=3)], axis=2)
  return (jnp.where(take, dy[:, :, None, :, None, :], 0.0).reshape(b, h, w, c),)


max_pool_first.defvjp(_pool_fwd, _first_bwd)


def speedrun(conv1, conv2, pool_first=False, pool=models.max_pool_2x2,
             bias_first=False):
  """The speedrun model as a function of a parameter dict."""
  def apply(p, x):
    if bias_first:  # As nnx.Conv computes it: the bias before the pool.
      h = jax.nn.relu(pool(conv1(x, p["w1"]) + p["b1"]))
      h = jax.nn.relu(pool(conv2(h, p["w2"]) + p["b2"]))
    elif pool_first:  # max commutes with + bias and with ReLU: 4x fewer elements.
      h = jax.nn.relu(pool(conv1(x, p["w1"])) + p["b1"])
      h = jax.nn.relu(pool(conv2(h, p["w2"])) + p["b2"])
    else:
      h = pool(jax.nn.relu(conv1(x, p["w1"]) + p["b1"]))
      h = pool(jax.nn.relu(conv2(h, p["w2"]) + p["b2"]))
    h = h.reshape(h.shape[0], -1)
    return jax.nn.relu(h @ p["w3"] + p["b3"]) @ p["w4"] + p["b4"]
  return apply


VARIANTS = {
    "xla_conv": speedrun(conv_xla, conv_xla),
    "pool_before_relu": speedrun(conv_xla, conv_xla, pool_first=True),
    "matmul_wgrad_both": speedrun(conv_matmul_wgrad, conv_matmul_wgrad),
    "matmul_wgrad_conv1": speedrun(conv_matmul_wgrad, conv_xla),
    "matmul_wgrad_conv2": speedrun(conv_xla, conv_matmul_wgrad),
    "matmul_conv2": speedrun(conv_xla, conv_matmul),
    "pool_slices": speedrun(conv_xla, conv_xla, pool=max_pool_slices),
    "pool_mask": speedrun(conv_xla, conv_xla, pool=max_pool_mask),
    "pool_mask_first": speedrun(conv_xla, conv_xla, pool_first=True, pool=max_pool_mask),
    "pool_firstmax_first": speedrun(conv_xla, conv_xla, pool_first=True, pool=max_pool_first),
    "pool_firstmax_bias_first": speedrun(conv_xla, conv_xla, pool=models.max_pool_2x2_first,
                                         bias_first=True),
    "pool_firstmax_bias_after": speedrun(conv_xla, conv_xla, pool_first=True,
                                         pool=models.max_pool_2x2_first),
}


def _inputs(batch, mesh):
  ks = jax.random.split(jax.random.key(0), 6)
  params = {"w1": jax.random.normal(ks[0], (5, 5, 1, 24)) * 0.2, "b1": jnp.zeros(24),
            "w2": jax.random.normal(ks[1], (3, 3, 24, 32)) * 0.07, "b2": jnp.zeros(32),
            "w3": jax.random.normal(ks[2], (800, 256)) * 0.03, "b3": jnp.zeros(256),
            "w4": jax.random.normal(ks[3], (256, 10)) * 0.06, "b4": jnp.zeros(10)}
  x = jax.random.uniform(ks[4], (batch, 28, 28, 1))
  y = jax.random.randint(ks[5], (batch,), 0, 10)
  split = sharding.batch_sharded(mesh)
  return (jax.device_put(params, sharding.replicated(mesh)),
          jax.device_put(x, split), jax.device_put(y, split))


def _time(fns: dict, args_of: dict, steps: int, repeats: int) -> dict:
  """Median ms per call of each fn (interleaved rounds, each call waited for)."""
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args_of[name]))
  ms = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      for _ in range(steps):
        jax.block_until_ready(fn(*args_of[name]))
      ms[name].append(1000 * (time.perf_counter() - start) / steps)
  return {name: {"median_ms": float(np.median(v)), "min_ms": min(v), "max_ms": max(v)}
          for name, v in ms.items()}


def _loss(model):
  return lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
      model(p, x), y).mean()


def ops(batch, mesh, steps, repeats) -> dict:
  params, x, y = _inputs(batch, mesh)
  loss = _loss(VARIANTS["xla_conv"])

  def grad_of(names):
    def g(p, x, y):
      return jax.grad(lambda t: loss({**p, **t}, x, y))({k: p[k] for k in names})
    return jax.jit(g)

  split = sharding.batch_sharded(mesh)
  h1 = jax.device_put(jnp.ones((batch, 12, 12, 24)), split)
  a1 = jax.device_put(jnp.ones((batch, 24, 24, 24)), split)
  dy1 = jax.device_put(jnp.ones((batch, 24, 24, 24)), split)
  dy2 = jax.device_put(jnp.ones((batch, 10, 10, 32)), split)
  d1 = jax.device_put(jnp.ones((batch, 12, 12, 24)), split)
  wgrad = lambda a, w, dy: jax.vjp(lambda w: conv_xla(a, w), w)[1](dy)
  igrad = lambda a, w, dy: jax.vjp(lambda a: conv_xla(a, w), a)[1](dy)
  relu_pool = lambda a, d: jax.vjp(lambda a: models.max_pool_2x2(jax.nn.relu(a)), a)[1](d)
  fns = {
      "forward": (jax.jit(VARIANTS["xla_conv"]), (params, x)),
      "grad, dense layers only": (grad_of(["w3", "b3", "w4", "b4"]), (params, x, y)),
      "grad, conv2 and dense": (grad_of(["w2", "b2", "w3", "b3", "w4", "b4"]), (params, x, y)),
      "grad, all": (grad_of(list(params)), (params, x, y)),
      "conv1 forward": (jax.jit(conv_xla), (x, params["w1"])),
      "conv1 weight grad": (jax.jit(wgrad), (x, params["w1"], dy1)),
      "conv2 forward": (jax.jit(conv_xla), (h1, params["w2"])),
      "conv2 weight grad": (jax.jit(wgrad), (h1, params["w2"], dy2)),
      "conv2 input grad": (jax.jit(igrad), (h1, params["w2"], dy2)),
      "relu+pool1 forward and backward": (jax.jit(relu_pool), (a1, d1)),
  }
  return _time({k: f for k, (f, _) in fns.items()}, {k: a for k, (_, a) in fns.items()},
               steps, repeats)


def variants(batch, mesh, steps, repeats, names=None) -> dict:
  params, x, y = _inputs(batch, mesh)
  tx = optax.adam(1e-3)
  opt_state = jax.device_put(tx.init(params), sharding.replicated(mesh))
  reference = jax.grad(_loss(VARIANTS["xla_conv"]))(params, x, y)
  fns, args_of, errors = {}, {}, {}
  for name, model in VARIANTS.items():
    if names and name not in names:
      continue
    grads = jax.grad(_loss(model))(params, x, y)
    errors[name] = max(float(jnp.abs(a - b).max() / jnp.abs(a).max())
                       for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(grads)))
    loss = _loss(model)

    def step(p, o, x, y, loss=loss):
      updates, o = tx.update(jax.grad(loss)(p, x, y), o, p)
      return optax.apply_updates(p, updates), o

    fns[name], args_of[name] = jax.jit(step), (params, opt_state, x, y)
  timed = _time(fns, args_of, steps, repeats)
  for name in timed:
    timed[name]["images_per_sec"] = batch / timed[name]["median_ms"] * 1000
    timed[name]["max_relative_grad_difference"] = errors[name]
  return timed


def main(args):
  mesh = sharding.make_mesh()
  sharding.check_batch_size(args.batch_size, mesh, "--batch_size")
  record = {"benchmark": "cpu_variants", "batch_size": args.batch_size,
            "steps": args.steps, "repeats": args.repeats,
            "machine": timing.machine_info()}
  names = args.variants.split(",") if args.variants else None
  unknown = sorted(set(names or ()) - set(VARIANTS))
  if unknown:
    ba.fail(f"--variants: unknown {', '.join(unknown)}; choose from "
            f"{', '.join(VARIANTS)}")
  for section in args.sections.split(","):
    if section == "ops":
      record[section] = ops(args.batch_size, mesh, args.steps, args.repeats)
    else:  # variants
      record[section] = variants(args.batch_size, mesh, args.steps, args.repeats, names)
    for name, r in record[section].items():
      print(f"{section:>8} {name:>32}: {r['median_ms']:7.2f} ms "
            f"({r['min_ms']:.2f}..{r['max_ms']:.2f})", flush=True)
  timing.write_record(record, f"cpu-variants-b{args.batch_size}-{args.devices}dev{args.name}",
                      out=args.out, results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  ba.run_main(main, ARGS)
