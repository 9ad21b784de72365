"""A dataset that is a folder of image files, one subfolder per class.

The layout torchvision's ImageFolder and Ultralytics' classification datasets
use:

  <root>/train/<class>/*.png|jpg|jpeg|bmp|gif|tif|tiff|webp
  <root>/test/<class>/...   (or val/ when there is no test/; with both,
                             val/ is the validation split)

Class names are train/'s subfolder names, sorted; test/ and val/ may hold a
subset of them. Images may sit in nested folders under a class folder; hidden
files and folders (.DS_Store, ._x.png, .ipynb_checkpoints) are skipped.

Pixels: grayscale files ('1', 'L', 'LA'; 16-bit 'I;16' scaled to 8 bits as
predict.py does) give C=1; colour files ('RGB', 'RGBA', 'P', CMYK, ...) give
C=3 RGB, alpha dropped. A folder mixing the two kinds is refused rather than
silently converted, since which way to convert is the user's call. Images of
different sizes are refused unless `image_size` is set: then every image is
resized to image_size x image_size (aspect ratio not kept) with Pillow's
LANCZOS filter, which is antialiased when shrinking, the filter predict.py
uses too.

Decoding 70,000 small files takes seconds, so the decoded arrays are cached
as an uncompressed uint8 .npz (uncompressed: it loads fastest) in
`<root>/.mnist_jax_cache/`, or, when the data folder is not writable, in
`cache_dir` (default `$XDG_CACHE_HOME/mnist_jax/folder_cache/<hash of root>/`).
The cache's name is a hash of every file's relative path, size and mtime and
of image_size: a changed folder is decoded again. Decoding is sequential: a
thread pool did not help measurably on 2 cores (benchmarks/folder_load.py).
"""

import contextlib
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnist_jax import fileio
from mnist_jax.errors import UserError
from mnist_jax.sources.dataset import Dataset, checked

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CACHE_FOLDER = ".mnist_jax_cache"
_CACHE_VERSION = 1  # Bump when the decoding changes: old caches are then unused.
_GRAY_MODES = ("1", "L", "LA")
_HOW = ("an image folder dataset is train/<class>/*.png and test/<class>/*.png "
        "(or val/<class>/)")


def load_folder(root: Path, image_size: int | None = None,
                cache_dir: Path | None = None) -> Dataset:
  """The dataset in image folder `root` (see the module docstring), decoded
  once and cached; `image_size` resizes every image to that square size."""
  root = Path(root).expanduser().absolute()  # "." gets its name.
  if image_size is not None and image_size < 1:
    raise UserError(f"image_size must be a positive number of pixels, got "
                    f"{image_size}")
  split_dirs = _split_dirs(root)
  class_names = _class_names(split_dirs["train"])
  files = {split: _listed(folder, class_names)
           for split, folder in split_dirs.items()}
  key = _cache_key(root, files, image_size)
  places = _cache_places(root, cache_dir)
  arrays = _read_cache(places, key)
  if arrays is None:
    arrays = _decoded(files, image_size)
    _write_cache(places, key, arrays)
  return checked(
      root.name, root, class_names, arrays["train_images"], arrays["train_labels"],
      arrays["test_images"], arrays["test_labels"], arrays.get("val_images"),
      arrays.get("val_labels"))


def _split_dirs(root: Path) -> dict[str, Path]:
  """split -> folder: train, test and, where both test/ and val/ exist, val."""
  if not root.is_dir():
    what = "is not a folder" if root.exists() else "does not exist"
    raise UserError(f"image folder {root} {what}; {_HOW}")
  if not (root / "train").is_dir():
    raise UserError(f"{root} has no train/ folder; {_HOW}")
  test, val = root / "test", root / "val"
  if test.is_dir():
    return {"train": root / "train", "test": test,
            **({"val": val} if val.is_dir() else {})}
  if val.is_dir():
    return {"train": root / "train", "test": val}
  raise UserError(f"{root} has train/ but no test/ or val/ folder to evaluate "
                  f"on; {_HOW}")


def _class_folders(split_dir: Path) -> list[Path]:
  folders = sorted(p for p in split_dir.iterdir()
                   if p.is_dir() and not p.name.startswith("."))
  if not folders:
    raise UserError(f"{split_dir} has no class folders; put each class's "
                    f"images in {split_dir}/<class name>/")
  return folders


def _class_names(train_dir: Path) -> tuple[str, ...]:
  return tuple(p.name for p in _class_folders(train_dir))


def _listed(split_dir: Path, class_names) -> list[tuple[str, int, int, int]]:
  """(file, class index, size, mtime ns) of every image under `split_dir`,
  sorted. Plain strings and os.scandir, not Path: listing 70,000 files is
  most of a cached load, and pathlib tripled it."""
  listed = []
  for folder in _class_folders(split_dir):
    if folder.name not in class_names:
      raise UserError(
          f"{folder} is a class that train/ does not have (train's classes: "
          f"{', '.join(class_names[:20])}{' ...' if len(class_names) > 20 else ''}"
          f"); rename it or add {split_dir.parent / 'train' / folder.name}/")
    label = class_names.index(folder.name)
    images = sorted(_image_files(str(folder)))
    if not images:
      raise UserError(f"class folder {folder} holds no images "
                      f"({', '.join(IMAGE_SUFFIXES)}); add some or remove it")
    listed += [(path, label, size, mtime) for path, size, mtime in images]
  return listed


