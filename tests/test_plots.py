"""The end-of-run plots, drawn from synthetic data."""

import math
import re

import numpy as np
import pytest
from PIL import Image

from mnist_jax import plots

FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                 "Shirt", "Sneaker", "Bag", "Ankle boot")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def history(num_epochs: int) -> list[dict]:
  records = []
  for epoch in range(1, num_epochs + 1):
    records.append({
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 1 - 0.2 / epoch,
        "test_loss": 1.1 / epoch + 0.05,
        "test_accuracy": 1 - 0.25 / epoch,
        "learning_rate": 0.05 * (1 + math.cos(math.pi * epoch / num_epochs)),
        "images_per_sec": 1e4,
    })
  return records


def assert_png(path, min_width=300, min_height=200):
  """A PNG of a sensible size with something drawn on it; returns its pixels."""
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG"
    width, height = image.size
    pixels = np.asarray(image.convert("RGB"), np.int16)
  assert min_width <= width <= 4000 and min_height <= height <= 4000, image.size
  # Not blank: a blank figure is one colour. Drawn ones measured 209 colours
  # and 1.3% of pixels off the background (an empty grid's title and note)
  # to 2,508 and 64% (a confusion matrix).
  colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
  assert len(colours) > 16 and 1 - counts.max() / counts.sum() > 0.005, (
      len(colours), counts.max() / counts.sum())
  return pixels


def changed_columns(a, b) -> np.ndarray:
  """Which columns of two renders of the same size differ, as booleans."""
  assert a.shape == b.shape
  return np.any(a != b, axis=(0, 2))


@pytest.mark.parametrize("num_epochs", [1, 12])
def test_training_curves(tmp_path, num_epochs):
  path = plots.training_curves(history(num_epochs), tmp_path / "sub" / "curves.png")
  assert path == tmp_path / "sub" / "curves.png"
  assert_png(path, min_width=800)


@pytest.fixture(scope="module")
def curves_12_epochs(tmp_path_factory):
  """The pixels of history(12)'s training curves."""
  return assert_png(plots.training_curves(
      history(12), tmp_path_factory.mktemp("curves") / "curves.png"))


@pytest.mark.parametrize("metric, panel", [
    ("train_loss", 0), ("test_loss", 0), ("train_accuracy", 1),
    ("test_accuracy", 1), ("learning_rate", 2)])
def test_each_curve_is_drawn_in_its_panel(tmp_path, curves_12_epochs, metric, panel):
  records, base = history(12), curves_12_epochs
  changed = [{**r, metric: r[metric] * (0.5 if r["epoch"] % 2 else 0.9)}
             for r in records]
  other = assert_png(plots.training_curves(changed, tmp_path / "other.png"))
  # Three panels side by side: the changed values move pixels in theirs.
  width = base.shape[1]
  columns = changed_columns(base, other)
  assert columns[panel * width // 3:(panel + 1) * width // 3].sum() > 20


def test_training_curves_needs_an_epoch(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    plots.training_curves([], tmp_path / "curves.png")


def test_confusion_matrix(tmp_path):
  rng = np.random.default_rng(0)
  confusion_KK = rng.integers(0, 40, (10, 10)) + np.diag(rng.integers(800, 1000, 10))
  confusion_KK[3] = 0  # A class with no test images.
  path = plots.confusion_matrix(confusion_KK, FASHION_NAMES, tmp_path / "confusion.png")
  pixels = assert_png(path, min_width=500, min_height=500)
  # The counts are drawn: two cells' swapped, another picture.
  confusion_KK[[0, 1], [5, 6]] = confusion_KK[[1, 0], [6, 5]] + [300, 0]
  other = plots.confusion_matrix(confusion_KK, FASHION_NAMES, tmp_path / "other.png")
  assert changed_columns(pixels, assert_png(other, 500, 500)).sum() > 20


def test_confusion_matrix_shape_must_match_the_names(tmp_path):
  with pytest.raises(ValueError, match="3 class names"):
    plots.confusion_matrix(np.zeros((10, 10), int), ["a", "b", "c"],
                           tmp_path / "confusion.png")


@pytest.mark.parametrize("n", [0, 3, 16])
def test_prediction_grid(tmp_path, n):
  rng = np.random.default_rng(n)
  images_NHWC = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
  labels_N = rng.integers(0, 10, n)
  predictions_N = np.where(np.arange(n) % 3 == 0, (labels_N + 1) % 10, labels_N)
  probabilities_N = rng.uniform(0.1, 1.0, n)
  path = plots.prediction_grid(images_NHWC, labels_N, predictions_N,
                               probabilities_N, FASHION_NAMES,
                               tmp_path / "grid.png", title="most confident mistakes")
  pixels = assert_png(path, min_width=150, min_height=150)
  if n:  # The images are drawn: other images, another picture.
    other = plots.prediction_grid(255 - images_NHWC, labels_N, predictions_N,
                                  probabilities_N, FASHION_NAMES,
                                  tmp_path / "other.png", title="most confident mistakes")
    assert changed_columns(pixels, assert_png(other, 150, 150)).sum() > 20


def test_no_figures_are_left_open(tmp_path):
  import matplotlib.pyplot as plt
  before = plt.get_fignums()
  plots.training_curves(history(2), tmp_path / "curves.png")
  plots.confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], tmp_path / "c.png")
  assert plt.get_fignums() == before


