"""MedMNIST v2 and user `.npz` datasets (mnist_jax/sources/npz.py): tiny
synthetic archives written here, the three real MedMNIST files where the
shared data folder has them, downloads through a fake urlopen (no network)."""

import dataclasses
import hashlib
import io
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mnist_jax.errors import UserError
from mnist_jax.sources import npz

SHARED_MEDMNIST = Path("/work/shared/datasets/medmnist")
REAL_FILES = ("breastmnist", "pneumoniamnist", "retinamnist")
needs_real = pytest.mark.skipif(
    not SHARED_MEDMNIST.is_dir(),
    reason=f"the real MedMNIST files are not here ({SHARED_MEDMNIST} is absent)")


def _arrays(n_train=12, n_test=6, n_val=0, classes=3, hw=28, channels=1,
            label_shape="N1"):
  """The MedMNIST layout: uint8 images, labels i % classes."""
  rng = np.random.default_rng(0)
  out = {}
  for split, n in (("train", n_train), ("test", n_test), ("val", n_val)):
    if split == "val" and not n:
      continue
    shape = (n, hw, hw) if channels == 1 else (n, hw, hw, channels)
    out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    out[f"{split}_labels"] = labels[:, None] if label_shape == "N1" else labels
  return out


def _write(path: Path, **arrays) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:  # A file object: np.savez would add ".npz".
    np.savez(f, **arrays)
  return path


def _one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(UserError) as e:
    fn(*args, **kwargs)
  message = str(e.value)
  assert "\n" not in message, message
  return message


class _Response(io.BytesIO):
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
  """Replaces the network: a URL naming a known file gets its bytes."""
  requested = []

  def urlopen(url, timeout):
    requested.append(url)
    name = url.rsplit("/", 1)[1].split("?")[0]
    if name in files:
      return _Response(files[name])
    raise urllib.error.URLError("no network")
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  return requested


def _fake_registered(monkeypatch, name: str, raw_by_size: dict[int, bytes]):
  """Registers `raw_by_size`'s MD5s for MedMNIST dataset `name`."""
  info = dataclasses.replace(npz.MEDMNIST[name], md5={
      size: hashlib.md5(raw).hexdigest() for size, raw in raw_by_size.items()})
  monkeypatch.setitem(npz.MEDMNIST, name, info)


# The registry.

def test_registry_holds_the_12_2d_datasets_at_every_size():
  assert list(npz.MEDMNIST) == [
      "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist",
      "retinamnist", "breastmnist", "bloodmnist", "tissuemnist", "organamnist",
      "organcmnist", "organsmnist"]
  for name, info in npz.MEDMNIST.items():
    assert info.name == name
    assert sorted(info.md5) == [28, 64, 128, 224], name
    # As fileio.fetch compares them with hexdigest(): 32 lower-case hex
    # digits. (int(md5, 16) took upper case, "0x", "_" and spaces too.)
    assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in info.md5.values()), name
    assert len(set(info.md5.values())) == 4, name  # No copy-paste slip.
    assert info.task in ("multi-class", "binary", "multi-label", "ordinal")
    assert info.channels in (1, 3)
  md5s = [md5 for info in npz.MEDMNIST.values() for md5 in info.md5.values()]
  assert len(set(md5s)) == 48
  blood = npz.MEDMNIST["bloodmnist"]
  assert (blood.task, blood.channels, len(blood.class_names)) == ("multi-class", 3, 8)
  assert npz.MEDMNIST["pathmnist"].class_names[8] == "colorectal adenocarcinoma epithelium"
  assert len(npz.MEDMNIST["chestmnist"].class_names) == 14
  assert npz.MEDMNIST["tissuemnist"].samples == (165466, 23640, 47280)


def test_file_names_and_urls_are_the_official_ones():
  info = npz.MEDMNIST["dermamnist"]
  assert info.file_name() == "dermamnist.npz"
  assert info.file_name(128) == "dermamnist_128.npz"
  assert info.url() == "https://zenodo.org/records/10519652/files/dermamnist.npz?download=1"
  assert info.url(64) == (
      "https://zenodo.org/records/10519652/files/dermamnist_64.npz?download=1")


@needs_real
@pytest.mark.parametrize("name", REAL_FILES)
def test_registered_md5_matches_the_real_file(name):
  info = npz.MEDMNIST[name]
  raw = (SHARED_MEDMNIST / info.file_name()).read_bytes()
  assert hashlib.md5(raw).hexdigest() == info.md5[28]


# MedMNIST from the shared folder.

@needs_real
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_have_the_registered_splits_and_shapes(name, monkeypatch):
  _serve(monkeypatch, {})  # The file is there: no download may be tried.
  info = npz.MEDMNIST[name]
  ds = npz.load_medmnist(name, SHARED_MEDMNIST)
  assert ds.name == name
  assert ds.class_names == info.class_names
  assert (len(ds.train_images), len(ds.val_images), len(ds.test_images)) == info.samples
  assert ds.image_shape == (28, 28, info.channels)
  for labels in (ds.train_labels, ds.val_labels, ds.test_labels):
    assert labels.ndim == 1 and labels.dtype == np.int32
  assert set(ds.train_labels.tolist()) == set(range(len(info.class_names)))


