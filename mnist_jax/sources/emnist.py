"""EMNIST (Cohen et al., 2017): NIST's handwritten digits and letters in
MNIST's format, six splits, loaded as upright images like MNIST's.

A split is read from a folder (`<data_dir>/emnist/`) holding its five files
from NIST's `gzip.zip`: `emnist-<split>-{train,test}-{images-idx3,labels-idx1}
-ubyte.gz` and `emnist-<split>-mapping.txt`. Where they are missing but
`gzip.zip` is there, only that split's five files are extracted from it (the
archive keeps them under `gzip/`, as TFDS's builder reads them); where neither
is there, `gzip.zip` (562 MB, every split) is downloaded from NIST, checked
against the size and sha256 TFDS registers, and kept, so that the other
splits are extracted from it without downloading again.

EMNIST stores every image transposed (the glyph's rows are the file's
columns): `upright` transposes H and W so that a letter reads as it does in
MNIST. The letters split labels its 26 classes 1..26, upper and lower case
merged; here they are 0..25, named `a`..`z`. Every other split names its
classes by its mapping file, one `<label> <ASCII code>` a line.

TFDS (`tfds_name`): tensorflow-datasets 4.9.10's EMNIST builder copies the IDX
bytes as they are, without a transpose (its description says the images are
"inverted horizontally and rotated 90 anti-clockwise", i.e. transposed), and
gives letters `class_number=37` with the labels still 1..26. Arrays read
through TFDS therefore need `upright(split, images, labels)`, the same fix
`load` applies, to match this module's.

`write_emnist_files` writes a split in EMNIST's format (transposed, gzipped
IDX), for tests and for benchmarks that synthesize a split at full size.
"""

import gzip
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mnist_jax import fileio
from mnist_jax.errors import UserError
from mnist_jax.sources import idx
from mnist_jax.sources.dataset import Dataset, checked

# split -> number of classes, in NIST's order.
SPLITS = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26,
          "digits": 10, "mnist": 10}
URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
ZIP_NAME = "gzip.zip"
# (size in bytes, sha256) that TFDS registers (url_checksums/emnist.txt).
ZIP_CHECKSUM = (561753746, "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e")
ZIP_FOLDER = "gzip/"  # Where gzip.zip keeps every split's files.
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")

_WRITE_CHUNK = 1 << 16  # Images per write: a full-size split is not copied at once.


def dataset_name(split: str) -> str:
  return f"emnist_{_known(split)}"


def tfds_name(split: str) -> str:
  """The TFDS dataset of `split`; its arrays need `upright` (docstring)."""
  return f"emnist/{_known(split)}"


def file_names(split: str) -> tuple[str, str, str, str, str]:
  """train images, train labels, test images, test labels, mapping."""
  prefix = f"emnist-{_known(split)}"
  return (f"{prefix}-train-images-idx3-ubyte.gz",
          f"{prefix}-train-labels-idx1-ubyte.gz",
          f"{prefix}-test-images-idx3-ubyte.gz",
          f"{prefix}-test-labels-idx1-ubyte.gz",
          f"{prefix}-mapping.txt")


def _known(split: str) -> str:
  if split not in SPLITS:
    raise UserError(f"unknown EMNIST split '{split}'; use one of "
                    f"{', '.join(SPLITS)}")
  return split


def load(split: str, folder: Path) -> Dataset:
  """Split `split` from `folder`, extracting its files from `gzip.zip` or
  downloading that first where they are missing."""
  folder = Path(folder)
  names = file_names(split)
  missing = [n for n in names if not (folder / n).is_file()]
  if missing:
    if not (folder / ZIP_NAME).is_file():
      _download(folder, split)
    _extract(folder / ZIP_NAME, missing)
  train_images, train_labels, test_images, test_labels = (
      idx.read_idx(folder / name, ndim) for name, ndim in zip(names, (3, 1, 3, 1)))
  if split == "letters":
    for name, labels in ((names[1], train_labels), (names[3], test_labels)):
      if labels.size and (labels.min() < 1 or labels.max() > 26):
        raise UserError(f"{folder / name}: letters labels must be 1..26, found "
                        f"{labels.min()}..{labels.max()}; replace the file")
    class_names = LETTERS  # Upper and lower case in one class, 'a' names it.
  else:
    class_names = read_mapping(folder / names[4], split)
  train_images, train_labels = upright(split, train_images, train_labels)
  test_images, test_labels = upright(split, test_images, test_labels)
  return checked(dataset_name(split), folder, class_names, train_images,
                      train_labels, test_images, test_labels)


