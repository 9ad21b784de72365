"""MedMNIST v2 and any dataset in its `.npz` layout, read into a Dataset.

The layout is one `.npz` archive holding `train_images`, `train_labels`,
`test_images`, `test_labels` and optionally `val_images`, `val_labels`:
images uint8 [N, H, W] or [N, H, W, C], labels [N] or [N, 1]. MedMNIST v2
ships its 2D datasets this way, and it is the easiest format for a researcher
to write from numpy, so `load_npz` reads a user's file in the same layout.

`MEDMNIST` registers the 12 MedMNIST v2 2D datasets as the official
`medmnist` package (3.0.2, `medmnist/info.py`) does: Zenodo URL and MD5 per
image size (28, and MedMNIST+'s 64, 128, 224), class names, task, channels
and split sizes. MD5 is what MedMNIST registers (no sha256 is published); it
guards against a broken or wrong download, which is what it is used for here.
ChestMNIST is listed, but refused by `load_medmnist`: it is multi-label and
the models here are single-label classifiers.

Archives are read with `allow_pickle=False`: a pickled object in a data file
can run code when loaded, so it is refused instead.
"""

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from mnist_jax import fileio
from mnist_jax.errors import UserError
from mnist_jax.sources.dataset import Dataset, checked

SIZES = (28, 64, 128, 224)
# Every file of MedMNIST v2 (and MedMNIST+) lives in this Zenodo record,
# as `<name>[_<size>].npz`; the package's URLs add `?download=1`.
ZENODO_RECORD = "https://zenodo.org/records/10519652/files/"
REQUIRED_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
VAL_KEYS = ("val_images", "val_labels")
# Labels are class indices: a largest label beyond this is not a class count
# (an "ignore" value such as 255 is caught by the missing-class check instead).
_MAX_CLASSES = 100_000


@dataclasses.dataclass(frozen=True)
class MedMNISTInfo:
  """What the `medmnist` package registers about one 2D dataset."""
  name: str
  task: str  # "multi-class", "binary", "multi-label" or "ordinal".
  channels: int  # 1 (grayscale) or 3 (RGB).
  samples: tuple[int, int, int]  # Images in train, val, test.
  class_names: tuple[str, ...]  # Label index -> name.
  md5: dict[int, str]  # Image size -> MD5 of `file_name(size)`.

  def file_name(self, size: int = 28) -> str:
    """The official file name: `<name>.npz` at 28x28, `<name>_<size>.npz` else."""
    return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"

  def url(self, size: int = 28) -> str:
    return f"{ZENODO_RECORD}{self.file_name(size)}?download=1"


def _info(name, task, channels, samples, class_names, md5) -> tuple[str, MedMNISTInfo]:
  return name, MedMNISTInfo(name, task, channels, samples, class_names, md5)


# The three OrganMNIST views share their 11 organs.
_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left",
           "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen")

