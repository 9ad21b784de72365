import gzip
import hashlib
import io
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import synthetic_split, write_dataset, write_idx

from mnist_jax import data
from mnist_jax.errors import UserError
from mnist_jax.sources import idx


def test_idx_round_trip(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
  write_idx(tmp_path / "x.gz", images)
  np.testing.assert_array_equal(idx.read_idx(tmp_path / "x.gz", ndim=3), images)


def test_custom_dataset_takes_its_classes_from_its_labels(tmp_path):
  write_dataset(tmp_path / "three", *synthetic_split(30, 3, 0),
                *synthetic_split(9, 3, 1))
  ds = data.load("three", tmp_path)
  assert ds.num_classes == 3
  assert ds.train_images.shape == (30, 28, 28, 1) and ds.train_images.dtype == np.uint8
  assert ds.test_labels.shape == (9,) and ds.test_labels.dtype == np.int32


def test_mnist160_is_first_eight_of_each_class_in_file_order(tmp_path):
  train_images, train_labels = synthetic_split(300, 10, 0)
  test_images, test_labels = synthetic_split(200, 10, 1)
  train_images[:, 0, 0] = np.arange(300) % 256  # Tag each image with its index.
  write_dataset(tmp_path / "mnist", train_images, train_labels, test_images,
                test_labels)
  ds = data._class_slice(data.load("mnist", tmp_path), "mnist160", 8)  # Its recipe.
  expected = np.sort(np.concatenate(
      [np.flatnonzero(train_labels == c)[:8] for c in range(10)]))
  np.testing.assert_array_equal(ds.train_images[:, 0, 0, 0], expected % 256)
  np.testing.assert_array_equal(np.bincount(ds.train_labels), [8] * 10)
  np.testing.assert_array_equal(np.bincount(ds.test_labels), [8] * 10)


def test_real_datasets_match_their_published_label_counts(shared_data):
  mnist = data.load("mnist", shared_data)
  assert mnist.train_images.shape == (60000, 28, 28, 1)
  np.testing.assert_array_equal(
      np.bincount(mnist.test_labels),
      [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
  fashion = data.load("fashion_mnist", shared_data)
  np.testing.assert_array_equal(np.bincount(fashion.train_labels), [6000] * 10)
  assert fashion.class_names[9] == "Ankle boot"
  mnist160 = data.load("mnist160", shared_data)
  assert len(mnist160.train_labels) + len(mnist160.test_labels) == 160


def test_builtin_checksums_match_the_official_files(shared_data):
  for name in ("mnist", "fashion_mnist"):
    for file_name, (size, sha256) in idx.BUILTIN[name].checksums.items():
      raw = (shared_data / name / file_name).read_bytes()
      assert (len(raw), hashlib.sha256(raw).hexdigest()) == (size, sha256)


class _FakeResponse(io.BytesIO):
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _serve(monkeypatch, files: dict[str, bytes]):
  """Replaces the network: URLs ending in a known file name get its bytes."""
  requested = []

  def urlopen(url, timeout):
    requested.append(url)
    for name, raw in files.items():
      if url.endswith(name):
        return _FakeResponse(raw)
    raise urllib.error.URLError("no network")
  monkeypatch.setattr(urllib.request, "urlopen", urlopen)
  return requested


def _fake_builtin(monkeypatch, files: dict[str, bytes]):
  info = idx.DatasetInfo(
      "fakeset", tuple("0123456789"), "https://example.invalid/fake/",
      {n: (len(raw), hashlib.sha256(raw).hexdigest()) for n, raw in files.items()},
      "fakeset")
  monkeypatch.setitem(idx.BUILTIN, "fakeset", info)


def _dataset_bytes(tmp_path) -> dict[str, bytes]:
  folder = write_dataset(tmp_path / "source", *synthetic_split(40, 10, 0),
                         *synthetic_split(10, 10, 1))
  return {f: (folder / f).read_bytes() for f in idx.FILES}


def test_download_verifies_and_writes_whole_files(tmp_path, monkeypatch):
  files = _dataset_bytes(tmp_path)
  _fake_builtin(monkeypatch, files)
  requested = _serve(monkeypatch, files)
  ds = data.load("fakeset", tmp_path / "cache")
  assert sorted(u.rsplit("/", 1)[1] for u in requested) == sorted(idx.FILES)
  assert sorted(p.name for p in (tmp_path / "cache" / "fakeset").iterdir()) == sorted(idx.FILES)
  assert len(ds.train_labels) == 40


def test_download_with_a_bad_checksum_is_removed(tmp_path, monkeypatch):
  files = _dataset_bytes(tmp_path)
  _fake_builtin(monkeypatch, files)
  corrupted = dict(files)
  raw = bytearray(files[idx.TRAIN_LABELS])
  raw[len(raw) // 2] ^= 0xFF
  corrupted[idx.TRAIN_LABELS] = bytes(raw)
  _serve(monkeypatch, corrupted)
  with pytest.raises(UserError, match="does not match its checksum"):
    data.load("fakeset", tmp_path / "cache")
  assert idx.TRAIN_LABELS not in [p.name for p in (tmp_path / "cache" / "fakeset").iterdir()]
  assert not list((tmp_path / "cache" / "fakeset").glob(".*part"))


def test_missing_files_without_network_name_the_folder_and_files(tmp_path, monkeypatch):
  _serve(monkeypatch, {})
  with pytest.raises(UserError) as e:
    data.load("mnist", tmp_path)
  message = str(e.value)
  assert str(tmp_path / "mnist") in message
  assert all(name in message for name in idx.FILES)
  assert not list((tmp_path / "mnist").iterdir())  # Nothing half-written.


def test_unknown_dataset(tmp_path):
  with pytest.raises(UserError, match="unknown dataset 'nope'"):
    data.load("nope", tmp_path)


def _corrupt_case(tmp_path, case):
  train_images, train_labels = synthetic_split(20, 10, 0)
  test_images, test_labels = synthetic_split(10, 10, 1)
  folder = write_dataset(tmp_path / "bad", train_images, train_labels,
                         test_images, test_labels)
  if case == "magic":
    write_idx(folder / idx.TRAIN_LABELS, train_labels, magic=2051)
  elif case == "truncated_gzip":
    raw = (folder / idx.TRAIN_IMAGES).read_bytes()
    (folder / idx.TRAIN_IMAGES).write_bytes(raw[: len(raw) // 2])
  elif case == "not_gzip":
    (folder / idx.TEST_IMAGES).write_bytes(b"this is not gzip data")
  elif case == "short_payload":
    raw = gzip.decompress((folder / idx.TEST_IMAGES).read_bytes())
    (folder / idx.TEST_IMAGES).write_bytes(gzip.compress(raw[:-5]))
  elif case == "count_mismatch":
    write_idx(folder / idx.TEST_LABELS, test_labels[:-1])
  elif case == "image_size":
    write_idx(folder / idx.TRAIN_IMAGES, np.zeros((20, 32, 32), np.uint8))
  return folder


@pytest.mark.parametrize("case, message", [
    ("magic", "magic number 2051, expected 2049"),
    ("truncated_gzip", "not a readable gzip file"),
    ("not_gzip", "not a readable gzip file"),
    ("short_payload", "truncated or corrupt"),
    ("count_mismatch", r"10 images but labels of shape \(9,\)"),
    ("image_size", "32x32"),
])
def test_bad_files_give_a_clear_error(tmp_path, case, message):
  _corrupt_case(tmp_path, case)
  with pytest.raises(UserError, match=message):
    data.load("bad", tmp_path)


def test_label_outside_the_builtin_classes(tmp_path):
  train_images, train_labels = synthetic_split(20, 10, 0)
  train_labels[3] = 10
  write_dataset(tmp_path / "mnist", train_images, train_labels,
                *synthetic_split(10, 10, 1))
  with pytest.raises(UserError, match=r"train labels must be integers in 0\.\.9 .*found 0\.\.10"):
    data.load("mnist", tmp_path)
