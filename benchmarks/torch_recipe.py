"""The published PyTorch recipe (tuomaso/train_mnist_fast), importing PyTorch
alone: its network, initialisation, optimizer, schedule, training epoch and
evaluation, which benchmarks/pytorch_cpu.py times in one process against
mnist_jax; and the recipe as its user runs it, `python train_mnist_fast.py`:

  python benchmarks/torch_recipe.py --data_dir=../shared/datasets [--seed=0]

loads MNIST from its IDX gzip files, trains one epoch, evaluates and prints
the test accuracy, a process from start to exit that benchmarks/user_clock.py
times against `mnist-jax train --config=configs/mnist_speedrun.py`. The data
is read by mnist_jax.data (numpy and gzip, as the recipe's own loader: no JAX,
which this module never imports); the images are standardised once, as the
recipe's prepared files are.
"""

import time

STARTED = time.perf_counter()  # The script's start, before its imports.

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
# pylint: enable=g-import-not-at-top,wrong-import-position

# The published recipe's constants.
RECIPE = {"batch_size": 256, "epochs": 1, "learning_rate": 1e-2,
          "betas": (0.7, 0.9), "mean": 0.1307, "std": 0.3081}
EVAL_BATCH = 2000


class TorchSpeedrun(torch.nn.Module):
  """The recipe's network (valid convolutions: 28, 24, 12, 10, 5); PyTorch's
  default initialisation. Another image shape (H, W, C) changes only the
  first convolution's input channels and the first dense layer's inputs, as
  mnist_jax's models.Speedrun does."""

  def __init__(self, num_classes: int, image_shape=(28, 28, 1)):
    super().__init__()
    h, w, c = image_shape
    # Valid 5x5, pool, valid 3x3, pool: 28 -> 24 -> 12 -> 10 -> 5.
    out_h, out_w = ((h - 4) // 2 - 2) // 2, ((w - 4) // 2 - 2) // 2
    self.conv1 = torch.nn.Conv2d(c, 24, kernel_size=5)
    self.conv2 = torch.nn.Conv2d(24, 32, kernel_size=3)
    self.fc1 = torch.nn.Linear(out_h * out_w * 32, 256)
    self.fc2 = torch.nn.Linear(256, num_classes)

  def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
    x = F.relu(F.max_pool2d(self.conv1(x_BCHW), 2))
    x = F.relu(F.max_pool2d(self.conv2(x), 2))
    x = F.relu(self.fc1(torch.flatten(x, 1)))
    return F.log_softmax(self.fc2(x), dim=1)


def make_torch_model(num_classes: int, seed: int,
                     image_shape=(28, 28, 1)) -> TorchSpeedrun:
  torch.manual_seed(seed)  # PyTorch's default init draws from the global generator.
  return TorchSpeedrun(num_classes, image_shape)


def make_torch_optimizer(model: torch.nn.Module, total_steps: int):
  """The recipe's Adam and OneCycleLR."""
  optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["learning_rate"],
                               betas=RECIPE["betas"])
  scheduler = torch.optim.lr_scheduler.OneCycleLR(
      optimizer, max_lr=RECIPE["learning_rate"], total_steps=total_steps,
      cycle_momentum=False)
  return optimizer, scheduler


def torch_normalize(images_BHWC: torch.Tensor) -> torch.Tensor:
  """uint8 [B, H, W, C] (data.Dataset's layout) -> float32 [B, C, H, W]
  (PyTorch's), standardised as the recipe's files."""
  # NCHW strides, as the recipe's tensors have: with C = 1 the permuted view
  # has channels-last strides (784, 1, 28, 1), which .contiguous() keeps (a
  # size-1 axis's stride is ignored) and which sent PyTorch's convolutions
  # down its channels-last path: 88 s of training against 48 s with these
  # strides (one seed each, `--seeds=1 --members=0`, on the 2-core Xeon
  # shared with other jobs: only the ratio means anything).
  x = images_BHWC.permute(0, 3, 1, 2).to(
      torch.float32, memory_format=torch.contiguous_format).mul_(1.0 / 255.0)
  return x.sub_(RECIPE["mean"]).div_(RECIPE["std"])


def steps_per_epoch(num_train: int) -> int:
  return math.ceil(num_train / RECIPE["batch_size"])  # The last batch is partial.


def train_epoch(model, optimizer, scheduler, train_x, train_y, order,
                max_steps: int | None = None):
  """One epoch (or `max_steps` steps) in `order`, a step per batch."""
  batch = RECIPE["batch_size"]
  model.train()
  for i, start in enumerate(range(0, len(order), batch)):
    if max_steps is not None and i >= max_steps:
      break
    idx = order[start:start + batch]
    loss = F.nll_loss(model(train_x[idx]), train_y[idx])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def evaluate(model, test_x, test_y) -> float:
  """Test accuracy."""
  model.eval()
  correct = 0
  with torch.no_grad():
    for start in range(0, len(test_y), EVAL_BATCH):
      out = model(test_x[start:start + EVAL_BATCH])
      correct += (out.argmax(1) == test_y[start:start + EVAL_BATCH]).sum().item()
  return correct / len(test_y)


def tensors(dataset) -> tuple[torch.Tensor, ...]:
  """(train_x, train_y, test_x, test_y) of a data.Dataset, standardised."""
  return (torch_normalize(torch.from_numpy(dataset.train_images.copy())),
          torch.from_numpy(dataset.train_labels.astype("int64")),
          torch_normalize(torch.from_numpy(dataset.test_images.copy())),
          torch.from_numpy(dataset.test_labels.astype("int64")))


def main(argv=None):
  """The recipe as a script: load, train one epoch, evaluate, print."""
  parser = argparse.ArgumentParser(description=main.__doc__)
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
  from mnist_jax import data  # pylint: disable=g-import-not-at-top
  dataset = data.load(args.dataset, args.data_dir)
  train_x, train_y, test_x, test_y = tensors(dataset)
  model = make_torch_model(dataset.num_classes, args.seed, dataset.image_shape)
  optimizer, scheduler = make_torch_optimizer(
      model, steps_per_epoch(len(train_y)) * RECIPE["epochs"])
  order = torch.randperm(len(train_y),
                         generator=torch.Generator().manual_seed(args.seed))
  first_step = time.perf_counter()
  for _ in range(RECIPE["epochs"]):
    train_epoch(model, optimizer, scheduler, train_x, train_y, order)
  trained = time.perf_counter()
  accuracy = evaluate(model, test_x, test_y)
  # One line for the user, with the times benchmarks/user_clock.py records.
  print(f"test accuracy {100 * accuracy:.2f}% ({time.perf_counter() - trained:.2f} "
        f"s evaluating), {trained - first_step:.2f} s training, "
        f"{first_step - STARTED:.2f} s from the script's start to the first "
        f"step; jax imported: {'jax' in sys.modules}", flush=True)


if __name__ == "__main__":
  main()
