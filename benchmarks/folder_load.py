"""Load times of a user's own data: an image folder and a CSV folder.

Exports MNIST (60,000 train + 10,000 test images, read from the IDX files;
`--dataset` another, any that data.load reads) as PNGs in the train/<class>/
test/<class>/ layout and, grayscale images only, as Kaggle-style CSVs, in a
temporary folder outside the repo, then times:
  - the image folder's first load (list + decode + cache write),
  - its second load (list + stat + cached .npz),
  - decoding alone, sequential against a 2-thread pool, on `--pool_images`
    files, alternating, to decide whether load_folder should use threads,
  - the CSV folder's load (grayscale: a CSV dataset holds one channel).
The files were just written, so they are in the OS page cache: the times are
decoding and parsing, not cold-disk reads.

Command (from the repo root):
  python benchmarks/folder_load.py --data_dir=../shared/datasets
writes benchmarks/results/<backend>-<device kind>/folder-load-70k.json.
"""

import argparse
import concurrent.futures
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_args as ba
from mnist_jax import data, timing
from mnist_jax.errors import UserError
from mnist_jax.sources import csv_files, folder


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "datasets"),
                      help="where --dataset is (mnist: mnist/ with the four IDX files)")
  parser.add_argument("--dataset", default="mnist",
                      help="the images exported, loaded by data.load (any "
                      "dataset; the CSV export is grayscale only)")
  parser.add_argument("--limit", type=ba.nonnegative_int, default=0,
                      help="export only the first N images of each split (0: all)")
  parser.add_argument("--pool_images", type=ba.positive_int, default=20000,
                      help="files decoded in the sequential-vs-threads comparison")
  parser.add_argument("--name", default="folder-load-70k")
  parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
  args = parser.parse_args(argv)
  if args.dataset not in data.PACKAGED and not Path(args.data_dir).is_dir():
    parser.error(f"argument --data_dir: {args.data_dir} is not a folder")
  return args


def splits(dataset: data.Dataset, limit: int):
  for split, images, labels in (
      ("train", dataset.train_images, dataset.train_labels),
      ("test", dataset.test_images, dataset.test_labels)):
    if limit:
      images, labels = images[:limit], labels[:limit]
      missing = dataset.num_classes - len(set(labels.tolist()))
      if split == "train" and missing:  # load_folder refuses an empty class.
        raise UserError(f"--limit={limit}: the first {limit} training images "
                        f"of {dataset.name} leave {missing} of its "
                        f"{dataset.num_classes} classes without an image; "
                        f"raise it, or pass 0 (all)")
    yield split, images, labels


def export(dataset: data.Dataset, limit: int, png_root: Path, csv_root: Path) -> dict:
  """PNGs in train/<class>/, test/<class>/ (class folders named so that
  their sorted order is the labels' order), and for grayscale images CSVs."""
  seconds = {}
  digits = len(str(dataset.num_classes - 1))
  gray = dataset.image_shape[-1] == 1
  for split, images, labels in splits(dataset, limit):
    start = time.perf_counter()
    for c in range(dataset.num_classes):
      (png_root / split / f"{c:0{digits}d}").mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels)):
      Image.fromarray(image[..., 0] if gray else image).save(
          png_root / split / f"{label:0{digits}d}" / f"{i:05d}.png")
    seconds[f"png_{split}"] = time.perf_counter() - start
    if not gray:
      continue
    start = time.perf_counter()
    csv_root.mkdir(exist_ok=True)
    rows = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    header = "label," + ",".join(f"pixel{p}" for p in range(1, rows.shape[1]))
    np.savetxt(csv_root / f"mnist_{split}.csv", rows, fmt="%d", delimiter=",",
               header=header, comments="")
    seconds[f"csv_{split}"] = time.perf_counter() - start
  return seconds


def pool_comparison(png_root: Path, count: int) -> dict:
  """Seconds to decode `count` files sequentially and with 2 threads,
  alternating twice so a drift of the shared machine affects both alike."""
  paths = sorted((png_root / "train").rglob("*.png"))[:count]

  def sequential():
    first = {}
    return [folder._decoded_one(p, None, first) for p in paths]  # pylint: disable=protected-access

  def threads():
    first = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      return list(pool.map(lambda p: folder._decoded_one(p, None, first), paths))  # pylint: disable=protected-access

  seconds = {"sequential": [], "threads_2": []}
  for _ in range(2):
    for name, fn in (("sequential", sequential), ("threads_2", threads)):
      seconds[name].append(timing.timed(fn)[1])
  return {"images": len(paths), **{k: timing.spread(v) for k, v in seconds.items()}}


def main(argv=None):
  args = parse_args(argv)
  work = Path(tempfile.mkdtemp(prefix="mnist_jax_folder_load_"))
  try:
    png_root, csv_root = work / "mnist_png", work / "mnist_csv"
    dataset = data.load(args.dataset, args.data_dir)
    export_seconds = export(dataset, args.limit, png_root, csv_root)
    first, first_s = timing.timed(lambda: folder.load_folder(png_root, cache_dir=work / "c"))
    second, second_s = timing.timed(lambda: folder.load_folder(png_root, cache_dir=work / "c"))
    assert (first.train_images == second.train_images).all()
    (cache,) = (png_root / folder.CACHE_FOLDER).glob("*.npz")
    pool = pool_comparison(png_root, args.pool_images)
    images = len(first.train_images) + len(first.test_images)
    csv = "not measured: CSV datasets are grayscale only (sources/csv_files.py)"
    if csv_root.is_dir():
      from_csv, csv_s = timing.timed(lambda: csv_files.load_csv(csv_root))
      # The folder is in class order, file names keeping the file order within.
      by_class = np.argsort(from_csv.train_labels, kind="stable")
      assert (from_csv.train_images[by_class] == first.train_images).all()
      csv = {"load_seconds": csv_s, "rows_per_sec": images / csv_s,
             "csv_bytes": sum(p.stat().st_size for p in csv_root.glob("*.csv"))}
    record = {
        "benchmark": "folder_load",
        "machine": timing.machine_info(),
        "dataset": dataset.name,
        "images": images,
        "image_shape": list(first.image_shape),
        "export_seconds": export_seconds,
        "folder": {
            "first_load_seconds": first_s,
            "cached_load_seconds": second_s,
            "first_load_images_per_sec": images / first_s,
            "cache_bytes": cache.stat().st_size,
            "png_bytes": sum(p.stat().st_size for p in png_root.rglob("*.png")),
        },
        "decode_pool_comparison": pool,
        "csv": csv,
        "note": "files just written: in the OS page cache, not read from disk",
    }
    print(f"{images} images: folder first load {first_s:.1f} s, cached "
          f"{second_s:.2f} s; CSV "
          + (f"{csv['load_seconds']:.1f} s" if isinstance(csv, dict) else "-")
          + f"; decode of {pool['images']}: "
          f"sequential {pool['sequential']['mean']:.1f} s, 2 threads "
          f"{pool['threads_2']['mean']:.1f} s")
    timing.write_record(record, args.name, results_dir=args.results_dir)
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  ba.run_main(main)