@needs_real
def test_real_breastmnist(monkeypatch):
  _serve(monkeypatch, {})
  ds = npz.load_medmnist("breastmnist", SHARED_MEDMNIST)
  assert (len(ds.train_images), len(ds.val_images), len(ds.test_images)) == (546, 78, 156)
  assert ds.train_images.shape == (546, 28, 28, 1)
  assert ds.class_names == ("malignant", "normal, benign")
  assert ds.val_labels.shape == (78,)


@needs_real
def test_real_retinamnist(monkeypatch):
  _serve(monkeypatch, {})
  ds = npz.load_medmnist("retinamnist", SHARED_MEDMNIST)
  assert ds.train_images.shape == (1080, 28, 28, 3)
  assert ds.val_images.shape == (120, 28, 28, 3)
  assert ds.test_images.shape == (400, 28, 28, 3)
  assert ds.class_names == ("0", "1", "2", "3", "4")


# MedMNIST refusals.

def test_chestmnist_is_refused_as_multi_label_without_a_download(tmp_path, monkeypatch):
  requested = _serve(monkeypatch, {})
  _write(tmp_path / "chestmnist.npz", **_arrays(n_val=4, classes=2))
  message = _one_line_error(npz.load_medmnist, "chestmnist", tmp_path)
  assert "multi-label" in message and "single-label" in message
  assert requested == []


def test_unknown_name_and_size_are_refused(tmp_path):
  assert "breastmnist" in _one_line_error(npz.load_medmnist, "breastmnst", tmp_path)
  message = _one_line_error(npz.load_medmnist, "breastmnist", tmp_path, size=32)
  assert "28, 64, 128, 224" in message


def test_a_file_of_the_wrong_shape_is_refused(tmp_path, monkeypatch):
  _serve(monkeypatch, {})
  _write(tmp_path / "retinamnist.npz", **_arrays(n_val=5, classes=5))  # Gray, not RGB.
  message = _one_line_error(npz.load_medmnist, "retinamnist", tmp_path)
  assert str(tmp_path / "retinamnist.npz") in message and "28x28x3" in message


def test_a_file_without_the_validation_split_is_refused(tmp_path, monkeypatch):
  _serve(monkeypatch, {})
  _write(tmp_path / "breastmnist.npz", **_arrays(classes=2))
  assert "val_images" in _one_line_error(npz.load_medmnist, "breastmnist", tmp_path)


# MedMNIST downloads.

def test_a_missing_file_is_downloaded_verified(tmp_path, monkeypatch):
  raw = _write(tmp_path / "src.npz", **_arrays(n_val=4, classes=2)).read_bytes()
  _fake_registered(monkeypatch, "breastmnist", {28: raw})
  requested = _serve(monkeypatch, {"breastmnist.npz": raw})
  folder = tmp_path / "data" / "medmnist"
  ds = npz.load_medmnist("breastmnist", folder)
  assert requested == [npz.MEDMNIST["breastmnist"].url()]
  assert [p.name for p in folder.iterdir()] == ["breastmnist.npz"]
  assert (folder / "breastmnist.npz").read_bytes() == raw
  assert (len(ds.train_labels), len(ds.val_labels)) == (12, 4)
  npz.load_medmnist("breastmnist", folder)  # Now on disk: no second request.
  assert len(requested) == 1


def test_larger_sizes_use_their_own_file_and_md5(tmp_path, monkeypatch):
  raw = _write(tmp_path / "src.npz", **_arrays(n_val=4, classes=2, hw=64)).read_bytes()
  _fake_registered(monkeypatch, "breastmnist", {28: "x".encode(), 64: raw})
  requested = _serve(monkeypatch, {"breastmnist_64.npz": raw})
  ds = npz.load_medmnist("breastmnist", tmp_path / "medmnist", size=64)
  assert requested == [npz.MEDMNIST["breastmnist"].url(64)]
  assert ds.image_shape == (64, 64, 1)


