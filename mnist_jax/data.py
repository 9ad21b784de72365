"""Datasets: MNIST-format IDX files on disk, loaded into host numpy arrays.

A dataset is the four standard IDX gzip files in `<data_dir>/<name>/`. Built-in
names know their class names and where to download the files (checked against
TFDS's registered sha256 checksums); any other folder name holding the four
files is loaded as a custom dataset. `mnist160` is a fixed 160-image slice of
MNIST for smoke tests, shipped inside the package: it loads offline, with no
data folder. `source='tfds'` loads the same data through tensorflow-datasets
instead (an install extra).

Everything here runs once on the host; `train.py` puts the arrays on device.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from mnist_jax import outputs
from mnist_jax.errors import UserError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

_IDX_MAGIC = {1: 2049, 3: 2051}  # labels, images (unsigned bytes)
_DOWNLOAD_TIMEOUT_S = 30


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

# Slices of a built-in dataset: name -> (parent, images per class per split).
# mnist160: the first 8 images of each class of the train split and the first
# 8 of each class of the test split, in file order.
SLICES = {"mnist160": ("mnist", 8)}
# Slices shipped inside the package, made by `write_packaged` from the
# parent's files: name -> sha256 of `PACKAGED_DIR/<name>.npz`.
PACKAGED = {"mnist160": "27025eaf9ef9faa0120d38441b48270a1d3ec7ce65f21d09903d76b608193660"}
PACKAGED_DIR = Path(__file__).resolve().parent / "datasets"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole dataset as host arrays: images uint8 [N, H, W, C] (C = 1 or 3),
  labels int32 [N]; a validation split where the dataset ships one."""
  name: str
  class_names: tuple[str, ...]
  train_images: np.ndarray | None  # None once train.py placed it on the devices.
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  val_images: np.ndarray | None = None
  val_labels: np.ndarray | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every image (data.checked: every split's)."""
    return tuple(self.test_images.shape[1:])


def checked(name: str, where, class_names, train_images, train_labels,
            test_images, test_labels, val_images=None, val_labels=None) -> Dataset:
  """A Dataset from arrays any source read, after the checks every source
  needs, each a one-line error naming `where` (the file or folder). Images
  [N, H, W] gain a channel axis."""
  splits = [("train", train_images, train_labels), ("test", test_images, test_labels)]
  if val_images is not None or val_labels is not None:
    splits.append(("validation", val_images, val_labels))
  arrays, shape = {}, None
  for split, images, labels in splits:
    if images is None or labels is None:
      raise UserError(f"{where}: the {split} split has images but no labels, "
                      f"or labels but no images; give both")
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
      raise UserError(f"{where}: {split} images are {images.dtype} of shape "
                      f"{images.shape}; expected uint8 [N, H, W] or [N, H, W, C] "
                      f"with 1 (grayscale) or 3 (RGB) channels")
    if shape is not None and images.shape[1:] != shape:
      raise UserError(f"{where}: {split} images are {_shape_text(images.shape[1:])}"
                      f", train images {_shape_text(shape)}; every split must "
                      f"have one image size and channel count")
    shape = images.shape[1:]
    if labels.ndim == 2 and labels.shape[1] == 1:  # MedMNIST's [N, 1].
      labels = labels[:, 0]
    if labels.ndim != 1 or len(images) != len(labels):
      raise UserError(f"{where}: the {split} split has {len(images)} images but "
                      f"labels of shape {labels.shape}; they must match")
    if len(images) == 0:
      raise UserError(f"{where}: the {split} split is empty")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or (
        labels.max() >= len(class_names)):
      raise UserError(
          f"{where}: {split} labels must be integers in 0..{len(class_names) - 1} "
          f"(one per class), found {labels.min()}..{labels.max()}; fix the labels")
    arrays[split] = (images, labels.astype(np.int32))
  missing = sorted(set(range(len(class_names))) - set(arrays["train"][1].tolist()))
  if missing:
    raise UserError(f"{where}: the train split has no image of class(es) "
                    f"{', '.join(class_names[c] for c in missing[:10])}"
                    f"{' ...' if len(missing) > 10 else ''}; every class needs "
                    f"training images")
  val = arrays.get("validation", (None, None))
  return Dataset(name, tuple(class_names), *arrays["train"], *arrays["test"], *val)


def _shape_text(shape) -> str:
  return f"{shape[0]}x{shape[1]}x{shape[2]}"


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
  if name in SLICES:
    if source != "idx":
      raise UserError(
          f"dataset '{name}' is defined on the official file order, which "
          f"data_source='{source}' does not keep; use data_source='idx'")
    if name in PACKAGED:
      return _load_packaged(name)
    parent, per_class = SLICES[name]
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
  return fetch(info.base_url + file_name, folder / file_name, "sha256", sha256, size,
               f"dataset '{info.name}' is not in {folder}",
               f"put the four files {', '.join(FILES)} in {folder}, or set "
               f"data_dir / MNIST_JAX_DATA to a folder that holds '{info.name}/'")


def fetch(url: str, target: Path, algorithm: str, expected: str, size: int | None,
          missing: str, fix: str) -> Path:
  """Downloads `url` to `target`, checked against its registered `algorithm`
  digest (and `size`, where known), written atomically: a failed or bad
  download leaves nothing behind. Offline, the error says what is `missing`
  and how to `fix` it."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create data folder {target.parent} ({e.strerror}); "
                    f"set data_dir or MNIST_JAX_DATA to a writable folder") from None
  try:
    with outputs.atomic_file(target, "wb") as out:
      digest, got_size = hashlib.new(algorithm, usedforsecurity=False), 0
      with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        while chunk := response.read(1 << 20):
          digest.update(chunk)
          got_size += out.write(chunk)
      if digest.hexdigest() != expected or size not in (None, got_size):
        raise UserError(
            f"download of {url} does not match its checksum (got {got_size} "
            f"bytes, {algorithm.upper()} {digest.hexdigest()[:12]}..., expected "
            f"{size or 'any number of'} bytes, {expected[:12]}...); it was "
            f"removed, try again")
  except (urllib.error.URLError, OSError) as e:
    raise UserError(f"{missing} and downloading {url} failed "
                    f"({getattr(e, 'reason', e)}); {fix}") from None
  return target


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
    return checked(name, path, BUILTIN[SLICES[name][0]].class_names,
                   arrays["train_images"], arrays["train_labels"],
                   arrays["test_images"], arrays["test_labels"])


def write_packaged(name: str, data_dir: str | os.PathLike,
                   out_dir: Path = PACKAGED_DIR) -> str:
  """Makes `<out_dir>/<name>.npz` from the parent's files in `data_dir`;
  returns its sha256, for `PACKAGED` (the same bytes every time)."""
  parent, per_class = SLICES[name]
  sliced = _class_slice(load_idx(Path(data_dir) / parent, BUILTIN[parent]), name,
                        per_class)
  path = Path(out_dir) / f"{name}.npz"
  # [N, 28, 28], as the file has always held them (its sha256 is pinned).
  np.savez_compressed(path, train_images=sliced.train_images[..., 0],
                      train_labels=sliced.train_labels.astype(np.uint8),
                      test_images=sliced.test_images[..., 0],
                      test_labels=sliced.test_labels.astype(np.uint8))
  return hashlib.sha256(path.read_bytes()).hexdigest()
