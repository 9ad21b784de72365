"""EMNIST: upright images, letters' labels, mapping names, gzip.zip extraction
and download, the one-line refusals."""

import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
from conftest import require_real_data, write_idx

from mnist_jax.errors import UserError
from mnist_jax.sources import emnist, idx

# An upright "L": a bar down the left, a foot to the right at the bottom.
# Its transpose is a bar along the top with a leg down the left: not the same.
GLYPH_HW = np.zeros((28, 28), np.uint8)
GLYPH_HW[4:24, 6:10] = 255
GLYPH_HW[20:24, 6:22] = 200
DIGIT_MAPPING = [f"{d} {48 + d}" for d in range(10)]
LETTERS_MAPPING = [f"{i} {64 + i} {96 + i}" for i in range(1, 27)]


def _split(num: int, labels_from: int, num_classes: int, seed: int):
  """Upright images: the glyph, its brightness marking the example, plus
  noise; labels cycle through every class."""
  rng = np.random.default_rng(seed)
  images_NHW = rng.integers(0, 30, (num, 28, 28)).astype(np.uint8)
  images_NHW[:, GLYPH_HW > 0] = GLYPH_HW[GLYPH_HW > 0]
  labels = labels_from + np.arange(num) % num_classes
  return images_NHW, labels.astype(np.uint8)


def _write(folder, split="mnist", num_classes=10, labels_from=0, mapping=DIGIT_MAPPING):
  train = _split(2 * num_classes, labels_from, num_classes, seed=1)
  test = _split(num_classes, labels_from, num_classes, seed=2)
  emnist.write_emnist_files(folder, split, *train, *test, mapping)
  return train, test


