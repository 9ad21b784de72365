"""MNIST's IDX files: the four gzip files of the built-in MNIST-likes
(MNIST, Fashion-MNIST, KMNIST), where to download them (checked against
TFDS's registered sha256 checksums), and any folder holding the four files,
loaded as a custom dataset.
"""

import dataclasses
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_jax import fileio
from mnist_jax.errors import UserError
from mnist_jax.sources.dataset import Dataset, checked

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

_IDX_MAGIC = {1: 2049, 3: 2051}  # labels, images (unsigned bytes)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the package knows about a built-in dataset."""
  name: str
  class_names: tuple[str, ...]
  base_url: str
  # file name -> (size in bytes, sha256); the values TFDS registers.
  checksums: dict[str, tuple[int, str]]
  tfds_name: str


BUILTIN = {
    "mnist": DatasetInfo(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        base_url="https://storage.googleapis.com/cvdf-datasets/mnist/",
        checksums={
            TRAIN_IMAGES: (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            TRAIN_LABELS: (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            TEST_IMAGES: (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            TEST_LABELS: (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        },
        tfds_name="mnist",
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        checksums={
            TRAIN_IMAGES: (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            TRAIN_LABELS: (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            TEST_IMAGES: (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            TEST_LABELS: (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        },
        tfds_name="fashion_mnist",
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        base_url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        checksums={
            TRAIN_IMAGES: (18165135, "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
            TRAIN_LABELS: (29497, "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
            TEST_IMAGES: (3041136, "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
            TEST_LABELS: (5120, "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
        },
        tfds_name="kmnist",
    ),
}

# Slices of a built-in dataset: name -> (parent, images per class per split);
# data.py loads them (mnist160 ships inside the package).
# mnist160: the first 8 images of each class of the train split and the first
# 8 of each class of the test split, in file order.
SLICES = {"mnist160": ("mnist", 8)}


def load_idx(folder: Path, info: DatasetInfo | None = None) -> Dataset:
  """The four IDX files in `folder`: a built-in's (`info`, downloaded where
  missing) or a custom dataset's (as many classes as its labels name)."""
  name = info.name if info else folder.name
  missing = [f for f in FILES if not (folder / f).is_file()]
  if missing and info is None:
    raise UserError(f"{folder} does not hold the four MNIST-format files "
                    f"({', '.join(missing)} missing)")
  if missing:
    for file_name in missing:
      download(info, file_name, folder)
  train_images = read_idx(folder / TRAIN_IMAGES, ndim=3)
  train_labels = read_idx(folder / TRAIN_LABELS, ndim=1)
  test_images = read_idx(folder / TEST_IMAGES, ndim=3)
  test_labels = read_idx(folder / TEST_LABELS, ndim=1)
  if info is not None:
    class_names = info.class_names
  else:  # A custom dataset: as many classes as its labels name.
    num_classes = int(max(train_labels.max(initial=0), test_labels.max(initial=0))) + 1
    class_names = tuple(str(c) for c in range(num_classes))
  return checked(name, folder, class_names, train_images, train_labels,
                 test_images, test_labels)


def read_idx(path: Path, ndim: int) -> np.ndarray:
  """Reads a gzipped IDX file of unsigned bytes with `ndim` dimensions."""
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise UserError(
        f"{path} is not a readable gzip file ({e}); replace it with an intact "
        f"copy (a built-in dataset's file is downloaded again once deleted)"
    ) from None
  header_bytes = 4 + 4 * ndim
  if len(raw) < header_bytes:
    raise UserError(f"{path} is too short to be an IDX file; replace it")
  magic, *dims = struct.unpack(f">{1 + ndim}I", raw[:header_bytes])
  if magic != _IDX_MAGIC[ndim]:
    kind = "label" if ndim == 1 else "image"
    raise UserError(
        f"{path} has IDX magic number {magic}, expected {_IDX_MAGIC[ndim]} "
        f"for an MNIST {kind} file; is it the right file?")
  expected = int(np.prod(dims))
  if len(raw) - header_bytes != expected:
    raise UserError(
        f"{path} holds {len(raw) - header_bytes} data bytes but its header "
        f"says {'x'.join(map(str, dims))} = {expected}; the file is "
        f"truncated or corrupt, replace it")
  return np.frombuffer(raw, np.uint8, offset=header_bytes).reshape(dims)


def download(info: DatasetInfo, file_name: str, folder: Path) -> Path:
  """Downloads one file of a built-in dataset, verified, written atomically."""
  size, sha256 = info.checksums[file_name]
  return fileio.fetch(info.base_url + file_name, folder / file_name, "sha256", sha256,
                     size, f"dataset '{info.name}' is not in {folder}",
                     f"put the four files {', '.join(FILES)} in {folder}, or set "
                     f"data_dir / MNIST_JAX_DATA to a folder that holds '{info.name}/'")