def test_a_download_with_a_bad_md5_is_removed_and_refused(tmp_path, monkeypatch):
  raw = _write(tmp_path / "src.npz", **_arrays(n_val=4, classes=2)).read_bytes()
  _fake_registered(monkeypatch, "breastmnist", {28: raw})
  corrupted = bytearray(raw)
  corrupted[len(raw) // 2] ^= 0xFF
  _serve(monkeypatch, {"breastmnist.npz": bytes(corrupted)})
  folder = tmp_path / "medmnist"
  assert "MD5" in _one_line_error(npz.load_medmnist, "breastmnist", folder)
  assert list(folder.iterdir()) == []  # Neither the file nor a .part remains.


def test_offline_names_the_folder_and_the_file(tmp_path, monkeypatch):
  _serve(monkeypatch, {})
  folder = tmp_path / "medmnist"
  message = _one_line_error(npz.load_medmnist, "dermamnist", folder, size=224)
  assert str(folder) in message and "dermamnist_224.npz" in message
  assert list(folder.iterdir()) == []


# A user's .npz file.

def test_load_npz_without_validation_and_flat_labels(tmp_path):
  path = _write(tmp_path / "mine.npz", **_arrays(classes=4, label_shape="N"))
  ds = npz.load_npz(path, "mine")
  assert ds.name == "mine"
  assert ds.class_names == ("0", "1", "2", "3")
  assert ds.train_images.shape == (12, 28, 28, 1)
  assert ds.val_images is None and ds.val_labels is None
  np.testing.assert_array_equal(ds.test_labels, np.arange(6) % 4)


def test_load_npz_keeps_the_validation_split_and_flattens_n1_labels(tmp_path):
  path = _write(tmp_path / "rgb.npz", **_arrays(n_val=5, classes=3, hw=32, channels=3))
  ds = npz.load_npz(path, "rgb")
  assert ds.image_shape == (32, 32, 3)
  assert ds.val_images.shape == (5, 32, 32, 3)
  np.testing.assert_array_equal(ds.val_labels, np.arange(5) % 3)
  assert ds.train_labels.dtype == np.int32 and ds.train_labels.shape == (12,)


def test_a_missing_key_is_named_with_the_keys_there(tmp_path):
  arrays = _arrays()
  del arrays["test_labels"]
  path = _write(tmp_path / "x.npz", **arrays, extra=np.zeros(2))
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and "'test_labels'" in message
  assert "train_images, train_labels, test_images, extra" in message


def test_mismatched_lengths_are_refused(tmp_path):
  arrays = _arrays()
  arrays["train_labels"] = arrays["train_labels"][:-1]
  path = _write(tmp_path / "x.npz", **arrays)
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and "12 images" in message


def test_a_grayscale_rgb_mix_is_refused(tmp_path):
  arrays = _arrays()
  arrays["test_images"] = _arrays(channels=3)["test_images"]
  path = _write(tmp_path / "x.npz", **arrays)
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and "28x28x3" in message and "28x28x1" in message


def test_non_uint8_images_are_refused_with_how_to_convert(tmp_path):
  arrays = _arrays()
  arrays["train_images"] = arrays["train_images"] / 255.0
  path = _write(tmp_path / "x.npz", **arrays)
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and "float64" in message and "uint8 0..255" in message


def test_pickled_objects_are_refused(tmp_path):
  arrays = _arrays()
  arrays["train_labels"] = np.array([0, "a"] * 6, dtype=object)
  path = _write(tmp_path / "x.npz", **arrays)
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and "pickled" in message and "train_labels" in message


def test_float_labels_are_refused_with_how_to_convert(tmp_path):
  arrays = _arrays()
  arrays["test_labels"] = arrays["test_labels"].astype(np.float32)
  message = _one_line_error(npz.load_npz, _write(tmp_path / "x.npz", **arrays), "x")
  assert "test_labels are float32" in message and "astype" in message


def test_classes_count_labels_of_every_split(tmp_path):
  # Class 3 only in the validation split: the dataset has 4 classes, and the
  # train split lacks one (rather than "label 3 out of range 0..2").
  arrays = _arrays(n_val=4, classes=3)
  arrays["val_labels"][-1] = 3
  message = _one_line_error(npz.load_npz, _write(tmp_path / "x.npz", **arrays), "x")
  assert "no image of class(es) 3" in message


def test_one_hot_labels_are_refused(tmp_path):
  arrays = _arrays()
  arrays["train_labels"] = np.eye(3, dtype=np.uint8)[np.arange(12) % 3]
  message = _one_line_error(npz.load_npz, _write(tmp_path / "x.npz", **arrays), "x")
  assert "one-hot" in message and "(12, 3)" in message


@pytest.mark.parametrize("content, expected", [
    (b"train_images,train_labels\n1,2\n", "is not an .npz file"),  # Text.
    # np.load takes any bytes that are not .npy or zip for a pickle.
    (b"\x80\x04K\x01.", "is not an .npz file"),
    (b"PK\x03\x04 truncated zip", "is not a readable .npz file"),
])
def test_a_file_that_is_not_an_npz_is_refused(tmp_path, content, expected):
  path = tmp_path / "x.npz"
  path.write_bytes(content)
  message = _one_line_error(npz.load_npz, path, "x")
  assert str(path) in message and expected in message


def test_an_npy_array_is_not_an_npz(tmp_path):
  path = tmp_path / "x.npy"
  np.save(path, np.zeros((2, 28, 28), np.uint8))
  assert "not an .npz file" in _one_line_error(npz.load_npz, path, "x")


def test_a_missing_file_is_one_line(tmp_path):
  assert str(tmp_path / "nope.npz") in _one_line_error(
      npz.load_npz, tmp_path / "nope.npz", "nope")
