"""PyTorch and mnist_jax side by side on CPU: one recipe, process and data set.

What is measured: the training time of the speedrun recipe (configs/
mnist_speedrun.py: conv 24 5x5, max-pool, conv 32 3x3, max-pool, dense 256,
dense out; Adam with mnist_jax's one-cycle schedule) at `--batch_size` for
`--epochs`, in PyTorch (eager, a conventional per-batch loop over the whole
data set held as a uint8 tensor) and in mnist_jax's own training path (the
chunks of `train.make_train_chunk`, compiled ahead of time, dispatched by
`train.run_epoch` over `train.epoch_permutation`); then each one's test
accuracy.

How: both frameworks train on the same arrays in the same process (JAX on its
CPU backend: the script sets JAX_PLATFORMS=cpu) with the same number of
threads: `torch.set_num_threads(--threads)`, and for XLA, which sizes its
thread pool from the CPUs the process may run on, the process is pinned to
the first `--threads` of its CPUs (before JAX starts) when that is fewer
than it has. The `--repeats` runs alternate torch, jax, torch, jax,
... so that a drift in the machine's speed affects both alike. Every run
starts from the same fresh initial weights (`--seed`) and trains all the
epochs; its time runs (time.perf_counter) from the first epoch's shuffle to
the end of the last step: PyTorch on CPU is synchronous, JAX's epochs are
waited for with `block_until_ready`. Each epoch drops its last partial
batch, as mnist_jax does. Printed per framework: the median training seconds
(min..max over the runs), images/s and test accuracy, then the ratio
jax seconds / torch seconds ("no measurable difference" when the min..max
ranges overlap).

Excluded from the training time: data loading, model construction and
initialisation, JAX compilation (ahead of time, without the persistent
compilation cache, reported apart), `--warmup_steps` steps of each framework
on a throwaway copy before the first run (first-call allocations, oneDNN
primitive creation), and evaluation (timed apart).

Where the PyTorch side differs from mnist_jax (none changes the recipe):
  - initialisation: the same family as Flax's defaults (weights LeCun normal,
    truncated at 2 standard deviations; biases zero), but torch's own random
    draws; and its own shuffle order (torch.randperm, seeded).
  - layout: NCHW, so the flatten before dense 256 orders its inputs (c, h, w)
    where mnist_jax's NHWC orders them (h, w, c): a fixed permutation of that
    layer's inputs, the same family of functions.
  - schedule: a LambdaLR over the values of mnist_jax's own optax schedule
    (optim.schedule), because torch's OneCycleLR peaks and reaches its floor
    one step earlier than optax.cosine_onecycle_schedule (and ends at lr/25e4
    where optax ends just above it).
  - Adam: torch.optim.Adam's defaults, the same as optax.adam's (b1 0.9, b2
    0.999, eps 1e-8, no weight decay); no torch.compile, no channels_last.

Command (CPU, this repo's checkout, data in ../shared/datasets; needs the
`benchmark` extra, `pip install -e .[benchmark]`):
  python benchmarks/pytorch_cpu.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/pytorch-vs-jax-b256-<N>dev.json.
JAX runs on mnist_jax's default number of virtual CPU devices for the batch
(sharding.auto_cpu_devices: 4 for batch 256 on 2 cores); `--jax_devices=1`
measures the plain single-device path.
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


def _available_cpus() -> list[int]:
  """The CPUs this process may run on."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--threads", type=int, default=len(_available_cpus()),
                      help="threads of both frameworks; default: every CPU "
                      "this process may run on")
  parser.add_argument("--repeats", type=int, default=3,
                      help="full trainings per framework, alternating")
  parser.add_argument("--warmup_steps", type=int, default=5,
                      help="untimed steps of each framework before the runs")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--jax_devices", type=int, default=None,
                      help="virtual XLA CPU devices (sets XLA_FLAGS' "
                      "--xla_force_host_platform_device_count); default: "
                      "mnist_jax's own choice, sharding.auto_cpu_devices")
  parser.add_argument("--out", default=None, help="JSON path; default "
                      "benchmarks/results/<backend>-<device kind>/...")
  args = parser.parse_args(argv)
  for name in ("batch_size", "epochs", "threads", "repeats"):
    if getattr(args, name) <= 0:
      parser.error(f"--{name} must be positive")
  if args.warmup_steps < 0:
    parser.error("--warmup_steps must be 0 or more")
  if args.jax_devices is not None and args.jax_devices <= 0:
    parser.error("--jax_devices must be positive")
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
    from mnist_jax import sharding  # pylint: disable=g-import-not-at-top
    args.jax_devices = sharding.auto_cpu_devices(args.batch_size, args.threads,
                                                 "speedrun")
  if args.jax_devices is not None:
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "",
                   os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = " ".join(
        flags.split() +
        [f"--xla_force_host_platform_device_count={args.jax_devices}"])
  cpus = _available_cpus()
  if args.threads < len(cpus):
    os.sched_setaffinity(0, cpus[:args.threads])


