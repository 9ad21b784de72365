"""sources.folder: image folders (train/<class>/, test/ or val/) decoded
once, cached, and every user mistake refused in one line naming the path."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_jax import fileio
from mnist_jax.errors import UserError
from mnist_jax.sources import folder


def _image(path: Path, pixels: np.ndarray, mode: str | None = None) -> np.ndarray:
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(pixels)
  (image.convert(mode) if mode else image).save(path)
  return pixels


def _pixels(seed: int, shape=(4, 4)) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _dataset(root: Path, splits=("train", "test"), classes=("b", "a"),
             per_class: int = 2, shape=(4, 4)) -> dict[str, list[np.ndarray]]:
  """Lossless PNGs, 2 per class per split; returns split -> pixels in load
  order (classes sorted, files sorted)."""
  written = {}
  for s, split in enumerate(splits):
    for c, name in enumerate(sorted(classes)):
      for i in range(per_class):
        pixels = _pixels(100 * s + 10 * c + i, shape)
        written.setdefault(split, []).append(
            _image(root / split / name / f"{i}.png", pixels))
  return written


def _error(root: Path, **kwargs) -> str:
  with pytest.raises(UserError) as caught:
    folder.load_folder(root, **kwargs)
  message = str(caught.value)
  assert "\n" not in message
  return message


def test_a_grayscale_folder_loads_with_sorted_class_names_and_exact_pixels(tmp_path):
  root = tmp_path / "digits"
  written = _dataset(root)
  (root / "train" / "a" / ".DS_Store").write_bytes(b"\0junk")  # Hidden: skipped.
  dataset = folder.load_folder(root, cache_dir=tmp_path / "cache")
  assert dataset.name == "digits" and dataset.class_names == ("a", "b")
  assert dataset.train_images.shape == (4, 4, 4, 1) and dataset.image_shape == (4, 4, 1)
  np.testing.assert_array_equal(dataset.train_images[..., 0], np.stack(written["train"]))
  np.testing.assert_array_equal(dataset.test_images[..., 0], np.stack(written["test"]))
  assert dataset.train_labels.tolist() == [0, 0, 1, 1]
  assert dataset.train_labels.dtype == np.int32 and dataset.val_images is None


def test_colour_files_of_any_mode_become_three_channel_rgb(tmp_path):
  root = tmp_path / "colour"
  rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
  _image(root / "train" / "x" / "rgb.png", rgb)
  _image(root / "train" / "y" / "rgba.png", rgb, "RGBA")
  _image(root / "train" / "y" / "palette.gif", rgb, "P")
  _image(root / "test" / "x" / "t.png", rgb)
  dataset = folder.load_folder(root, cache_dir=tmp_path / "cache")
  assert dataset.train_images.shape == (3, 4, 4, 3)
  np.testing.assert_array_equal(dataset.train_images[0], rgb)
  np.testing.assert_array_equal(dataset.train_images[2], rgb)  # rgba.png, alpha dropped.


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
  root = tmp_path / "deep"
  _image(root / "train" / "a" / "x.png", np.array([[0, 65535], [257, 25700]], np.uint16))
  _image(root / "test" / "a" / "x.png", np.zeros((2, 2), np.uint8))
  dataset = folder.load_folder(root, cache_dir=tmp_path / "cache")
  assert dataset.train_images[0, ..., 0].tolist() == [[0, 255], [1, 100]]


def test_image_size_resizes_every_image_with_an_antialiased_filter(tmp_path):
  root = tmp_path / "sizes"
  _image(root / "train" / "a" / "small.png", np.full((4, 4), 200, np.uint8))
  _image(root / "train" / "a" / "wide.png", np.full((6, 9), 90, np.uint8))
  stripes = np.zeros((10, 10), np.uint8)
  stripes[:, ::2] = 255  # Averaged to mid-gray by an antialiased shrink, not sampled.
  _image(root / "test" / "a" / "stripes.png", stripes)
  dataset = folder.load_folder(root, image_size=5, cache_dir=tmp_path / "cache")
  assert dataset.image_shape == (5, 5, 1)
  assert (dataset.train_images[0] == 200).all() and (dataset.train_images[1] == 90).all()
  assert 100 < dataset.test_images[0].mean() < 155


def test_images_of_different_sizes_need_image_size(tmp_path):
  root = tmp_path / "sizes"
  _image(root / "train" / "a" / "1.png", _pixels(0, (4, 4)))
  _image(root / "train" / "a" / "2.png", _pixels(1, (5, 4)))
  _image(root / "test" / "a" / "1.png", _pixels(2, (4, 4)))
  message = _error(root)
  assert "1.png is 4x4" in message and "2.png is 4x5" in message
  assert "--config.image_size" in message


def test_a_grayscale_rgb_mix_is_refused_naming_one_file_of_each(tmp_path):
  root = tmp_path / "mix"
  _image(root / "train" / "a" / "gray.png", _pixels(0))
  _image(root / "train" / "b" / "colour.png", _pixels(1, (4, 4, 3)))
  _image(root / "test" / "a" / "gray.png", _pixels(2))
  message = _error(root)
  assert "grayscale/RGB mix" in message
  assert f"{root}/train/a/gray.png is grayscale" in message
  assert f"{root}/train/b/colour.png is RGB" in message


def test_val_is_the_test_split_without_test_and_the_validation_split_with_it(tmp_path):
  only_val = tmp_path / "only_val"
  written = _dataset(only_val, splits=("train", "val"))
  dataset = folder.load_folder(only_val, cache_dir=tmp_path / "cache1")
  np.testing.assert_array_equal(dataset.test_images[..., 0], np.stack(written["val"]))
  assert dataset.val_images is None

  both = tmp_path / "both"
  written = _dataset(both, splits=("train", "test", "val"))
  dataset = folder.load_folder(both, cache_dir=tmp_path / "cache2")
  np.testing.assert_array_equal(dataset.test_images[..., 0], np.stack(written["test"]))
  np.testing.assert_array_equal(dataset.val_images[..., 0], np.stack(written["val"]))
  assert dataset.val_labels.tolist() == [0, 0, 1, 1]


def test_test_classes_may_be_a_subset_of_train_classes(tmp_path):
  root = tmp_path / "subset"
  _dataset(root, splits=("train",), classes=("a", "b", "c"))
  _image(root / "test" / "c" / "x.png", _pixels(9))
  dataset = folder.load_folder(root, cache_dir=tmp_path / "cache")
  assert dataset.class_names == ("a", "b", "c") and dataset.test_labels.tolist() == [2]


@pytest.mark.parametrize("mistake, expected", [
    ("root_missing", "does not exist"),
    ("no_train", "has no train/ folder"),
    ("no_classes", "train has no class folders"),
    ("empty_class", "class folder {root}/train/c holds no images"),
    ("not_an_image", "{root}/train/a/notes.txt is not an image file"),
    ("corrupt", "{root}/train/a/broken.png cannot be read as an image"),
    ("no_test", "has train/ but no test/ or val/"),
    ("unknown_test_class", "{root}/test/z is a class that train/ does not have"),
    ("empty_test", "{root}/test has no class folders"),
])
def test_every_mistake_is_one_line_naming_the_path(tmp_path, mistake, expected):
  root = tmp_path / "data"
  _dataset(root)
  if mistake == "root_missing":
    root = tmp_path / "nowhere"
  elif mistake == "no_train":
    (root / "train").rename(root / "training")
  elif mistake == "no_classes":
    for path in (root / "train").rglob("*.png"):
      path.unlink()
    for path in sorted((root / "train").iterdir()):
      path.rmdir()
  elif mistake == "empty_class":
    (root / "train" / "c").mkdir()
  elif mistake == "not_an_image":
    (root / "train" / "a" / "notes.txt").write_text("hello")
  elif mistake == "corrupt":
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  elif mistake == "no_test":
    (root / "test").rename(root / "testing")
  elif mistake == "unknown_test_class":
    _image(root / "test" / "z" / "x.png", _pixels(0))
  elif mistake == "empty_test":
    for path in (root / "test").rglob("*.png"):
      path.unlink()
    for path in sorted((root / "test").iterdir()):
      path.rmdir()
  assert expected.format(root=root) in _error(root, cache_dir=tmp_path / "cache")


def _no_decoding(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("decoded although the cache is valid")
  monkeypatch.setattr(folder.Image, "open", refuse)


def test_the_second_load_comes_from_the_cache_beside_the_data(tmp_path, monkeypatch):
  root = tmp_path / "data"
  _dataset(root)
  first = folder.load_folder(root, cache_dir=tmp_path / "elsewhere")
  assert len(list((root / folder.CACHE_FOLDER).glob("*.npz"))) == 1
  assert not (tmp_path / "elsewhere").exists()
  with monkeypatch.context() as patched:
    _no_decoding(patched)
    second = folder.load_folder(root, cache_dir=tmp_path / "elsewhere")
  np.testing.assert_array_equal(first.train_images, second.train_images)
  np.testing.assert_array_equal(first.test_labels, second.test_labels)
  assert second.class_names == first.class_names
  # Another image_size is another cache: decoded, not read from this one.
  resized = folder.load_folder(root, image_size=2)
  assert resized.image_shape == (2, 2, 1)


def test_a_changed_file_is_decoded_again_and_the_stale_cache_removed(tmp_path, monkeypatch):
  root = tmp_path / "data"
  _dataset(root)
  folder.load_folder(root)
  changed = root / "train" / "a" / "0.png"
  new_pixels = _image(changed, _pixels(77))
  stat_before = changed.stat()
  os.utime(changed, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns + 10**9))
  dataset = folder.load_folder(root)
  np.testing.assert_array_equal(dataset.train_images[0, ..., 0], new_pixels)
  assert len(list((root / folder.CACHE_FOLDER).glob("*.npz"))) == 1

  # Only touched (same bytes, new mtime): decoded again too.
  opened = []
  real_open = folder.Image.open
  monkeypatch.setattr(folder.Image, "open", lambda p: opened.append(p) or real_open(p))
  os.utime(changed, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns + 2 * 10**9))
  folder.load_folder(root)
  assert len(opened) == 8
  # An added file too.
  _image(root / "test" / "b" / "new.png", _pixels(5))
  assert len(folder.load_folder(root).test_images) == 5


def test_a_damaged_cache_is_decoded_again(tmp_path):
  root = tmp_path / "data"
  written = _dataset(root)
  folder.load_folder(root)
  (cache,) = (root / folder.CACHE_FOLDER).glob("*.npz")
  cache.write_bytes(b"PK\x03\x04 truncated")
  dataset = folder.load_folder(root)
  np.testing.assert_array_equal(dataset.train_images[..., 0], np.stack(written["train"]))


def _read_only(root: Path, monkeypatch):
  """Makes `root` unwritable, also for root (uid 0), whom modes do not stop."""
  root.chmod(stat.S_IRUSR | stat.S_IXUSR)
  real_atomic_file = fileio.atomic_file

  def atomic_file(path, mode="w"):
    if Path(path).is_relative_to(root):
      raise PermissionError(13, "Permission denied", str(path))
    return real_atomic_file(path, mode)
  monkeypatch.setattr(folder.fileio, "atomic_file", atomic_file)


def test_a_read_only_data_folder_is_cached_in_cache_dir(tmp_path, monkeypatch):
  root = tmp_path / "data"
  _dataset(root)
  _read_only(root, monkeypatch)
  try:
    first = folder.load_folder(root, cache_dir=tmp_path / "cache")
    assert not (root / folder.CACHE_FOLDER).exists()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    with monkeypatch.context() as patched:
      _no_decoding(patched)
      second = folder.load_folder(root, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.train_images, second.train_images)
  finally:
    root.chmod(0o755)


def test_the_default_cache_dir_is_under_xdg_cache_home_per_data_folder(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  roots = [tmp_path / "one", tmp_path / "two"]
  for root in roots:
    _dataset(root)
    _read_only(root, monkeypatch)
  try:
    for root in roots:
      folder.load_folder(root)
    caches = list((tmp_path / "xdg" / "mnist_jax" / "folder_cache").glob("*/*.npz"))
    assert len({cache.parent for cache in caches}) == 2
  finally:
    for root in roots:
      root.chmod(0o755)


def test_a_folder_that_cannot_be_cached_anywhere_still_loads(tmp_path, monkeypatch, capsys):
  root = tmp_path / "data"
  _dataset(root)
  monkeypatch.setattr(folder.fileio, "atomic_file", _refusing_atomic_file)
  assert folder.load_folder(root, cache_dir=tmp_path / "cache").train_images.shape[0] == 4
  assert "not cached" in capsys.readouterr().err


def _refusing_atomic_file(path, mode="w"):
  raise OSError(30, "Read-only file system", str(path))