def _zip_of(folder, names) -> bytes:
  """gzip.zip as NIST ships it: the files under `gzip/`."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
    for name in names:
      archive.write(folder / name, "gzip/" + name)
  return buffer.getvalue()


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert "\n" not in message
  return message


def _no_partial_files(folder):
  return not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_transposed_files_load_upright(tmp_path):
  # Written by the tests' own IDX writer, not write_emnist_files: a loader
  # and a writer that both forgot the transpose would agree with each other.
  folder = tmp_path / "emnist"
  folder.mkdir()
  names = emnist.file_names("mnist")
  images_NHW = np.stack([GLYPH_HW] * 10)
  write_idx(folder / names[0], images_NHW.transpose(0, 2, 1))
  write_idx(folder / names[1], np.arange(10))
  write_idx(folder / names[2], images_NHW[:3].transpose(0, 2, 1))
  write_idx(folder / names[3], np.arange(3))
  (folder / names[4]).write_text("\n".join(DIGIT_MAPPING) + "\n")
  ds = emnist.load("mnist", folder)
  assert ds.name == "emnist_mnist"
  assert ds.train_images.shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(ds.train_images[3, :, :, 0], GLYPH_HW)
  np.testing.assert_array_equal(ds.test_images[2, :, :, 0], GLYPH_HW)
  assert ds.class_names == tuple("0123456789")


def test_write_emnist_files_stores_images_transposed(tmp_path):
  folder = tmp_path / "emnist"
  (train_images, train_labels), _ = _write(folder)
  stored = idx.read_idx(folder / emnist.file_names("mnist")[0], ndim=3)
  np.testing.assert_array_equal(stored, train_images.transpose(0, 2, 1))
  ds = emnist.load("mnist", folder)
  np.testing.assert_array_equal(ds.train_images[..., 0], train_images)
  np.testing.assert_array_equal(ds.train_labels, train_labels)


def test_letters_labels_start_at_zero_named_a_to_z(tmp_path):
  folder = tmp_path / "emnist"
  (_, train_labels), (_, test_labels) = _write(
      folder, "letters", 26, labels_from=1, mapping=LETTERS_MAPPING)
  ds = emnist.load("letters", folder)
  assert ds.name == "emnist_letters"
  assert ds.class_names == tuple("abcdefghijklmnopqrstuvwxyz")
  np.testing.assert_array_equal(ds.train_labels, train_labels.astype(np.int32) - 1)
  np.testing.assert_array_equal(ds.test_labels, test_labels.astype(np.int32) - 1)
  assert ds.train_labels.dtype == np.int32


def test_letters_label_zero_is_refused_naming_the_file(tmp_path):
  folder = tmp_path / "emnist"
  _write(folder, "letters", 26, labels_from=0, mapping=LETTERS_MAPPING)
  with pytest.raises(UserError) as excinfo:
    emnist.load("letters", folder)
  assert emnist.file_names("letters")[1] in _one_line(excinfo)


@pytest.mark.parametrize("split, expected", [
    ("byclass", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
    ("balanced", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"),
    ("bymerge", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"),
    ("digits", "0123456789"),
    ("mnist", "0123456789"),
])
def test_real_mapping_files_give_the_class_names(split, expected):
  folder = require_real_data() / "emnist_mappings"
  if not folder.is_dir():
    pytest.skip(f"{folder} not found")
  names = emnist.read_mapping(folder / emnist.file_names(split)[4], split)
  assert names == tuple(expected)
  assert len(names) == emnist.SPLITS[split]


def test_load_names_classes_by_the_mapping(tmp_path):
  folder = tmp_path / "emnist"
  mapping = [f"{i} {ord(c)}" for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")]
  _write(folder, "balanced", 47, mapping=mapping)
  ds = emnist.load("balanced", folder)
  assert ds.num_classes == 47
  assert ds.class_names[10] == "A" and ds.class_names[-1] == "t"


@pytest.mark.parametrize("lines", [DIGIT_MAPPING[:9], [*DIGIT_MAPPING[:9], "nine 57"]])
def test_a_wrong_mapping_is_refused_naming_the_file(tmp_path, lines):
  path = tmp_path / "emnist-mnist-mapping.txt"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(UserError) as excinfo:
    emnist.read_mapping(path, "mnist")
  assert str(path) in _one_line(excinfo)


def test_a_zip_only_folder_extracts_just_the_split_once(tmp_path, monkeypatch):
  source = tmp_path / "source"
  _write(source, "mnist")
  _write(source, "digits")
  folder = tmp_path / "emnist"
  folder.mkdir()
  (folder / "gzip.zip").write_bytes(_zip_of(
      source, [*emnist.file_names("mnist"), *emnist.file_names("digits")]))
  first = emnist.load("mnist", folder)
  for name in emnist.file_names("mnist"):
    assert (folder / name).read_bytes() == (source / name).read_bytes()
  assert not any((folder / n).exists() for n in emnist.file_names("digits"))
  assert _no_partial_files(folder)

  def no_zip(*args, **kwargs):
    raise AssertionError("gzip.zip opened again")
  monkeypatch.setattr(emnist.zipfile, "ZipFile", no_zip)
  again = emnist.load("mnist", folder)
  np.testing.assert_array_equal(again.train_images, first.train_images)


def test_a_zip_without_the_split_is_refused(tmp_path):
  source = tmp_path / "source"
  _write(source, "mnist")
  folder = tmp_path / "emnist"
  folder.mkdir()
  (folder / "gzip.zip").write_bytes(_zip_of(source, emnist.file_names("mnist")))
  with pytest.raises(UserError) as excinfo:
    emnist.load("digits", folder)
  assert "gzip/emnist-digits-train-images-idx3-ubyte.gz" in _one_line(excinfo)
  (folder / "gzip.zip").write_bytes(b"not a zip")
  with pytest.raises(UserError) as excinfo:
    emnist.load("digits", folder)
  assert "gzip.zip is not a readable zip" in _one_line(excinfo)


def _serve(monkeypatch, raw: bytes | None):
  requested = []

  def urlopen(url, timeout):
    requested.append(url)
    if raw is None:
      raise urllib.error.URLError("no network")
    return io.BytesIO(raw)
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  return requested


def test_missing_files_offline_name_the_folder_and_files(tmp_path, monkeypatch):
  _serve(monkeypatch, None)
  folder = tmp_path / "emnist"
  with pytest.raises(UserError) as excinfo:
    emnist.load("balanced", folder)
  message = _one_line(excinfo)
  assert str(folder) in message and "gzip.zip" in message and "no network" in message
  for name in emnist.file_names("balanced"):
    assert name in message
  assert not (folder / "gzip.zip").exists() and _no_partial_files(folder)


def test_a_download_with_a_wrong_checksum_is_removed(tmp_path, monkeypatch):
  source = tmp_path / "source"
  _write(source, "mnist")
  # A whole, readable zip, but not the bytes TFDS registers.
  _serve(monkeypatch, _zip_of(source, emnist.file_names("mnist")))
  folder = tmp_path / "emnist"
  with pytest.raises(UserError) as excinfo:
    emnist.load("mnist", folder)
  assert "does not match its checksum" in _one_line(excinfo)
  assert list(folder.iterdir()) == []


def test_a_verified_download_is_kept_and_extracted(tmp_path, monkeypatch):
  source = tmp_path / "source"
  train, _ = _write(source, "mnist")
  raw = _zip_of(source, emnist.file_names("mnist"))
  monkeypatch.setattr(emnist, "ZIP_CHECKSUM", (len(raw), hashlib.sha256(raw).hexdigest()))
  requested = _serve(monkeypatch, raw)
  folder = tmp_path / "emnist"
  ds = emnist.load("mnist", folder)
  assert requested == [emnist.URL]
  assert (folder / "gzip.zip").read_bytes() == raw
  np.testing.assert_array_equal(ds.train_images[..., 0], train[0])


def test_an_unknown_split_is_refused_listing_the_six(tmp_path):
  for call in (lambda: emnist.load("bycase", tmp_path), lambda: emnist.tfds_name("bycase")):
    with pytest.raises(UserError) as excinfo:
      call()
    message = _one_line(excinfo)
    assert "bycase" in message
    for split in emnist.SPLITS:
      assert split in message


def test_splits_and_tfds_names():
  assert emnist.SPLITS == {"byclass": 62, "bymerge": 47, "balanced": 47,
                           "letters": 26, "digits": 10, "mnist": 10}
  assert emnist.tfds_name("byclass") == "emnist/byclass"
  assert emnist.dataset_name("letters") == "emnist_letters"