if __name__ == "__main__":
  configure_process(parse_args())

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

try:
  import torch
  import torch.nn.functional as F
except ImportError:
  sys.exit("PyTorch is not installed; pip install -e '.[benchmark]'")

from configs import mnist_speedrun
from mnist_jax import data, models, optim, sharding, timing, train
from mnist_jax.errors import UserError
# pylint: enable=g-import-not-at-top,wrong-import-position


def speedrun_config(batch_size: int, epochs: int,
                    seed: int) -> ml_collections.ConfigDict:
  """configs/mnist_speedrun.py at this batch size, epoch count and seed."""
  config = mnist_speedrun.get_config()
  config.batch_size, config.num_epochs, config.seed = batch_size, epochs, seed
  return config


def onecycle_lrs(config: ml_collections.ConfigDict,
                 steps_per_epoch: int) -> np.ndarray:
  """mnist_jax's learning rate at each training step: float64 [total steps].

  optax's Adam takes step k's rate from schedule(k), k counted from 0.
  """
  schedule = optim.schedule(config, steps_per_epoch)
  steps = jnp.arange(config.num_epochs * steps_per_epoch)
  return np.asarray(jax.vmap(schedule)(steps), np.float64)


# PyTorch.


class TorchSpeedrun(torch.nn.Module):
  """models.Speedrun in PyTorch (valid convolutions: 28, 24, 12, 10, 5)."""

  def __init__(self, num_classes: int):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(1, 24, kernel_size=5)
    self.conv2 = torch.nn.Conv2d(24, 32, kernel_size=3)
    self.dense1 = torch.nn.Linear(5 * 5 * 32, 256)
    self.dense2 = torch.nn.Linear(256, num_classes)

  def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(self.conv1(x_BCHW)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = x.flatten(1)
    return self.dense2(F.relu(self.dense1(x)))


def lecun_normal_(weight: torch.Tensor, generator: torch.Generator):
  """Flax's default kernel init: variance 1/fan_in, truncated normal at +-2 std.

  As jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"):
  the 0.8796... corrects the standard deviation for the truncation.
  """
  fan_in = weight[0].numel()  # in * kh * kw (conv), in (linear).
  std = (1.0 / fan_in) ** 0.5 / .87962566103423978
  torch.nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std,
                              generator=generator)


def make_torch_model(num_classes: int, seed: int) -> TorchSpeedrun:
  model = TorchSpeedrun(num_classes)
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for layer in (model.conv1, model.conv2, model.dense1, model.dense2):
      lecun_normal_(layer.weight, generator)
      layer.bias.zero_()
  return model


def make_torch_optimizer(model: torch.nn.Module,
                         config: ml_collections.ConfigDict,
                         steps_per_epoch: int):
  """(Adam, LambdaLR) following mnist_jax's schedule step by step."""
  lrs = onecycle_lrs(config, steps_per_epoch)
  peak = config.learning_rate
  optimizer = torch.optim.Adam(model.parameters(), lr=peak)
  # The scheduler steps once more after the last training step.
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda k: lrs[min(k, len(lrs) - 1)] / peak)
  return optimizer, scheduler


