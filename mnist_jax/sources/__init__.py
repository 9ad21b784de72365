"""Where datasets come from: MNIST's IDX files (idx.py), EMNIST, MedMNIST
and a user's `.npz`, image folders and CSV files, and TFDS. Each builds its
`Dataset` with dataset.checked; none imports data.py, which calls them.

`data.load` asks `load_builtin` for a built-in name, else `load_path` for a
path (or a folder in the data directory), whose format is detected from
what is there unless config.dataset_format names it.
"""

import os
from pathlib import Path

from mnist_jax.errors import UserError
from mnist_jax.sources import csv_files, emnist, folder, idx, npz
from mnist_jax.sources.dataset import Dataset, checked

# MedMNIST+ ships these sizes as files of their own; others are resized.
MEDMNIST_SIZES = (64, 128, 224)
# The built-in names, for error messages.
KNOWN = ", ".join([*idx.BUILTIN, *idx.SLICES, *(emnist.dataset_name(s) for s in emnist.SPLITS),
                   *(n for n, info in npz.MEDMNIST.items() if info.task != "multi-label")])


def load_builtin(name: str, data_dir: Path, image_size: int) -> Dataset | None:
  """A built-in dataset by name (MNIST, Fashion-MNIST, KMNIST, the EMNIST
  splits, MedMNIST), or None when `name` is none of them."""
  if name in idx.BUILTIN:
    return idx.load_idx(data_dir / name, idx.BUILTIN[name])
  if name.startswith("emnist_"):
    return emnist.load(name.removeprefix("emnist_"), data_dir / "emnist")
  if name in npz.MEDMNIST:
    size = image_size if image_size in MEDMNIST_SIZES else 28
    return npz.load_medmnist(name, data_dir / "medmnist", size)
  return None


def looks_like_path(name: str) -> bool:
  """Whether config.dataset names a path rather than a dataset."""
  return (os.sep in name or "/" in name or name.startswith((".", "~"))
          or name.endswith(".npz"))


def detect_format(path: Path) -> str:
  """The format of the dataset at `path`, from what is there."""
  if path.is_file():
    return "npz"
  if not path.is_dir():
    raise UserError(f"dataset {path} does not exist: config.dataset is a "
                    f"built-in name ({KNOWN}) or a path to a folder or .npz file")
  if all((path / f).is_file() for f in idx.FILES):
    return "idx"
  if (path / "train").is_dir():
    return "folder"
  if any(p.suffix.lower() == ".csv" for p in path.iterdir()):
    return "csv"
  raise UserError(
      f"{path} holds no dataset in a format mnist_jax reads: the four IDX "
      f"files ({', '.join(idx.FILES)}), an image folder (train/<class>/...), "
      f"*train*.csv and *test*.csv, or pass a .npz file; "
      f"--config.dataset_format forces one")


def load_path(path: Path, dataset_format: str, image_size: int) -> Dataset:
  """The dataset at `path` in `dataset_format` ("": detected)."""
  dataset_format = dataset_format or detect_format(path)
  if dataset_format == "idx":
    return idx.load_idx(path)
  if dataset_format == "folder":
    return folder.load_folder(path, image_size or None)
  if dataset_format == "csv":
    return csv_files.load_csv(path)
  return npz.load_npz(path, path.stem)


def load_tfds(name: str, data_dir: Path) -> Dataset:
  """Loads through tensorflow-datasets, offline from `<data_dir>/<name>/`.

  TFDS stores examples in its own shuffled order, so the arrays hold the same
  examples as the IDX files but not in the same order.
  """
  split = name.removeprefix("emnist_") if name.startswith("emnist_") else None
  info = idx.BUILTIN.get(name)
  if info is None and split is None:
    raise UserError(f"data_source='tfds' supports {', '.join(idx.BUILTIN)} and "
                    f"the emnist_* splits; load '{name}' with data_source='idx'")
  try:
    # TensorFlow first: tensorflow_datasets imports without it, then has no load().
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(f"data_source='tfds' needs the tfds extra ({e.name or e} is "
                    "not installed): pip install -e '.[tfds]'") from None
  manual_dir = data_dir / ("emnist" if split else name)
  download_config = tfds.download.DownloadConfig(
      manual_dir=str(manual_dir) if manual_dir.is_dir() else None)
  splits = tfds.load(
      emnist.tfds_name(split) if split else info.tfds_name,
      split=["train", "test"], batch_size=-1,
      as_supervised=True,
      # Read now, not when tfds was imported: a caller may set it later.
      data_dir=os.environ.get("TFDS_DATA_DIR"),
      download_and_prepare_kwargs={"download_config": download_config})
  (train_x, train_y), (test_x, test_y) = tfds.as_numpy(splits)
  if split:  # TFDS keeps EMNIST's files as stored: transposed, letters 1..26.
    train_x, train_y = emnist.upright(split, train_x, train_y)
    test_x, test_y = emnist.upright(split, test_x, test_y)
    class_names = (emnist.LETTERS if split == "letters" else
                   emnist.read_mapping(manual_dir / emnist.file_names(split)[4], split))
  else:
    class_names = info.class_names
  return checked(name, manual_dir, class_names, train_x, train_y, test_x,
                      test_y)
