"""Classifies image files: `python -m mnist_jax.predict --workdir=DIR PATH...`.

Each PATH is an image file, a folder (every image file under it, nested
folders included, hidden ones not; sorted) or a glob (`'scans/**/*.png'`:
the image files it matches, sorted). One line per image: its path and its
`--top` classes with their probabilities; `--out=FILE.csv` also writes
path, class, probability and the top 3 classes. Images go to the model in
batches, each compiled shape once. A file found in a folder or by a glob
that cannot be used (corrupt, blank) is reported as `skipped: PATH: why`
and the others are still classified (exit status 1); a file named itself
that cannot be used is an error. A folder or glob with no image files is
an error with exit status 2.

Any image Pillow reads (PNG, JPEG, ...; any size, colour or transparency)
is made into a 28x28 grayscale image the way the datasets' images were made:

- polarity: the datasets are light on dark. `--invert=auto` inverts an image
  whose border is light (dark ink on paper); `yes` and `no` force it.
- framing: `--fit=digit` is MNIST's recipe: the ink's bounding box scaled to
  fit 20x20, placed so that its centre of mass is at the centre of 28x28.
  `--fit=whole` scales the whole image to fit 28x28 (Fashion-MNIST's items
  fill their frame). `auto` picks `digit` for mnist, mnist160 and kmnist.
- depth: 16-bit grayscale is scaled to 8 bits (0..65535 to 0..255), not
  clipped as Pillow's own conversion to 8 bits does.
- transparency becomes the paper the image is drawn on. Mostly transparent
  (strokes drawn on a transparent sheet, as drawing apps export): the paper
  is the shade that contrasts with the strokes, white behind dark ink, black
  behind light ink. Mostly opaque (a scan with transparent margins): the
  margins take the opaque part's typical (median) shade.
"""

import contextlib
import csv
import glob
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from absl import flags, logging
from PIL import Image, UnidentifiedImageError

from mnist_jax import cli, fileio, inference
from mnist_jax.errors import UserError
from mnist_jax.sources.folder import IMAGE_SUFFIXES
from mnist_jax.trained import Trained, load_trained

_WORKDIR = cli.workdir_flag()
_MEMBER = cli.member_flag()
_CHECKPOINT = cli.checkpoint_flag()
_INVERT = flags.DEFINE_enum("invert", "auto", ["auto", "yes", "no"],
                            "Invert the image (dark ink on light paper).")
_FIT = flags.DEFINE_enum("fit", "auto", ["auto", "digit", "whole"],
                         "How to frame the image in 28x28.")
_TOP = flags.DEFINE_integer("top", 1, "How many classes to print per image.")
_OUT = cli.out_flag("Also write the predictions to this CSV file: path, "
                    "class, probability, top3 (class:probability;...).")

DIGIT_DATASETS = ("mnist", "mnist160", "kmnist")
GLOB_CHARACTERS = "*?["
CSV_COLUMNS = ("path", "class", "probability", "top3")

OnSkip = Callable[[str, str], None]  # (path, why) of a file left out.


class Unreadable(UserError):
  """An image file that cannot be classified; `reason` says why."""

  def __init__(self, path, reason: str):
    super().__init__(f"{path} {reason}")
    self.reason = reason


def _read_grayscale(path: Path) -> np.ndarray:
  """float32 [H, W] in 0..255: 16-bit scaled, transparency made paper."""
  try:
    image = Image.open(path)
    image.load()
  except FileNotFoundError:
    raise Unreadable(path, "does not exist") from None
  # A corrupt file fails as any of these, some only when decoded (load).
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
          Image.DecompressionBombError) as e:
    raise Unreadable(path, f"is not an image that can be read "
                     f"({' '.join(str(e).split())}); check that it opens in an "
                     f"image viewer, or save it again as PNG") from None
  if image.mode.startswith("I"):  # 16-bit ("I;16", "I;16B", ...) or 32-bit integers.
    return np.asarray(image, np.float32).clip(0, 65535) / 257
  if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    return _on_paper(image.convert("RGBA"))
  return np.asarray(image.convert("L"), np.float32)