def torch_normalize(images_BHW: torch.Tensor) -> torch.Tensor:
  """uint8 [B, H, W] -> float32 [B, 1, H, W] in [0, 1], as models.normalize."""
  return images_BHW.unsqueeze(1).to(torch.float32).mul_(1.0 / 255.0)


def prepare_torch(dataset: data.Dataset, config: ml_collections.ConfigDict,
                  warmup_steps: int) -> tuple[Callable[[], dict], dict]:
  """Returns (run, info): `run()` trains a fresh model and evaluates it."""
  # Copies: the loaded arrays may be read-only, which torch warns about.
  train_images = torch.from_numpy(np.array(dataset.train_images))
  train_labels = torch.from_numpy(dataset.train_labels.astype(np.int64))
  test_images = torch.from_numpy(np.array(dataset.test_images))
  test_labels = torch.from_numpy(dataset.test_labels.astype(np.int64))
  num_train, batch = len(train_labels), config.batch_size
  steps_per_epoch = num_train // batch

  def train_steps(model, optimizer, scheduler, perm_SB):
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    for idx_B in perm_SB:
      labels_B = train_labels[idx_B]
      logits_BK = model(torch_normalize(train_images[idx_B]))
      loss = F.cross_entropy(logits_BK, labels_B)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      optimizer.step()
      scheduler.step()
      with torch.no_grad():
        loss_sum += loss.detach() * len(idx_B)
        correct += (logits_BK.argmax(-1) == labels_B).sum()
    return loss_sum, correct

  def evaluate(model):
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
      for start in range(0, len(test_labels), config.eval_batch_size):
        labels_B = test_labels[start:start + config.eval_batch_size]
        logits_BK = model(torch_normalize(
            test_images[start:start + config.eval_batch_size]))
        loss_sum += F.cross_entropy(logits_BK, labels_B, reduction="sum").item()
        correct += (logits_BK.argmax(-1) == labels_B).sum().item()
    return loss_sum / len(test_labels), correct / len(test_labels)

  def run() -> dict:
    model = make_torch_model(dataset.num_classes, config.seed)
    optimizer, scheduler = make_torch_optimizer(model, config, steps_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)

    def train_epochs():
      model.train()
      epochs = []
      for _ in range(config.num_epochs):
        perm_SB = torch.randperm(num_train, generator=shuffle)[
            :steps_per_epoch * batch].view(steps_per_epoch, batch)
        epochs.append(train_steps(model, optimizer, scheduler, perm_SB))
      return epochs

    epochs, train_seconds = timing.timed(train_epochs)
    (test_loss, test_accuracy), eval_seconds = timing.timed(
        lambda: evaluate(model))
    loss_sum, correct = epochs[-1]
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "train_loss": loss_sum.item() / (steps_per_epoch * batch),
            "train_accuracy": correct.item() / (steps_per_epoch * batch),
            "test_loss": test_loss, "test_accuracy": test_accuracy}

  if warmup_steps:
    model = make_torch_model(dataset.num_classes, config.seed)
    optimizer, scheduler = make_torch_optimizer(model, config, steps_per_epoch)
    steps = min(warmup_steps, steps_per_epoch)
    train_steps(model, optimizer, scheduler,
                torch.arange(steps * batch).view(steps, batch))
  params = make_torch_model(dataset.num_classes, 0).parameters()
  info = {"num_params": sum(p.numel() for p in params),
          "steps_per_epoch": steps_per_epoch}
  return run, info


# mnist_jax.


