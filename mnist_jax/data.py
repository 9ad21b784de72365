"""Datasets, loaded into host numpy arrays: `load` by name or path.

A built-in name (MNIST, Fashion-MNIST and KMNIST: sources/idx.py; EMNIST,
MedMNIST: sources/) knows its class names and where to download its files;
any other folder in the data directory, or a path, is loaded in the format
found there (sources/: IDX, image folders, CSV, .npz). `mnist160` is a fixed
160-image slice of MNIST for smoke tests, shipped inside the package: it
loads offline, with no data folder. `source='tfds'` loads the same data
through tensorflow-datasets instead (an install extra).

Everything here runs once on the host; `train_and_evaluate` puts the arrays
on device. `Dataset` and `checked` are sources/dataset.py's, which every
source builds its dataset with.
"""

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from mnist_jax.errors import UserError
from mnist_jax.sources import idx
from mnist_jax.sources.dataset import Dataset, checked

# Slices shipped inside the package, made by `write_packaged` from the
# parent's files: name -> sha256 of `PACKAGED_DIR/<name>.npz`.
PACKAGED = {"mnist160": "27025eaf9ef9faa0120d38441b48270a1d3ec7ce65f21d09903d76b608193660"}
PACKAGED_DIR = Path(__file__).resolve().parent / "datasets"


def default_data_dir() -> Path:
  """`$MNIST_JAX_DATA`, else `~/.cache/mnist_jax/datasets`."""
  if os.environ.get("MNIST_JAX_DATA"):
    return Path(os.environ["MNIST_JAX_DATA"]).expanduser()
  cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
  return cache / "mnist_jax" / "datasets"


# config.dataset_format: how a dataset given by path is stored.
FORMATS = ("idx", "folder", "csv", "npz")


def load(name: str, data_dir: str | os.PathLike | None = None,
         source: str = "idx", dataset_format: str = "",
         image_size: int = 0) -> Dataset:
  """Dataset `name` (built in, a folder in `data_dir`, or a path to a folder
  or `.npz` file) in `dataset_format` (detected where ""), downloading
  built-ins if missing; every image resized to `image_size` squared if > 0."""
  data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
  if dataset_format and dataset_format not in FORMATS:
    raise UserError(f"config.dataset_format={dataset_format!r}: choose one of "
                    f"{', '.join(FORMATS)}, or '' to detect it")
  dataset = _load(name, data_dir, source, dataset_format, image_size)
  return resized(dataset, image_size) if image_size else dataset


def _load(name: str, data_dir: Path, source: str, dataset_format: str,
          image_size: int) -> Dataset:
  from mnist_jax import sources  # pylint: disable=g-import-not-at-top
  if source not in ("idx", "tfds"):
    raise UserError(f"unknown data_source '{source}'; use 'idx' or 'tfds'")
  if name in idx.SLICES:
    if source != "idx":
      raise UserError(
          f"dataset '{name}' is defined on the official file order, which "
          f"data_source='{source}' does not keep; use data_source='idx'")
    if name in PACKAGED:
      return _load_packaged(name)
    parent, per_class = idx.SLICES[name]
    return _class_slice(load(parent, data_dir, source), name, per_class)
  if source == "tfds":
    return sources.load_tfds(name, data_dir)
  builtin = sources.load_builtin(name, data_dir, image_size)
  if builtin is not None:
    return builtin
  path = Path(name).expanduser()
  if not sources.looks_like_path(name):
    path = data_dir / name  # A folder in data_dir, of any format.
    if not path.exists():
      raise UserError(
          f"unknown dataset '{name}': it is not built in ({sources.KNOWN}) and "
          f"{path} does not exist; put the dataset there, or pass its path")
  return sources.load_path(path, dataset_format, image_size)


def resized(dataset: Dataset, size: int) -> Dataset:
  """Every image of `dataset` resized to `size` x `size` (Pillow, Lanczos:
  antialiased when shrinking), once, on the host."""
  def resize(images_NHWC):
    if images_NHWC is None or images_NHWC.shape[1:3] == (size, size):
      return images_NHWC
    from PIL import Image  # pylint: disable=g-import-not-at-top
    gray = images_NHWC.shape[-1] == 1
    out = [np.asarray(Image.fromarray(image[..., 0] if gray else image).resize(
        (size, size), Image.Resampling.LANCZOS)) for image in images_NHWC]
    return np.stack(out).reshape(len(out), size, size, -1)
  return dataclasses.replace(
      dataset, train_images=resize(dataset.train_images),
      test_images=resize(dataset.test_images), val_images=resize(dataset.val_images))


def _class_slice(parent: Dataset, name: str, per_class: int) -> Dataset:
  """The first `per_class` examples of each class of each split, file order."""
  def first_per_class(labels):
    picked = [np.flatnonzero(labels == c)[:per_class]
              for c in range(parent.num_classes)]
    return np.sort(np.concatenate(picked))
  train = first_per_class(parent.train_labels)
  test = first_per_class(parent.test_labels)
  return Dataset(name, parent.class_names,
                 parent.train_images[train], parent.train_labels[train],
                 parent.test_images[test], parent.test_labels[test])


def _load_packaged(name: str) -> Dataset:
  """A slice shipped inside the package, checked against its sha256."""
  path = PACKAGED_DIR / f"{name}.npz"
  reinstall = "reinstall mnist_jax (pip install --force-reinstall ...)"
  try:
    raw = path.read_bytes()
  except OSError as e:
    raise UserError(f"the packaged dataset {path} cannot be read "
                    f"({e.strerror}); {reinstall}") from None
  if hashlib.sha256(raw).hexdigest() != PACKAGED[name]:
    raise UserError(f"the packaged dataset {path} does not match its sha256 "
                    f"checksum: it is damaged; {reinstall}")
  with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
    return checked(name, path, idx.BUILTIN[idx.SLICES[name][0]].class_names,
                   arrays["train_images"], arrays["train_labels"],
                   arrays["test_images"], arrays["test_labels"])


def write_packaged(name: str, data_dir: str | os.PathLike,
                   out_dir: Path = PACKAGED_DIR) -> str:
  """Makes `<out_dir>/<name>.npz` from the parent's files in `data_dir`;
  returns its sha256, for `PACKAGED` (the same bytes every time)."""
  parent, per_class = idx.SLICES[name]
  sliced = _class_slice(idx.load_idx(Path(data_dir) / parent, idx.BUILTIN[parent]),
                        name, per_class)
  path = Path(out_dir) / f"{name}.npz"
  # [N, 28, 28], as the file has always held them (its sha256 is pinned).
  np.savez_compressed(path, train_images=sliced.train_images[..., 0],
                      train_labels=sliced.train_labels.astype(np.uint8),
                      test_images=sliced.test_images[..., 0],
                      test_labels=sliced.test_labels.astype(np.uint8))
  return hashlib.sha256(path.read_bytes()).hexdigest()
