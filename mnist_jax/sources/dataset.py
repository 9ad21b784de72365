"""A dataset as host arrays, `Dataset`, and `checked`: the checks every
source's arrays pass before they become one.

A leaf (numpy only): every source builds its Dataset here and data.py, which
calls the sources, hands it on; so neither imports the other for it.
`data.Dataset` is this type.
"""

import dataclasses

import numpy as np

from mnist_jax.errors import UserError



@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole dataset as host arrays: images uint8 [N, H, W, C] (C = 1 or 3),
  labels int32 [N]; a validation split where the dataset ships one."""
  name: str
  class_names: tuple[str, ...]
  train_images: np.ndarray | None  # None once training.py placed it on the devices.
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
    """(H, W, C) of every image (checked: every split's)."""
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
