"""Evaluates a trained run: `python -m mnist_jax.evaluate --workdir=DIR`.

Restores a checkpoint of DIR (`--checkpoint`: by default the best by
validation accuracy where the run kept one, else the last) and reports the
test loss, top-1 and top-5 accuracy, per-class accuracy and the confusion
matrix, on the console and in DIR/eval.json. `--ema` evaluates the moving average of the
weights instead (runs trained with config.ema_decay > 0); `--member=K` picks
one model of a run of several (config.num_seeds, config.sweep).
"""

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging

from mnist_jax import cli, feed, fileio, inference, outputs, sharding, steps
from mnist_jax import report as report_lib
from mnist_jax import data as data_lib
from mnist_jax.errors import UserError
from mnist_jax.trained import Trained, load_trained

_WORKDIR = cli.workdir_flag()
_MEMBER = cli.member_flag()
_CHECKPOINT = cli.checkpoint_flag()
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where the dataset is, if not where training found it.")
_EMA = flags.DEFINE_bool(
    "ema", False, "Evaluate the moving average of the weights (a run trained "
    "with config.ema_decay > 0) instead of the weights themselves.")
_PLOTS = flags.DEFINE_bool(
    "plots", False, "Also (re)draw the run's plots in <workdir>/plots from this "
    "checkpoint, and its training curves from metrics.jsonl if it has one.")


def make_detailed_evaluate(trained: Trained, mesh, eval_batch_size: int,
                           num_batches: int):
  """f(state, data) -> sums of loss, top-1, top-5, and the confusion matrix."""
  num_classes = len(trained.class_names)
  top_k = min(5, num_classes)

  def evaluate(state, data: feed.DeviceData):
    def add_batch(sums, images_BHWC, labels_B, mask_B):
      logits_BK = steps.eval_logits(trained.graphs, trained.recipe, state, images_BHWC)
      losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BK, labels_B)
      _, top_BT = jax.lax.top_k(logits_BK, top_k)
      in_top_B = jnp.any(top_BT == labels_B[:, None], axis=-1)
      predicted_B = jnp.argmax(logits_BK, -1)
      confusion_KK = jnp.zeros((num_classes, num_classes), jnp.int32).at[
          labels_B, predicted_B].add(mask_B.astype(jnp.int32))
      return {"loss": sums["loss"] + jnp.sum(jnp.where(mask_B, losses_B, 0.0)),
              "top_k": sums["top_k"] + jnp.sum(in_top_B & mask_B, dtype=jnp.int32),
              "confusion": sums["confusion"] + confusion_KK}
    zeros = {"loss": jnp.float32(0), "top_k": jnp.int32(0),
             "confusion": jnp.zeros((num_classes, num_classes), jnp.int32)}
    return steps.scan_test_set(add_batch, zeros, data, mesh, eval_batch_size,
                               num_batches)

  return jax.jit(evaluate)


def load_dataset(trained: Trained, data_dir: str | None = None) -> data_lib.Dataset:
  """The dataset the run was trained on, from `data_dir` if given."""
  config = trained.config
  return data_lib.load(config.dataset, data_dir or config.data_dir,
                       config.data_source, config.dataset_format, config.image_size)


def evaluate_trained(trained: Trained, dataset: data_lib.Dataset) -> dict[str, Any]:
  config = trained.config
  if dataset.num_classes != len(trained.class_names):
    raise UserError(f"{dataset.name} now has {dataset.num_classes} classes, "
                    f"the checkpoint {len(trained.class_names)}")
  mesh = sharding.make_mesh()
  # The same evaluation batch as training used, so the numbers agree exactly.
  num_test = len(dataset.test_labels)
  eval_batch_size = feed.evaluation_batch_size(config.eval_batch_size, num_test,
                                              mesh.devices.size)
  device_data = feed.place_data(dataset, mesh, eval_batch_size)
  sums = jax.device_get(make_detailed_evaluate(
      trained, mesh, eval_batch_size,
      len(device_data.test_labels) // eval_batch_size)(trained.state, device_data))
  confusion = np.asarray(sums["confusion"])
  per_class_count = confusion.sum(axis=1)
  return {
      "workdir_epoch": trained.epoch,
      "dataset": dataset.name,
      "num_test_images": int(confusion.sum()),
      "test_loss": float(sums["loss"]) / num_test,
      "test_accuracy": float(np.trace(confusion)) / num_test,
      "top1_accuracy": float(np.trace(confusion)) / num_test,
      f"top{min(5, dataset.num_classes)}_accuracy": float(sums["top_k"]) / num_test,
      "per_class_accuracy": {
          name: float(confusion[k, k] / per_class_count[k]) if per_class_count[k] else None
          for k, name in enumerate(trained.class_names)},
      "class_names": list(trained.class_names),
      "confusion_matrix": confusion.tolist(),  # Rows: true class; columns: predicted.
  }


def format_report(report: dict[str, Any]) -> str:
  names = report["class_names"]
  top_key = next(k for k in report if k.startswith("top") and k != "top1_accuracy")
  lines = [f"{report['dataset']}, checkpoint of epoch {report['workdir_epoch']}: "
           f"{report['num_test_images']} test images",
           f"test loss {report['test_loss']:.4f}  accuracy "
           f"{100 * report['test_accuracy']:.2f}%  {top_key.split('_')[0]} "
           f"{100 * report[top_key]:.2f}%", "per-class accuracy:"]
  width = max(len(n) for n in names)
  for name, accuracy in report["per_class_accuracy"].items():
    shown = "-" if accuracy is None else f"{100 * accuracy:6.2f}%"
    lines.append(f"  {name:>{width}}  {shown}")
  lines.append("confusion matrix (rows: true, columns: predicted):")
  for name, row in zip(names, report["confusion_matrix"]):
    lines.append(f"  {name:>{width}} " + " ".join(f"{v:5d}" for v in row))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the workdir of a training run")
  workdir = Path(_WORKDIR.value)
  trained = load_trained(workdir, _MEMBER.value, _CHECKPOINT.value)
  if _EMA.value:
    trained = trained.with_ema_weights()
  dataset = load_dataset(trained, _DATA_DIR.value)
  report = evaluate_trained(trained, dataset)
  report["weights"] = "moving average" if _EMA.value else "trained"
  fileio.write_json_atomic(workdir / "eval.json", report)
  print(format_report(report))
  logging.info("wrote %s", workdir / "eval.json")
  if _PLOTS.value:
    config = trained.config
    history = outputs.read_metrics(workdir, trained.epoch)
    if not history:  # A checkpoint copied without it, say: the rest still plot.
      metrics = workdir / "metrics.jsonl"
      logging.warning("training curves skipped: %s %s", metrics,
                      "has no epoch to plot" if metrics.exists() else "does not exist")
    written = report_lib.write_plots(
        workdir, inference.bound_logits_fn(trained), trained.class_names, dataset, history,
        feed.evaluation_batch_size(config.eval_batch_size, len(dataset.test_labels),
                                    jax.device_count()),
        f"{dataset.name}, {config.model}, epoch {trained.epoch}")
    logging.info("plots: %s", ", ".join(str(p) for p in written))


if __name__ == "__main__":
  cli.run(main)
