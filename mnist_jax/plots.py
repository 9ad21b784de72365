"""End-of-run plots as PNG files: training curves, confusion matrix, images.

Functions of plain numpy and Python data. Figures are made with
`matplotlib.figure.Figure` and drawn by Agg, never through pyplot: nothing is
registered in pyplot's global list of figures, so no GUI backend is touched,
the caller's own pyplot state is left alone, and each figure is freed once
saved (`_save` also clears it).
"""

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

_TRAIN_COLOR, _TEST_COLOR = "tab:blue", "tab:orange"
_WRONG_COLOR = "tab:red"


def _save(figure: Figure, path: str | os.PathLike) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  FigureCanvasAgg(figure)
  figure.savefig(path, format="png", dpi=100)
  figure.clear()
  return path


def training_curves(history: Sequence[dict[str, Any]],
                    path: str | os.PathLike) -> Path:
  """Loss, accuracy (%) and learning rate per epoch, from metrics.jsonl's records."""
  if not history:
    raise ValueError("history is empty: no epoch to plot")
  epochs = [r["epoch"] for r in history]
  figure = Figure(figsize=(15, 4.2), layout="constrained")
  loss_ax, accuracy_ax, lr_ax = figure.subplots(1, 3)
  marker = "o" if len(epochs) <= 30 else None  # Else the markers hide the lines.

  for split, color in (("train", _TRAIN_COLOR), ("test", _TEST_COLOR)):
    loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], marker=marker,
                 color=color, label=split)
    accuracy_ax.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history],
                     marker=marker, color=color, label=split)
  loss_ax.set(title="loss", ylabel="cross-entropy")
  best = max(history, key=lambda r: r["test_accuracy"])
  accuracy_ax.set(title=f"accuracy (test: final "
                  f"{100 * history[-1]['test_accuracy']:.2f}%, best "
                  f"{100 * best['test_accuracy']:.2f}% at epoch {best['epoch']})")
  accuracy_ax.yaxis.set_major_formatter(PercentFormatter())

  lr_ax.plot(epochs, [r["learning_rate"] for r in history], marker=marker,
             color="tab:green")
  lr_ax.set(title="learning rate (at each epoch's last step)", ylim=(0, None))
  lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

  for ax in (loss_ax, accuracy_ax, lr_ax):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:  # Else the axis spans 0.95..1.05 in tenths of an epoch.
      ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.grid(alpha=0.3)
  for ax in (loss_ax, accuracy_ax):
    ax.legend()
  return _save(figure, path)


def confusion_matrix(confusion_KK: np.ndarray, class_names: Sequence[str],
                     path: str | os.PathLike) -> Path:
  """Counts in each cell; rows: true class, columns: predicted class.

  The colour is the count as a fraction of its row (its true class), so that
  a class's errors stand out however many images it has.
  """
  confusion_KK = np.asarray(confusion_KK)
  k = len(class_names)
  if confusion_KK.shape != (k, k):
    raise ValueError(f"confusion matrix of shape {confusion_KK.shape} for "
                     f"{k} class names")
  row_totals_K = confusion_KK.sum(axis=1, keepdims=True)
  fraction_KK = confusion_KK / np.maximum(row_totals_K, 1)

  longest = max((len(str(n)) for n in class_names), default=1)
  cell = 0.62 if k <= 20 else 0.3  # Inches.
  side = max(4.0, cell * k)
  margin = 0.6 + 0.075 * min(longest, 30)  # For the names, rotated or not.
  figure = Figure(figsize=(side + margin + 1.6, side + margin + 0.7),
                  layout="constrained")
  ax = figure.subplots()
  image = ax.imshow(fraction_KK, cmap="Blues", vmin=0, vmax=1)
  colorbar = figure.colorbar(image, ax=ax, shrink=0.8)
  colorbar.set_label("fraction of the true class")
  colorbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))

  if k <= 30:  # Numbers in smaller cells would be unreadable.
    digits = len(str(int(confusion_KK.max(initial=0))))
    # A digit is about 0.6 of the font size wide; fill at most 80% of a cell.
    fontsize = min(11, 0.8 * 72 * cell / (0.6 * max(digits, 2)))
    for (i, j), count in np.ndenumerate(confusion_KK):
      color = ("white" if fraction_KK[i, j] > 0.55 else
               "black" if count else "0.7")  # Zeros in grey, out of the way.
      ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize,
              color=color)
  if longest > 3:  # Long names along the bottom would overlap.
    ax.set_xticks(range(k), class_names, rotation=40, ha="right",
                  rotation_mode="anchor")
  else:
    ax.set_xticks(range(k), class_names)
  ax.set_yticks(range(k), class_names)
  ax.set(xlabel="predicted", ylabel="true")
  ax.tick_params(length=0)
  total = int(confusion_KK.sum())
  if total:
    ax.set_title(f"{total} images, accuracy "
                 f"{100 * np.trace(confusion_KK) / total:.2f}%")
  return _save(figure, path)


