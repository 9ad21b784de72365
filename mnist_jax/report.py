"""What a finished run leaves to look at: PNG plots in <workdir>/plots."""

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from mnist_jax import data as data_lib
from mnist_jax import plots

NUM_SAMPLES = 32
NUM_MISTAKES = 32


LogitsFn = Callable[[np.ndarray], jax.Array]  # uint8 [B, H, W, C] -> [B, K]


def probabilities(logits_fn: LogitsFn, images_NHW: np.ndarray,
                  batch_size: int) -> np.ndarray:
  """Class probabilities [N, K] for uint8 images [N, H, W, C], on the host.

  Every batch has `batch_size` images (the last is padded), so the function
  compiles once.
  """
  out = []
  for start in range(0, len(images_NHW), batch_size):
    batch = images_NHW[start:start + batch_size]
    padded = np.pad(batch, ((0, batch_size - len(batch)),) + ((0, 0),) * (batch.ndim - 1))
    logits_BK = logits_fn(padded)[:len(batch)]
    out.append(np.asarray(jax.nn.softmax(logits_BK, axis=-1)))
  return np.concatenate(out)


def write_plots(workdir: Path, logits_fn: LogitsFn, class_names, dataset: data_lib.Dataset,
                history: list[dict[str, Any]], batch_size: int, name: str) -> list[Path]:
  """Training curves, confusion matrix, sample predictions, confident mistakes.

  Without a `history` (a workdir without metrics.jsonl) there are no training
  curves; the caller says so.
  """
  folder = Path(workdir) / "plots"
  probabilities_NK = probabilities(logits_fn, dataset.test_images, batch_size)
  labels_N = dataset.test_labels
  predictions_N = probabilities_NK.argmax(-1)
  confidence_N = probabilities_NK.max(-1)
  num_classes = len(class_names)
  confusion_KK = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion_KK, (labels_N, predictions_N), 1)
  accuracy = float(np.trace(confusion_KK)) / len(labels_N)

  written = []
  if history:
    written.append(plots.training_curves(history, folder / "training_curves.png"))
  written.append(plots.confusion_matrix(confusion_KK, class_names,
                                        folder / "confusion_matrix.png"))
  # The same test images every run: the first ones, in file order.
  sample = np.arange(min(NUM_SAMPLES, len(labels_N)))
  written.append(plots.prediction_grid(
      dataset.test_images[sample], labels_N[sample], predictions_N[sample],
      confidence_N[sample], class_names, folder / "test_predictions.png",
      title=f"{name}: first test images ({100 * accuracy:.2f}% of all correct)"))
  wrong = plots.confident_mistakes(labels_N, predictions_N, confidence_N,
                                   NUM_MISTAKES)
  written.append(plots.prediction_grid(
      dataset.test_images[wrong], labels_N[wrong], predictions_N[wrong],
      confidence_N[wrong], class_names, folder / "confident_mistakes.png",
      title=f"{name}: the most confident of {int((predictions_N != labels_N).sum())} "
            f"mistakes"))
  return written