def _on_paper(image: Image.Image) -> np.ndarray:
  """An RGBA image's gray levels with its transparent pixels made paper
  (see the module's docstring): float32 [H, W] in 0..255."""
  gray = np.asarray(image.convert("L"), np.float32)  # Ignores alpha.
  alpha = np.asarray(image.getchannel("A"), np.float32) / 255
  opaque = alpha >= 0.5
  if not opaque.any():
    return np.zeros_like(gray)  # Nothing drawn: blank.
  if opaque.mean() < 0.5:  # Drawn on a transparent sheet.
    ink = np.average(gray, weights=alpha)
    paper = 255.0 if ink < 128 else 0.0
  else:  # Transparent margins of opaque paper.
    paper = float(np.median(gray[opaque]))
  return alpha * gray + (1 - alpha) * paper


def _resized(pixels: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
  """Scaled, keeping the aspect ratio, to fit a box_h x box_w box."""
  h, w = pixels.shape
  scale = min(box_h / h, box_w / w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS),
                    np.float32).clip(0, 255)


def to_mnist_format(path: Path, invert: str = "auto", fit: str = "whole",
                    size: tuple[int, int] = (28, 28)) -> np.ndarray:
  """One image file as uint8 [H, W] (`size`, MNIST's 28x28 by default),
  light on dark."""
  height, width = size
  pixels = _read_grayscale(path)
  border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
  if invert == "yes" or (invert == "auto" and border.mean() > 127):
    pixels = 255 - pixels
  pixels = pixels - pixels.min()  # Background to 0, whatever the paper's shade.
  if pixels.max() <= 0:
    raise Unreadable(path, "is blank: nothing to classify")
  canvas = np.zeros((height, width), np.float32)
  if fit == "whole":
    patch = _resized(pixels, height, width)
    top, left = (height - patch.shape[0]) // 2, (width - patch.shape[1]) // 2
  else:  # MNIST's digits: 20x20 in a 28x28 field, scaled to `size`.
    box = max(1, round(20 * min(height, width) / 28))
    rows, cols = np.nonzero(pixels > 0.25 * pixels.max())
    patch = _resized(pixels[rows.min():rows.max() + 1, cols.min():cols.max() + 1],
                     box, box)
    ys, xs = np.indices(patch.shape)
    mass = patch.sum()
    centre_y, centre_x = (ys * patch).sum() / mass, (xs * patch).sum() / mass
    top = int(np.clip(round(height / 2 - centre_y), 0, height - patch.shape[0]))
    left = int(np.clip(round(width / 2 - centre_x), 0, width - patch.shape[1]))
  canvas[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
  return np.round(canvas * (255 / canvas.max())).astype(np.uint8)


def to_dataset_format(path: Path, image_shape: tuple[int, int, int],
                      invert: str = "auto", fit: str = "whole") -> np.ndarray:
  """One image file as uint8 [H, W, C], the dataset's `image_shape`:
  grayscale as MNIST's images are made (`to_mnist_format`), RGB resized
  whole (antialiased) to H x W."""
  height, width, channels = image_shape
  if channels == 1:
    return to_mnist_format(path, invert, fit, (height, width))[..., None]
  _read_grayscale(path)  # The same one-line errors for a file that is no image.
  with Image.open(path) as image:
    rgb = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
  return np.asarray(rgb, np.uint8)



def find_images(arguments: Iterable) -> list[tuple[str, bool]]:
  """(path, found) of each image to classify, in the order of `arguments`:
  a file as named (found False: it must be readable), a folder's image
  files and a glob's, sorted (found True: skipped when unreadable)."""
  files = []
  for argument in arguments:
    name = str(argument)
    if os.path.isdir(name):
      listed = _image_files(name)
      if not listed:
        raise UserError(f"{name} holds no image files ({', '.join(IMAGE_SUFFIXES)})",
                        exit_status=2)
    elif not os.path.exists(name) and any(c in name for c in GLOB_CHARACTERS):
      listed = sorted(p for p in glob.glob(name, recursive=True)
                      if _is_image_name(p) and os.path.isfile(p))
      if not listed:
        raise UserError(f"{name} matches no image files ({', '.join(IMAGE_SUFFIXES)})",
                        exit_status=2)
    else:
      files.append((argument, False))
      continue
    files += [(path, True) for path in listed]
  return files


def _is_image_name(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _image_files(folder: str) -> list[str]:
  """The image files under `folder`, nested folders included, hidden files
  and folders (a cache, a thumbnail store) not; sorted."""
  found = []
  for parent, folders, names in os.walk(folder):
    folders[:] = [f for f in folders if not f.startswith(".")]
    found += [os.path.join(parent, n) for n in names
              if not n.startswith(".") and _is_image_name(n)]
  return sorted(found)


def resolved_fit(trained: Trained, fit: str) -> str:
  if fit != "auto":
    return fit
  dataset = trained.config.dataset
  return ("digit" if dataset in DIGIT_DATASETS or dataset.startswith("emnist")
          else "whole")


def _log_skip(path: str, reason: str):
  logging.warning("skipped: %s: %s", path, reason)


def decoded_batches(files: list[tuple[str, bool]], image_shape, invert: str,
                    fit: str, batch_size: int, on_skip: OnSkip = _log_skip
                    ) -> Iterator[tuple[list[str], np.ndarray]]:
  """(paths, uint8 images [B, H, W, C]) of `files` (`find_images`), B up
  to `batch_size`; found files that cannot be used go to `on_skip`."""
  paths, images = [], []
  for path, found in files:
    try:
      images.append(to_dataset_format(Path(path), image_shape, invert, fit))
    except Unreadable as e:
      if not found:
        raise
      on_skip(path, e.reason)
      continue
    paths.append(path)
    if len(paths) == batch_size:
      yield paths, np.stack(images)
      paths, images = [], []
  if paths:
    yield paths, np.stack(images)


def predictions(trained: Trained, files: list[tuple[str, bool]], invert="auto",
                fit="auto", batch_size: int = inference.BATCH_SIZE,
                on_skip: OnSkip = _log_skip) -> Iterator[tuple[str, np.ndarray]]:
  """(path, class probabilities [K]) of each usable file of `files`
  (`find_images`), in order; files are decoded while the model runs."""
  batch_size = max(1, min(batch_size, len(files)))
  batches = decoded_batches(files, trained.image_shape, invert,
                            resolved_fit(trained, fit), batch_size, on_skip)
  for paths, probabilities_BK in inference.stream(
      inference.bound_logits_fn(trained), batches, batch_size):
    yield from zip(paths, probabilities_BK)


def ranked(probabilities_K: np.ndarray, class_names, top: int
           ) -> list[tuple[str, float]]:
  """The `top` classes, best first, with their probabilities."""
  return [(class_names[k], float(probabilities_K[k]))
          for k in np.argsort(-probabilities_K)[:top]]


def predict(workdir, paths: list, invert="auto", fit="auto", top=1,
            member: int | None = None, checkpoint: str = "",
            on_skip: OnSkip = _log_skip):
  """[(path, [(class name, probability), ...]), ...], best first, of the
  files, folders and globs `paths` (`find_images`), by the run's model
  (member `member` of a run of several)."""
  files = find_images(paths)
  trained = load_trained(workdir, member, checkpoint)
  return [(path, ranked(p, trained.class_names, top))
          for path, p in predictions(trained, files, invert, fit, on_skip=on_skip)]


def _csv_row(path, probabilities_K: np.ndarray, class_names) -> list[str]:
  (name, p), *_ = best = ranked(probabilities_K, class_names, 3)
  return [str(path), name, f"{p:.6f}", ";".join(f"{n}:{q:.6f}" for n, q in best)]


def main(argv):
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the workdir of a training run")
  if len(argv) < 2:
    raise UserError("name one or more image files, folders or globs to classify")
  if _TOP.value < 1:
    raise UserError(f"--top must be at least 1, got {_TOP.value}")
  out = Path(_OUT.value) if _OUT.value else None
  if out is not None and not out.parent.is_dir():
    raise UserError(f"--out={out}: folder {out.parent} does not exist")
  files = find_images(argv[1:])  # Before the model loads: a typo fails at once.
  trained = load_trained(_WORKDIR.value, _MEMBER.value, _CHECKPOINT.value)
  skipped = []

  def on_skip(path: str, reason: str):
    skipped.append(path)
    print(f"skipped: {path}: {reason}", file=sys.stderr, flush=True)

  with fileio.atomic_file(out) if out else contextlib.nullcontext() as table:
    writer = csv.writer(table, lineterminator="\n") if table else None
    if writer:
      writer.writerow(CSV_COLUMNS)
    for path, probabilities_K in predictions(trained, files, _INVERT.value,
                                             _FIT.value, on_skip=on_skip):
      print(f"{path}\t" + "\t".join(f"{name} {100 * p:.1f}%" for name, p in
                                     ranked(probabilities_K, trained.class_names,
                                            _TOP.value)))
      if writer:
        writer.writerow(_csv_row(path, probabilities_K, trained.class_names))
  if skipped:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