# Copied from medmnist 3.0.2's info.py by a script (the URLs there are all
# `ZENODO_RECORD + file_name + "?download=1"`, checked by the same script).
MEDMNIST = dict([
    _info("pathmnist", "multi-class", 3, (89996, 10004, 7180),
          ("adipose", "background", "debris", "lymphocytes", "mucus",
           "smooth muscle", "normal colon mucosa", "cancer-associated stroma",
           "colorectal adenocarcinoma epithelium"),
          {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
           128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"}),
    _info("chestmnist", "multi-label", 1, (78468, 11219, 22433),
          ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass",
           "nodule", "pneumonia", "pneumothorax", "consolidation", "edema",
           "emphysema", "fibrosis", "pleural", "hernia"),
          {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
           128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"}),
    _info("dermamnist", "multi-class", 3, (7007, 1003, 2005),
          ("actinic keratoses and intraepithelial carcinoma",
           "basal cell carcinoma", "benign keratosis-like lesions",
           "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"),
          {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
           128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"}),
    _info("octmnist", "multi-class", 1, (97477, 10832, 1000),
          ("choroidal neovascularization", "diabetic macular edema", "drusen",
           "normal"),
          {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
           128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"}),
    _info("pneumoniamnist", "binary", 1, (4708, 524, 624),
          ("normal", "pneumonia"),
          {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
           128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}),
    _info("retinamnist", "ordinal", 3, (1080, 120, 400),
          ("0", "1", "2", "3", "4"),  # Diabetic retinopathy severity grades.
          {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
           128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"}),
    _info("breastmnist", "binary", 1, (546, 78, 156),
          ("malignant", "normal, benign"),
          {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
           128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"}),
    _info("bloodmnist", "multi-class", 3, (11959, 1712, 3421),
          ("basophil", "eosinophil", "erythroblast",
           "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
           "lymphocyte", "monocyte", "neutrophil", "platelet"),
          {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
           128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"}),
    _info("tissuemnist", "multi-class", 1, (165466, 23640, 47280),
          ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
           "Glomerular endothelial cells", "Interstitial endothelial cells",
           "Leukocytes", "Podocytes", "Proximal Tubule Segments",
           "Thick Ascending Limb"),
          {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
           128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"}),
    _info("organamnist", "multi-class", 1, (34561, 6491, 17778), _ORGANS,
          {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
           128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"}),
    _info("organcmnist", "multi-class", 1, (12975, 2392, 8216), _ORGANS,
          {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
           128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"}),
    _info("organsmnist", "multi-class", 1, (13932, 2452, 8827), _ORGANS,
          {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
           128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"}),
])


def load_medmnist(name: str, folder: Path, size: int = 28) -> Dataset:
  """MedMNIST v2 dataset `name` at `size`x`size` from `folder` (data.load
  passes `<data_dir>/medmnist`), downloaded there first if missing. Keeps
  the official validation split."""
  info = MEDMNIST.get(name)
  if info is None:
    usable = [n for n, i in MEDMNIST.items() if i.task != "multi-label"]
    raise UserError(f"unknown MedMNIST dataset '{name}'; the 2D MedMNIST v2 "
                    f"datasets loaded here are {', '.join(usable)}")
  if info.task == "multi-label":
    raise UserError(
        f"{name} is multi-label ({len(info.class_names)} findings, any number "
        f"per image) and mnist_jax trains single-label classifiers only; "
        f"choose another MedMNIST dataset")
  if size not in SIZES:
    raise UserError(f"MedMNIST has no size {size}; choose one of "
                    f"{', '.join(map(str, SIZES))}")
  folder = Path(folder)
  path = folder / info.file_name(size)
  if not path.is_file():
    download_medmnist(info, size, folder)
  arrays = read_npz(path, hint="; delete it and it is downloaded again")
  expected = (size, size, info.channels)
  for key in ("train_images", "val_images", "test_images"):
    images = arrays.get(key)
    got = None if images is None else images.shape[1:] + (1,) * (images.ndim == 3)
    if got != expected:
      raise UserError(
          f"{path}: {key} are {'missing' if got is None else 'x'.join(map(str, got))}"
          f", but {info.file_name(size)} holds {'x'.join(map(str, expected))} "
          f"images; it is not the official file, delete it and it is "
          f"downloaded again")
  return checked(name, path, info.class_names, **arrays)


def download_medmnist(info: MedMNISTInfo, size: int, folder: Path) -> Path:
  """Downloads `info.file_name(size)` into `folder`, MD5-checked against the
  registered value, written atomically (a failed or bad download leaves
  nothing behind)."""
  file_name = info.file_name(size)
  return fileio.fetch(info.url(size), folder / file_name, "md5", info.md5[size], None,
                     f"{file_name} is not in {folder}",
                     f"download it yourself, put it in {folder}, or set data_dir / "
                     f"MNIST_JAX_DATA to a folder holding medmnist/{file_name}")


def load_npz(path: Path, name: str) -> Dataset:
  """A user's dataset in MedMNIST's `.npz` layout (see the module docstring);
  class names "0".."K-1", K = largest label + 1 over all splits."""
  path = Path(path)
  arrays = read_npz(path)
  all_labels = [v for k, v in arrays.items() if k.endswith("_labels") and v is not None]
  # An empty split is refused by checked, naming it.
  num_classes = max(int(labels.max(initial=0)) for labels in all_labels) + 1
  if num_classes > _MAX_CLASSES:
    raise UserError(
        f"{path}: the largest label is {num_classes - 1}; labels must be "
        f"class indices 0..K-1, fix the labels")
  class_names = tuple(str(c) for c in range(max(num_classes, 1)))
  return checked(name, path, class_names, **arrays)


def read_npz(path: Path, hint: str = "") -> dict[str, np.ndarray | None]:
  """The six arrays of an `.npz` dataset (val_* None when absent), as keyword
  arguments of checked, each user mistake one line naming `path` (with
  `hint` appended to errors about a broken file)."""
  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise UserError(f"cannot read {path} ({e.strerror}); give the path of "
                    f"an .npz file") from None
  # np.load would take any other bytes for a pickle and say only that.
  if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
    raise UserError(
        f"{path} is not an .npz file (a zip of .npy arrays, as np.savez "
        f"writes){hint}")
  arrays = {}
  try:
    with np.load(path, allow_pickle=False) as npz:
      keys = list(npz.files)
      for key in REQUIRED_KEYS:
        if key not in keys:
          raise UserError(
              f"{path} has no '{key}' array (it holds: {', '.join(keys) or 'nothing'}"
              f"); it needs {', '.join(REQUIRED_KEYS)} and optionally "
              f"{', '.join(VAL_KEYS)}")
      for key in REQUIRED_KEYS + VAL_KEYS:
        arrays[key] = _array(npz, key, path) if key in keys else None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a readable .npz file ({e}){hint}") from None
  for key in ("train_images", "val_images", "test_images"):
    images = arrays[key]
    if images is not None and images.dtype != np.uint8:
      raise UserError(
          f"{path}: {key} are {images.dtype}; images must be uint8 0..255, "
          f"convert them (floats in 0..1: (x * 255).round().astype(np.uint8))")
  for key in ("train_labels", "val_labels", "test_labels"):
    labels = arrays[key]
    if labels is not None and not np.issubdtype(labels.dtype, np.integer):
      raise UserError(
          f"{path}: {key} are {labels.dtype}; labels must be integer class "
          f"indices 0..K-1 (whole-number floats: labels.astype(np.int64))")
    if labels is not None and labels.ndim == 2 and labels.shape[1] > 1:
      raise UserError(
          f"{path}: {key} have shape {labels.shape}, one-hot or multi-label; "
          f"give one class index per image, [N] or [N, 1] (one-hot: "
          f"labels.argmax(1))")
  return arrays


def _array(npz, key: str, path: Path) -> np.ndarray:
  try:
    return npz[key]
  except ValueError as e:
    if "allow_pickle" not in str(e):
      raise
    raise UserError(
        f"{path}: '{key}' holds pickled Python objects, which are not loaded "
        f"(unpickling can run code); save plain numeric arrays, uint8 images "
        f"and integer labels") from None