def _image_files(folder: str) -> list[tuple[str, int, int]]:
  """(path, size, mtime ns) of the image files under `folder`, nested
  folders included; hidden files and folders skipped."""
  found = []
  with os.scandir(folder) as entries:
    for entry in entries:
      if entry.name.startswith("."):
        continue
      if entry.is_dir():
        found += _image_files(entry.path)
      elif os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{entry.path} is not an image file (image folders hold "
                        f"only {', '.join(IMAGE_SUFFIXES)}); move it out of the "
                        f"dataset folder")
      else:
        stat = entry.stat()
        found.append((entry.path, stat.st_size, stat.st_mtime_ns))
  return found


def _cache_key(root: Path, files, image_size: int | None) -> str:
  """`<size>-<hash>`: the hash of every file's relative path, size and
  mtime (ns), so any added, removed, renamed or rewritten file changes it."""
  start = len(str(root)) + 1  # The relative path: a moved folder keeps its cache.
  lines = [f"v{_CACHE_VERSION} {image_size}"]
  for split, listed in files.items():
    lines += [f"{split} {label} {path[start:]} {size} {mtime}"
              for path, label, size, mtime in listed]
  digest = hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape"))
  size = f"{image_size}px" if image_size else "native"
  return f"{size}-{digest.hexdigest()[:24]}"


def _cache_places(root: Path, cache_dir: Path | None) -> list[Path]:
  """Where the cache may be, in order: beside the data, then `cache_dir`."""
  if cache_dir is None:
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    root_hash = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    cache_dir = home / "mnist_jax" / "folder_cache" / root_hash
  return [root / CACHE_FOLDER, Path(cache_dir).expanduser()]


def _read_cache(places: list[Path], key: str) -> dict[str, np.ndarray] | None:
  for place in places:
    path = place / f"{key}.npz"
    if not path.is_file():
      continue
    try:
      with np.load(path, allow_pickle=False) as cached:
        return {name: cached[name] for name in cached.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
      pass  # A damaged cache is decoded again and overwritten.
  return None


def _write_cache(places: list[Path], key: str, arrays: dict[str, np.ndarray]):
  """Writes the cache in the first place that takes it; a dataset that
  cannot be cached anywhere still loads (with a note)."""
  errors = []
  for place in places:
    created = not place.exists()
    try:
      place.mkdir(parents=True, exist_ok=True)
      with fileio.atomic_file(place / f"{key}.npz", "wb") as f:
        np.savez(f, **arrays)
    except OSError as e:
      errors.append(f"{place} ({e.strerror or e})")
      if created:  # Leave no empty folder behind.
        with contextlib.suppress(OSError):
          place.rmdir()
      continue
    # Caches of earlier versions of the folder at this image size are stale.
    for old in place.glob(f"{key.split('-')[0]}-*.npz"):
      if old.name != f"{key}.npz":
        old.unlink(missing_ok=True)
    return
  print(f"note: the decoded images were not cached: cannot write "
        f"{' or '.join(errors)}", file=sys.stderr)


def _decoded(files, image_size: int | None) -> dict[str, np.ndarray]:
  """Decodes every file: `<split>_images` uint8 [N, H, W, C], `<split>_labels`."""
  first = {}  # "grayscale"/"RGB" -> its first file; "size" -> (file, size)
  arrays = {}
  for split, listed in files.items():
    images = [_decoded_one(Path(path), image_size, first) for path, *_ in listed]
    arrays[f"{split}_images"] = np.stack(images)
    arrays[f"{split}_labels"] = np.array([label for _, label, *_ in listed], np.int32)
  return arrays


def _decoded_one(path: Path, image_size: int | None, first: dict) -> np.ndarray:
  """One file as uint8 [H, W, C]; `first` remembers the first file of each
  kind and size, to name in the error when another file differs."""
  try:
    with Image.open(path) as image:  # Closes the file: 70,000 of them.
      image.load()
      return _pixels(path, image, image_size, first)
  # A corrupt file fails as any of these, some only when decoded (load).
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
          Image.DecompressionBombError) as e:
    raise UserError(f"{path} cannot be read as an image "
                    f"({' '.join(str(e).split())}); replace it with a readable "
                    f"image or remove it") from None


def _pixels(path: Path, image: Image.Image, image_size: int | None,
            first: dict) -> np.ndarray:
  if image.mode == "F":  # 32-bit float: no standard mapping to 0..255.
    raise UserError(f"{path} is a floating-point image; save it as 8-bit "
                    f"grayscale or RGB")
  gray = image.mode in _GRAY_MODES or image.mode.startswith("I")
  kind, other = ("grayscale", "RGB") if gray else ("RGB", "grayscale")
  first.setdefault(kind, path)
  if other in first:
    raise UserError(
        f"a grayscale/RGB mix: {first['grayscale']} is grayscale but "
        f"{first['RGB']} is RGB; convert every image to one kind (e.g. all to "
        f"RGB) and load again")
  if image.mode.startswith("I"):  # 16-bit: 0..65535 scaled, not clipped, to 0..255.
    pixels = (np.asarray(image, np.float32).clip(0, 65535) / 257).round()
    image = Image.fromarray(pixels.astype(np.uint8))
  elif image.mode != ("L" if gray else "RGB"):
    image = image.convert("L" if gray else "RGB")
  if image_size:
    if image.size != (image_size, image_size):
      image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
  else:
    first_path, first_size = first.setdefault("size", (path, image.size))
    if image.size != first_size:
      raise UserError(
          f"images of different sizes: {first_path} is {_wxh(first_size)} but "
          f"{path} is {_wxh(image.size)}; set --config.image_size=S to resize "
          f"every image to SxS when loading")
  pixels = np.asarray(image, np.uint8)
  return pixels[..., None] if gray else pixels


def _wxh(size: tuple[int, int]) -> str:
  return f"{size[0]}x{size[1]}"
