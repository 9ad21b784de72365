"""A dataset as two CSV files, the layout of Kaggle's MNIST-family copies
(mnist_train.csv / mnist_test.csv, fashion-mnist_train.csv, ...).

`<root>/` holds one `*train*.csv` and one `*test*.csv`. Each starts with a
header line naming the columns: one `label` column (anywhere) and one column
per pixel, row-major, S*S of them for SxS images (784 for 28x28). Every row is
one image: integer pixels in 0..255 and an integer label; classes are named
"0".."K-1", K being the largest label + 1.

Grayscale only (C=1): a 3*S*S-pixel RGB layout has no convention for the
column order that Kaggle's files agree on, so a pixel count that is not a
square is refused rather than guessed at.

Read with numpy's C parser (np.loadtxt: about 1 s for 60,000 rows of 785
columns); only when that fails, or a pixel is out of range, is the file read
again line by line to name the line and column at fault.
"""

import csv
import math
import warnings
from pathlib import Path

import numpy as np

from mnist_jax.errors import UserError
from mnist_jax.sources.dataset import Dataset, checked

_HOW = ("a CSV dataset is a folder with one *train*.csv and one *test*.csv, "
        "each with a header line naming a 'label' column and one column per "
        "pixel")


def load_csv(root: Path) -> Dataset:
  """The dataset in CSV folder `root` (see the module docstring)."""
  root = Path(root).expanduser()
  if not root.is_dir():
    what = "is not a folder" if root.exists() else "does not exist"
    raise UserError(f"CSV dataset folder {root} {what}; {_HOW}")
  train_file, test_file = _csv_file(root, "train"), _csv_file(root, "test")
  train_images, train_labels = _read(train_file)
  test_images, test_labels = _read(test_file)
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  return checked(root.name, root, tuple(str(c) for c in range(num_classes)),
                      train_images, train_labels, test_images, test_labels)


def _csv_file(root: Path, split: str) -> Path:
  found = sorted(p for p in root.iterdir()
                 if p.is_file() and p.suffix.lower() == ".csv"
                 and split in p.name.lower())
  if len(found) != 1:
    what = (f"several: {', '.join(p.name for p in found)}" if found
            else "none")
    raise UserError(f"{root} must hold exactly one *{split}*.csv file, it holds "
                    f"{what}; {_HOW}")
  return found[0]


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, S, S], labels int64 [N]) of one CSV file."""
  columns = _header(path)
  label_column = columns.index("label")
  num_pixels = len(columns) - 1
  side = math.isqrt(num_pixels)
  if num_pixels == 0 or side * side != num_pixels:
    raise UserError(
        f"{path}: pixel count {num_pixels} is not a square; each row must "
        f"hold a label and S*S pixels of one grayscale SxS image (RGB CSVs "
        f"are not supported)")
  try:
    # int16: any label or pixel a row may hold here; the range is checked below.
    with warnings.catch_warnings():  # No rows: refused below, in one line.
      warnings.filterwarnings("ignore", "loadtxt: input contained no data")
      rows = np.loadtxt(path, delimiter=",", dtype=np.int16, skiprows=1,
                        ndmin=2, comments=None, encoding="utf-8")
  except (ValueError, OverflowError) as e:
    _diagnose(path, columns, " ".join(str(e).split()))
  if len(rows) == 0:
    raise UserError(f"{path} has a header line but no rows of data")
  pixels = np.delete(rows, label_column, axis=1)
  labels = rows[:, label_column].astype(np.int64)
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0:
    _diagnose(path, columns, "a pixel outside 0..255 or a negative label")
  return pixels.astype(np.uint8).reshape(-1, side, side), labels


def _header(path: Path) -> list[str]:
  """The column names, lower case; refused without a 'label' column."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      first = next(csv.reader(f), [])
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"{path} cannot be read as a CSV text file "
                    f"({' '.join(str(e).split())}); replace it") from None
  columns = [name.strip().lower() for name in first]
  if "label" not in columns:
    preview = ",".join(first[:4]) + (",..." if len(first) > 4 else "")
    raise UserError(
        f"refused for training: {path} has no 'label' column (its first line "
        f"is '{preview}'); the first line must name the columns, 'label' and "
        f"one per pixel, and every row must carry its label")
  return columns


def _diagnose(path: Path, columns: list[str], problem: str):
  """Raises the one-line error for the first bad line of `path`: ragged,
  a value that is not an integer, or one out of range; else `problem`."""
  label_column = columns.index("label")
  with open(path, newline="", encoding="utf-8") as f:
    for line_number, row in enumerate(csv.reader(f), start=1):
      if line_number == 1 or not row:  # The header; blank lines are skipped.
        continue
      where = f"{path} line {line_number}"
      if len(row) != len(columns):
        raise UserError(
            f"{where} has {len(row)} values but the header names "
            f"{len(columns)} columns (a label and {len(columns) - 1} pixels); "
            f"every row needs one value per column")
      try:
        values = np.array(row, dtype=np.int64)
      except (ValueError, OverflowError):
        column, value = next((c, v) for c, v in zip(columns, row) if not _is_int(v))
        raise UserError(f"{where}, column '{column}': '{value}' is not an "
                        f"integer; labels and pixels must be whole numbers") from None
      if values[label_column] < 0:
        raise UserError(f"{where}: label {values[label_column]} is negative; "
                        f"labels are class numbers 0..K-1")
      bad = np.flatnonzero((values < 0) | (values > 255))
      bad = bad[bad != label_column]
      if bad.size:
        raise UserError(f"{where}, column '{columns[bad[0]]}': pixel "
                        f"{values[bad[0]]} is outside 0..255; pixels must be "
                        f"8-bit gray levels")
      if values[label_column] > np.iinfo(np.int16).max:
        raise UserError(f"{where}: label {values[label_column]} is too large; "
                        f"labels are class numbers 0..K-1")
  raise UserError(f"{path} cannot be read as rows of integers ({problem}); "
                  f"write it as plain comma-separated integers, no quotes")


def _is_int(text: str) -> bool:
  try:
    int(text)
    return True
  except ValueError:
    return False
