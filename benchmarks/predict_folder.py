"""`mnist-jax predict` on a folder of PNG files: MNIST's 10,000 test images.

Writes the test split of `--dataset` (mnist_jax.data.load) as PNG files in
a temporary folder, 1,000 to a subfolder, then
  - times `python -m mnist_jax predict --workdir=RUN FOLDER --out=CSV` end
    to end in a fresh process (start-up, restore, listing, decoding, the
    model, 10,000 printed lines and the CSV), `--repeats` times, taking
    turns with the same command on the folder's first file alone (its
    start-up and restore);
  - times its parts in this process: listing the folder, decoding the files
    (`--fit` as predict resolves it) and the model on the decoded images,
    its first call (compiling) and a second, and at `--batch_sizes`;
  - checks the CSV against the labels, and the folder path against
    evaluate: with `--fit=whole` a 28x28 file is read back as the array it
    was written from (counted), and its predictions' accuracy is the one
    evaluate reports for the same checkpoint.
The files were just written, so they are in the OS page cache: the times are
decoding and computing, not cold-disk reads.

Command (from the repo root), after a run to predict with:
  mnist-jax train --config=configs/mnist.py --config.num_epochs=1 \\
      --config.plots=False --workdir=/tmp/mnist-1epoch
  python benchmarks/predict_folder.py --workdir=/tmp/mnist-1epoch \\
      --data_dir=/work/shared/datasets
writes benchmarks/results/<backend>-<device kind>/predict-folder-10k.json.
Tiny (tests/test_predict.py): --dataset=mnist160 --workdir=<a mnist160 run>
--repeats=1 --batch_sizes=16,80 --out=<file>.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=g-import-not-at-top,wrong-import-position
from mnist_jax import data, evaluate, inference, predict, timing
from mnist_jax.trained import load_trained


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a trained run of --dataset")
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "datasets"))
  parser.add_argument("--repeats", type=int, default=2,
                      help="end-to-end runs of the command")
  parser.add_argument("--batch_sizes", default="64,128,256,512",
                      help="the model's seconds at each, on the decoded images")
  parser.add_argument("--name", default="predict-folder-10k")
  parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
  parser.add_argument("--out", default=None, help="the record's path (default: "
                      "<results_dir>/<backend>-<device kind>/<name>.json)")
  return parser.parse_args(argv)


def write_pngs(images_NHWC: np.ndarray, folder: Path) -> list[Path]:
  """Image i as folder/<i // 1000>/<i:05d>.png: sorted paths are file order."""
  paths = []
  for i, image in enumerate(images_NHWC):
    path = folder / str(i // 1000) / f"{i:05d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image[..., 0]).save(path)
    paths.append(path)
  return paths


def run_command(workdir: str, path: Path, csv_path: Path) -> float:
  """Seconds of `python -m mnist_jax predict` on `path`, end to end."""
  command = [sys.executable, "-m", "mnist_jax", "predict", f"--workdir={workdir}",
             str(path), f"--out={csv_path}"]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  start = time.perf_counter()
  result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode != 0:
    raise SystemExit(f"predict failed ({result.returncode}): {result.stderr}")
  return seconds


def csv_classes(csv_path: Path, paths: list[Path], class_names) -> np.ndarray:
  """The class index of each row of predict's CSV, in file order."""
  with open(csv_path, newline="") as f:
    rows = list(csv.DictReader(f))
  assert [r["path"] for r in rows] == [str(p) for p in paths], "not in file order"
  return np.array([class_names.index(r["class"]) for r in rows])


def parts(trained, folder: Path, fit: str) -> tuple[dict, np.ndarray]:
  """Seconds of listing, decoding and the model, in this process; and the
  decoded images."""
  files, list_s = timing.timed(lambda: predict.find_images([folder]))
  batches, decode_s = timing.timed(lambda: list(predict.decoded_batches(
      files, trained.image_shape, "auto", fit, inference.BATCH_SIZE)))
  images_NHWC = np.concatenate([images for _, images in batches])
  logits_fn = inference.bound_logits_fn(trained)
  run_model = lambda: inference.probabilities(logits_fn, images_NHWC)
  _, first_s = timing.timed(run_model)  # Compiles.
  _, second_s = timing.timed(run_model)
  return {"fit": fit, "list_seconds": list_s, "decode_seconds": decode_s,
          "decode_images_per_sec": len(files) / decode_s,
          "model_first_call_seconds": first_s, "model_seconds": second_s,
          "batch_size": inference.BATCH_SIZE}, images_NHWC


def by_batch_size(trained, images_NHWC: np.ndarray, sizes, rounds: int = 2) -> dict:
  """Seconds of the model on `images_NHWC` at each batch size, after a
  compiling call each; the sizes take turns, so a drift of the shared
  machine hits all alike."""
  logits_fn = inference.bound_logits_fn(trained)
  for size in sizes:
    inference.probabilities(logits_fn, images_NHWC[:size], size)
  seconds = {size: [] for size in sizes}
  for _ in range(rounds):
    for size in sizes:
      seconds[size].append(timing.timed(
          lambda: inference.probabilities(logits_fn, images_NHWC, size))[1])  # pylint: disable=cell-var-from-loop
  return {str(size): timing.spread(s) for size, s in seconds.items()}


def main(argv=None):
  args = parse_args(argv)
  dataset = data.load(args.dataset, args.data_dir)
  trained = load_trained(args.workdir)
  work = Path(tempfile.mkdtemp(prefix="mnist_jax_predict_folder_"))
  load_before = os.getloadavg()
  try:
    folder = work / f"{args.dataset}_test"
    paths, write_s = timing.timed(lambda: write_pngs(dataset.test_images, folder))
    # The folder, and its first file alone (start-up and restore: what the
    # folder's images add to is that), taking turns.
    seconds, one_file_seconds = [], []
    for _ in range(args.repeats):
      seconds.append(run_command(args.workdir, folder, work / "predictions.csv"))
      one_file_seconds.append(run_command(args.workdir, paths[0], work / "one.csv"))
    command_N = csv_classes(work / "predictions.csv", paths, list(trained.class_names))
    fit = predict.resolved_fit(trained, "auto")
    timed_parts, decoded_NHWC = parts(trained, folder, fit)
    timed_parts["model_seconds_by_batch_size"] = by_batch_size(
        trained, decoded_NHWC, [int(b) for b in args.batch_sizes.split(",")])
    # The folder path against evaluate: whole-image framing reads a 28x28
    # file back as its array (but for contrast stretched to 255), so its
    # predictions can be set beside the model's on the arrays themselves.
    _, whole_NHWC = parts(trained, folder, "whole")
    logits_fn = inference.bound_logits_fn(trained)
    whole_N = inference.probabilities(logits_fn, whole_NHWC).argmax(-1)
    arrays_N = inference.probabilities(logits_fn, dataset.test_images).argmax(-1)
    labels_N = dataset.test_labels
    accuracy = lambda predicted_N: float(np.mean(predicted_N == labels_N))
    agreement = lambda predicted_N: float(np.mean(predicted_N == arrays_N))
    images = len(paths)
    record = {
        "benchmark": "predict_folder",
        "machine": timing.machine_info(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "run": {"workdir": str(args.workdir), "dataset": trained.config.dataset,
                "model": trained.config.model, "epoch": trained.epoch},
        "images": images,
        "png_bytes": sum(p.stat().st_size for p in paths),
        "write_png_seconds": write_s,
        "command": {"seconds": seconds, **timing.spread(seconds),
                    "images_per_sec": images / min(seconds), "fit": fit},
        "command_on_one_file": {"seconds": one_file_seconds,
                                **timing.spread(one_file_seconds)},
        "parts_in_process": timed_parts,
        "accuracy": {
            "evaluate": evaluate.evaluate_trained(trained, dataset)["test_accuracy"],
            "dataset_arrays": accuracy(arrays_N),
            "command_csv": accuracy(command_N),
            "fit_whole": accuracy(whole_N),
        },
        # Of the images, the share whose class is the one the model gives
        # the dataset's array.
        "agreement_with_dataset_arrays": {"command_csv": agreement(command_N),
                                          "fit_whole": agreement(whole_N)},
        "fit_whole_images_equal_to_dataset": int(
            np.all(whole_NHWC == dataset.test_images, axis=(1, 2, 3)).sum()),
        "note": "files just written: in the OS page cache, not read from disk",
    }
    print(f"{images} images: predict {min(seconds):.1f} s end to end (best of "
          f"{len(seconds)}); decode {timed_parts['decode_seconds']:.1f} s, model "
          f"{timed_parts['model_seconds']:.2f} s; accuracy "
          + ", ".join(f"{k} {100 * v:.2f}%" for k, v in record["accuracy"].items()))
    timing.write_record(record, args.name, out=args.out, results_dir=args.results_dir)
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