def prediction_grid(images_NHW: np.ndarray, labels_N: np.ndarray,
                    predictions_N: np.ndarray, probabilities_N: np.ndarray,
                    class_names: Sequence[str], path: str | os.PathLike,
                    title: str = "", columns: int = 8) -> Path:
  """Images, each under its predicted class and that class's probability.

  `probabilities_N` is the probability of the predicted class. A wrong
  prediction's title is red and also names the true class.
  """
  images_NHW = np.asarray(images_NHW)
  n = len(images_NHW)
  if not len(labels_N) == len(predictions_N) == len(probabilities_N) == n:
    raise ValueError(f"{n} images but {len(labels_N)} labels, "
                     f"{len(predictions_N)} predictions and "
                     f"{len(probabilities_N)} probabilities")
  columns = max(1, min(columns, n))
  rows = max(1, -(-n // columns))
  # Wide enough for the title even with few images (e.g. no mistakes at all).
  width = max(1.75 * columns + 0.2, 0.11 * len(title) + 1.0)
  figure = Figure(figsize=(width, 2.0 * rows + 0.5), layout="constrained")
  if title:
    figure.suptitle(title, fontsize=13)
  if n == 0:
    figure.text(0.5, 0.5, "(no images)", ha="center", va="center", fontsize=12)
  for i, ax in enumerate(figure.subplots(rows, columns, squeeze=False).flat):
    ax.set_axis_off()
    if i >= n:
      continue
    image = images_NHW[i]
    if image.ndim == 3 and image.shape[-1] == 1:  # Grayscale [H, W, 1].
      image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    label, predicted = int(labels_N[i]), int(predictions_N[i])
    text = f"{class_names[predicted]} {100 * float(probabilities_N[i]):.0f}%"
    wrong = label != predicted
    if wrong:
      text += f"\ntrue: {class_names[label]}"
    ax.set_title(text, fontsize=9.5, color=_WRONG_COLOR if wrong else "black")
  return _save(figure, path)


def confident_mistakes(labels_N: np.ndarray, predictions_N: np.ndarray,
                       probabilities_N: np.ndarray, k: int) -> np.ndarray:
  """Indices of the (up to) k wrong predictions made with the highest probability.

  Most confident first; ties in order of index. Those are the labels most
  worth checking, and the model's worst failures.
  """
  if k < 0:
    raise ValueError(f"k must be at least 0, got {k}")
  labels_N, predictions_N, probabilities_N = (
      np.asarray(labels_N), np.asarray(predictions_N), np.asarray(probabilities_N))
  if not labels_N.shape == predictions_N.shape == probabilities_N.shape:
    raise ValueError(f"shapes differ: labels {labels_N.shape}, predictions "
                     f"{predictions_N.shape}, probabilities {probabilities_N.shape}")
  wrong_M = np.flatnonzero(labels_N != predictions_N)
  order_M = np.argsort(-probabilities_N[wrong_M], kind="stable")
  return wrong_M[order_M[:k]]


def comparison(results: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
  """Test accuracy per epoch and against training time: mean and min-max per config.

  `results` maps a config name to {"runs": [{"test_accuracy": [...],
  "epoch_seconds": [...]}, ...]}, one run per seed.
  """
  figure = Figure(figsize=(13, 4.8), layout="constrained")
  epoch_ax, time_ax = figure.subplots(1, 2)
  for name, result in results.items():
    # Seeds of one config train the same number of epochs.
    accuracy_SE = 100 * np.array([r["test_accuracy"] for r in result["runs"]])
    seconds_SE = np.cumsum([r["epoch_seconds"] for r in result["runs"]], axis=1)
    epochs = np.arange(1, accuracy_SE.shape[1] + 1)
    mean_E = accuracy_SE.mean(axis=0)
    line, = epoch_ax.plot(epochs, mean_E, marker="o" if len(epochs) <= 30 else None,
                          label=f"{name} ({len(accuracy_SE)} seeds)")
    epoch_ax.fill_between(epochs, accuracy_SE.min(axis=0), accuracy_SE.max(axis=0),
                          color=line.get_color(), alpha=0.2)
    time_ax.plot(seconds_SE.mean(axis=0), mean_E, marker="o" if len(epochs) <= 30 else None,
                 color=line.get_color(), label=name)
  epoch_ax.set(title="test accuracy: mean over seeds, band from min to max",
               xlabel="epoch")
  epoch_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  time_ax.set(title="test accuracy against training time (mean over seeds)",
              xlabel="training seconds (compilation and evaluation excluded)")
  for ax in (epoch_ax, time_ax):
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.grid(alpha=0.3)
    ax.legend()
  return _save(figure, path)