def prepare_jax(dataset: data.Dataset, config: ml_collections.ConfigDict,
                warmup_steps: int) -> tuple[Callable[[], dict], dict]:
  """Returns (run, info): `run()` trains fresh state as train_and_evaluate does.

  The same pieces as train.train_and_evaluate, less its checkpoints, files
  and progress line: the state, the data on device, the chunks compiled ahead
  of time, an epoch permutation and run_epoch per epoch, make_evaluate.
  """
  mesh = sharding.make_mesh()
  plan = train.Plan.make(config, dataset, mesh)
  model, state0, tx = train.create_model_and_state(
      config, dataset.num_classes, plan.steps_per_epoch)
  replicated = sharding.replicated(mesh)
  state0 = jax.device_put(state0, replicated)
  device_data = train.place_data(dataset, mesh, plan.eval_batch_size)
  data_key = jax.device_put(
      jax.random.key_data(jax.random.fold_in(jax.random.key(config.seed), 1)),
      replicated)
  permutation = lambda epoch: train.epoch_permutation(
      data_key, epoch, plan.num_train, plan.steps_per_epoch, plan.batch_size)

  def compile_all():
    perm_SB = permutation(0)
    chunks = {n: train.Chunk(train.make_train_chunk(model, tx, mesh, n).lower(
        state0, train.Totals.zeros(), device_data, perm_SB).compile(), n)
              for n in set(plan.calls)}
    num_eval_batches = len(device_data.test_labels) // plan.eval_batch_size
    evaluate = train.make_evaluate(
        model, mesh, plan.eval_batch_size, num_eval_batches).lower(
            state0, device_data).compile()
    return [chunks[n] for n in plan.calls], evaluate

  (calls, evaluate), compile_seconds = timing.timed(compile_all)
  max_in_flight = train.max_calls_in_flight(plan.backend, plan.num_devices)
  fresh_state = lambda: jax.block_until_ready(jax.tree.map(jnp.copy, state0))

  def run() -> dict:
    holder = {"state": fresh_state()}  # The calls donate (consume) it.

    def train_epochs():
      epochs = []
      for epoch in range(1, config.num_epochs + 1):
        holder["state"], totals = train.run_epoch(
            calls, holder["state"], device_data, permutation(epoch),
            max_in_flight)
        totals.steps.block_until_ready()  # As train_and_evaluate, each epoch.
        epochs.append(totals)
      return jax.block_until_ready(epochs)

    epochs, train_seconds = timing.timed(train_epochs)
    (test_loss, test_accuracy), eval_seconds = timing.timed(
        lambda: evaluate(holder["state"], device_data)[0].means())
    train_loss, train_accuracy = epochs[-1].means()
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
            "train_loss": train_loss, "train_accuracy": train_accuracy,
            "test_loss": test_loss, "test_accuracy": test_accuracy}

  if warmup_steps:
    warmup_calls, steps = [], 0
    for call in calls:
      if steps >= warmup_steps:
        break
      warmup_calls.append(call)
      steps += call.num_steps
    state, _ = train.run_epoch(warmup_calls, fresh_state(), device_data,
                               permutation(0), max_in_flight)
    jax.block_until_ready(state)
  info = {"num_params": models.num_params(state0.params),
          "compile_seconds": compile_seconds,
          "steps_per_epoch": plan.steps_per_epoch,
          "steps_per_call": plan.steps_per_call,
          "device_count": plan.num_devices}
  return run, info


# The comparison.


def summarize(runs: list[dict], images_per_run: int) -> dict:
  seconds = [r["train_seconds"] for r in runs]
  summary = {"train_seconds": {"median": statistics.median(seconds),
                               "min": min(seconds), "max": max(seconds)},
             "images_per_sec": timing.rate_stats(images_per_run, seconds),
             "test_accuracy_mean": statistics.mean(
                 r["test_accuracy"] for r in runs)}
  summary["runs"] = runs
  return summary


def compare(torch_summary: dict, jax_summary: dict) -> dict:
  """jax seconds / torch seconds (medians), and whether the ranges are apart."""
  t, j = torch_summary["train_seconds"], jax_summary["train_seconds"]
  return {"jax_over_torch_seconds": j["median"] / t["median"],
          "differs": not timing.overlap(j, t)}