def test_confident_mistakes_most_confident_first():
  labels_N = np.array([0, 1, 2, 3, 4, 5, 6])
  predictions_N = np.array([1, 1, 0, 3, 0, 0, 6])
  probabilities_N = np.array([0.6, 0.99, 0.9, 0.8, 0.6, 0.7, 0.95])
  # Wrong: 0 (0.6), 2 (0.9), 4 (0.6), 5 (0.7); ties keep the order of index.
  assert plots.confident_mistakes(labels_N, predictions_N, probabilities_N,
                                  3).tolist() == [2, 5, 0]
  assert plots.confident_mistakes(labels_N, predictions_N, probabilities_N,
                                  10).tolist() == [2, 5, 0, 4]
  assert plots.confident_mistakes(labels_N, predictions_N, probabilities_N,
                                  0).tolist() == []


def test_confident_mistakes_when_there_are_none():
  labels_N = np.array([3, 1, 2])
  indices = plots.confident_mistakes(labels_N, labels_N, np.array([0.5, 0.9, 0.7]), 5)
  assert indices.tolist() == [] and indices.dtype.kind == "i"
  assert plots.confident_mistakes([], [], [], 5).tolist() == []


def test_confident_mistakes_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match="shapes differ"):
    plots.confident_mistakes([0, 1], [0], [0.5, 0.5], 1)
  with pytest.raises(ValueError, match="at least 0"):
    plots.confident_mistakes([0], [1], [0.5], -1)


def test_evaluate_plots_without_metrics_draws_the_others_and_says_so(tmp_path):
  """A workdir with a checkpoint but no metrics.jsonl (copied without it, say):
  the plots that need only the checkpoint, one line about the curves, exit 0."""
  from conftest import run_module, synthetic_split, toy_config, write_dataset
  from mnist_jax import checkpoint
  from mnist_jax import state as state_lib
  data_dir = tmp_path / "data"
  write_dataset(data_dir / "toy", *synthetic_split(64, 10, seed=1),
                *synthetic_split(40, 10, seed=2))
  config = toy_config(data_dir, batch_size=16)
  state = state_lib.build(config, 10, 1).state
  checkpoints = checkpoint.Checkpoints(tmp_path / "run" / "checkpoints")
  checkpoints.save(1, state, {"config": config.to_dict(), "num_classes": 10,
                              "class_names": [str(k) for k in range(10)], "epoch": 1})
  checkpoints.wait()
  checkpoints.close()

  result = run_module("mnist_jax", "evaluate", "--workdir=run", "--plots", cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("toy, checkpoint of epoch 1: 40 test images\n")
  drawn = ("confusion_matrix.png", "test_predictions.png", "confident_mistakes.png")
  # Every line, less its time stamp: no traceback, no other chatter.
  assert re.sub(r"^\d\d:\d\d:\d\d ", "", result.stderr, flags=re.MULTILINE) == (
      "the checkpoint of epoch 1 (the newest)\n"
      "wrote run/eval.json\n"
      "training curves skipped: run/metrics.jsonl does not exist\n"
      f"plots: {', '.join(f'run/plots/{name}' for name in drawn)}\n")
  assert sorted(p.name for p in (tmp_path / "run" / "plots").iterdir()) == sorted(drawn)
  for name in drawn:
    assert_png(tmp_path / "run" / "plots" / name, min_width=150, min_height=150)
