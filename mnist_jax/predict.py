"""Classifies image files: `python -m mnist_jax.predict --workdir=DIR IMAGE...`.

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

from pathlib import Path

import jax
import numpy as np
from absl import flags
from PIL import Image, UnidentifiedImageError

from mnist_jax import cli
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained

_WORKDIR = cli.workdir_flag()
_MEMBER = cli.member_flag()
_CHECKPOINT = cli.checkpoint_flag()
_INVERT = flags.DEFINE_enum("invert", "auto", ["auto", "yes", "no"],
                            "Invert the image (dark ink on light paper).")
_FIT = flags.DEFINE_enum("fit", "auto", ["auto", "digit", "whole"],
                         "How to frame the image in 28x28.")
_TOP = flags.DEFINE_integer("top", 1, "How many classes to print per image.")

DIGIT_DATASETS = ("mnist", "mnist160", "kmnist")


def _read_grayscale(path: Path) -> np.ndarray:
  """float32 [H, W] in 0..255: 16-bit scaled, transparency made paper."""
  try:
    image = Image.open(path)
    image.load()
  except FileNotFoundError:
    raise UserError(f"{path} does not exist") from None
  # A corrupt file fails as any of these, some only when decoded (load).
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
          Image.DecompressionBombError) as e:
    raise UserError(f"{path} is not an image that can be read "
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
    raise UserError(f"{path} is blank: nothing to classify")
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


def predict(workdir, paths: list[str], invert="auto", fit="auto", top=1,
            member: int | None = None, checkpoint: str = ""):
  """[(path, [(class name, probability), ...]), ...], best first, by the
  run's model (member `member` of a run of several)."""
  trained = load_trained(workdir, member, checkpoint)
  if fit == "auto":
    fit = ("digit" if trained.config.dataset in DIGIT_DATASETS
           or trained.config.dataset.startswith("emnist") else "whole")
  images_NHWC = np.stack([to_dataset_format(Path(p), trained.image_shape, invert, fit)
                          for p in paths])
  logits_NK = trained.logits_fn(trained.state, images_NHWC)
  probabilities_NK = np.asarray(jax.nn.softmax(logits_NK, axis=-1))
  results = []
  for path, probabilities_K in zip(paths, probabilities_NK):
    best = np.argsort(-probabilities_K)[:top]
    results.append((path, [(trained.class_names[k], float(probabilities_K[k]))
                           for k in best]))
  return results


def main(argv):
  paths = argv[1:]
  if not _WORKDIR.value:
    raise UserError("--workdir is required: the workdir of a training run")
  if not paths:
    raise UserError("name one or more image files to classify")
  if _TOP.value < 1:
    raise UserError(f"--top must be at least 1, got {_TOP.value}")
  for path, ranked in predict(_WORKDIR.value, paths, _INVERT.value, _FIT.value,
                              _TOP.value, _MEMBER.value, _CHECKPOINT.value):
    print(f"{path}\t" + "\t".join(f"{name} {100 * p:.1f}%" for name, p in ranked))


if __name__ == "__main__":
  cli.run(main)