def _describe(name: str, summary: dict, repeats: int) -> str:
  s, rate = summary["train_seconds"], summary["images_per_sec"]
  accuracies = [r["test_accuracy"] for r in summary["runs"]]
  accuracy = f"{100 * statistics.mean(accuracies):.2f}%"
  if max(accuracies) > min(accuracies):
    accuracy += f" ({100 * min(accuracies):.2f}..{100 * max(accuracies):.2f}%)"
  return (f"{name:>10}: {s['median']:6.2f} s median training (min "
          f"{s['min']:.2f}, max {s['max']:.2f}; {repeats} run(s)), "
          f"{rate['median']:,.0f} img/s, test accuracy {accuracy}")


def main(args: argparse.Namespace):
  torch.set_num_threads(args.threads)
  if jax.default_backend() != "cpu":
    sys.exit(f"JAX runs on {jax.default_backend()}, not the CPU")
  dataset = data.load(args.dataset, args.data_dir)
  config = speedrun_config(args.batch_size, args.epochs, args.seed)
  jax_run, jax_info = prepare_jax(dataset, config, args.warmup_steps)
  torch_run, torch_info = prepare_torch(dataset, config, args.warmup_steps)
  if torch_info["num_params"] != jax_info["num_params"]:
    sys.exit(f"parameter counts differ: torch {torch_info['num_params']}, "
             f"jax {jax_info['num_params']}")
  steps_per_epoch = jax_info["steps_per_epoch"]
  images_per_run = steps_per_epoch * args.batch_size * args.epochs
  print(f"{dataset.name}: speedrun model ({jax_info['num_params']:,} "
        f"parameters), batch {args.batch_size}, {args.epochs} epoch(s) of "
        f"{steps_per_epoch} steps; {args.threads} thread(s), "
        f"{jax_info['device_count']} JAX device(s); jax compiled in "
        f"{jax_info['compile_seconds']:.2f} s", flush=True)

  runs = {"torch": [], "jax": []}
  for repeat in range(args.repeats):
    for name, run in (("torch", torch_run), ("jax", jax_run)):
      runs[name].append(run())
      r = runs[name][-1]
      print(f"  run {repeat + 1}/{args.repeats} {name:>5}: "
            f"{r['train_seconds']:.2f} s, test accuracy "
            f"{100 * r['test_accuracy']:.2f}%", flush=True)

  torch_summary = summarize(runs["torch"], images_per_run)
  jax_summary = summarize(runs["jax"], images_per_run)
  torch_summary.update(torch_info)
  jax_summary.update(jax_info)
  comparison = compare(torch_summary, jax_summary)
  print(_describe("pytorch", torch_summary, args.repeats))
  print(_describe("mnist_jax", jax_summary, args.repeats))
  verdict = ("a single run each: no spread to judge by" if args.repeats == 1
             else "the ranges are apart" if comparison["differs"]
             else "no measurable difference: the ranges overlap")
  print(f"jax / torch training seconds: "
        f"{comparison['jax_over_torch_seconds']:.2f} ({verdict})")

  machine = timing.machine_info()
  record = {
      "benchmark": "pytorch_vs_jax", "dataset": dataset.name,
      "model": config.model, "batch_size": args.batch_size,
      "epochs": args.epochs, "steps_per_epoch": steps_per_epoch,
      "seed": args.seed, "repeats": args.repeats,
      "warmup_steps": args.warmup_steps, "threads": args.threads,
      "cpu_affinity": _available_cpus(),
      "config": config.to_dict(),
      "torch": {"version": torch.__version__,
                "num_threads": torch.get_num_threads(),
                "num_interop_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available()},
      "machine": machine,
      "results": {"torch": torch_summary, "jax": jax_summary},
      **comparison,
  }
  timing.write_record(
      record, f"pytorch-vs-jax-b{args.batch_size}-{machine['device_count']}dev",
      out=args.out, results_dir=ROOT / "benchmarks" / "results")


if __name__ == "__main__":
  try:
    main(parse_args())
  except UserError as e:  # E.g. a batch size that the devices do not divide.
    sys.exit(f"error: {e}")