def upright(split: str, images: np.ndarray, labels: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """Images [N, H, W] or [N, H, W, C] as stored by EMNIST (and TFDS) turned
  upright, and labels from 0 (letters' 1..26 become 0..25), int32."""
  # Contiguous, as every other source's images are: later slicing and
  # device transfers then cost what they cost for MNIST.
  images = np.ascontiguousarray(np.swapaxes(np.asarray(images), 1, 2))
  labels = np.asarray(labels).astype(np.int32)
  if _known(split) == "letters":
    labels = labels - 1
  return images, labels


def read_mapping(path: Path, split: str) -> tuple[str, ...]:
  """Class names from a mapping file: line `<label> <ASCII code>`, name
  chr(code); the labels must be 0..n-1 for the split's n classes."""
  num_classes = SPLITS[_known(split)]
  try:
    lines = Path(path).read_text(encoding="ascii").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read EMNIST mapping {path} ({e}); replace it with "
                    f"the one in NIST's gzip.zip") from None
  names = {}
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    fields = line.split()
    try:
      label, code = int(fields[0]), int(fields[1])
      name = chr(code)
    except (IndexError, ValueError, OverflowError):
      raise UserError(f"{path} line {number}: '{line.strip()}' is not "
                      f"'<label> <ASCII code>'; replace the file with the one "
                      f"in NIST's gzip.zip") from None
    names[label] = name
  if sorted(names) != list(range(num_classes)):
    raise UserError(f"{path} names labels {_span(names)}, but EMNIST {split} has "
                    f"{num_classes} classes, labelled 0..{num_classes - 1}; is "
                    f"it the {split} split's mapping?")
  return tuple(names[label] for label in range(num_classes))


def _span(labels) -> str:
  return f"{min(labels)}..{max(labels)} ({len(labels)})" if labels else "none"


def _extract(zip_path: Path, names: Sequence[str]):
  """Extracts `names` from gzip.zip's `gzip/` into its folder, each whole."""
  try:
    with zipfile.ZipFile(zip_path) as archive:
      members = set(archive.namelist())
      absent = [n for n in names if ZIP_FOLDER + n not in members]
      if absent:
        raise UserError(f"{zip_path} has no {', '.join(ZIP_FOLDER + n for n in absent)}"
                        f"; it is not NIST's EMNIST gzip.zip, delete it to "
                        f"download that one")
      for name in names:
        # A CRC mismatch raises inside the block: no half or bad file stays.
        with archive.open(ZIP_FOLDER + name) as source, fileio.atomic_file(
            zip_path.parent / name, "wb") as target:
          while chunk := source.read(1 << 20):
            target.write(chunk)
  except (zipfile.BadZipFile, zlib.error, EOFError) as e:
    raise UserError(f"{zip_path} is not a readable zip archive ({e}); delete it "
                    f"to download it again, or replace it") from None
  except OSError as e:
    raise UserError(f"cannot extract EMNIST files from {zip_path} into "
                    f"{zip_path.parent} ({e.strerror or e}); make the folder "
                    f"writable or put the files there") from None


def _download(folder: Path, split: str) -> Path:
  """Downloads gzip.zip into `folder`, verified, written atomically."""
  size, sha256 = ZIP_CHECKSUM
  return fileio.fetch(URL, folder / ZIP_NAME, "sha256", sha256, size,
                     f"EMNIST {split} is not in {folder}",
                     f"put NIST's {ZIP_NAME} or the files "
                     f"{', '.join(file_names(split))} in {folder}")


def write_emnist_files(folder: Path, split: str, train_images_NHW, train_labels,
                       test_images_NHW, test_labels, mapping_lines: Sequence[str],
                       compresslevel: int = 6) -> Path:
  """Writes split `split` into `folder` as EMNIST ships it: upright images
  [N, H, W] stored transposed, labels as given (letters: 1..26), in gzipped
  IDX files, and the mapping's lines (e.g. '10 65'). Returns `folder`."""
  names = file_names(split)
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  arrays = (train_images_NHW, train_labels, test_images_NHW, test_labels)
  for name, array, is_images in zip(names, arrays, (True, False, True, False)):
    array = np.asarray(array)
    if array.ndim != (3 if is_images else 1):
      raise ValueError(f"{name}: expected {'[N, H, W] images' if is_images else '[N] labels'}"
                       f", got shape {array.shape}")
    _write_idx(folder / name, np.swapaxes(array, 1, 2) if is_images else array,
               compresslevel)
  fileio.write_atomic(folder / names[4], "".join(f"{line}\n" for line in mapping_lines))
  return folder


def _write_idx(path: Path, array: np.ndarray, compresslevel: int):
  """A gzipped IDX file of unsigned bytes (the format `idx.read_idx` reads);
  mtime 0, so the same array gives the same bytes."""
  header = struct.pack(f">{1 + array.ndim}I", 2051 if array.ndim == 3 else 2049,
                       *array.shape)
  with fileio.atomic_file(path, "wb") as raw, gzip.GzipFile(
      fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as f:
    f.write(header)
    for start in range(0, len(array), _WRITE_CHUNK):
      f.write(np.ascontiguousarray(array[start:start + _WRITE_CHUNK], np.uint8).tobytes())
