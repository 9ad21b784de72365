"""What a finished run leaves to look at: PNG plots in <workdir>/plots."""

from pathlib import Path
from typing import Any

import numpy as np

from mnist_jax import data as data_lib
from mnist_jax import inference

NUM_SAMPLES = 32
NUM_MISTAKES = 32


def write_plots(workdir: Path, logits_fn: inference.LogitsFn, class_names,
                dataset: data_lib.Dataset, history: list[dict[str, Any]],
                batch_size: int, name: str) -> list[Path]:
  """Training curves, confusion matrix, sample predictions, confident mistakes.

  Without a `history` (a workdir without metrics.jsonl) there are no training
  curves; the caller says so.
  """
  # matplotlib takes about a second to import: a run pays for it only when
  # it draws (config.plots), after training, not before its first step.
  from mnist_jax import plots  # pylint: disable=g-import-not-at-top
  folder = Path(workdir) / "plots"
  probabilities_NK = inference.probabilities(logits_fn, dataset.test_images, batch_size)
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
