"""data_source='tfds' gives the same examples as the IDX files (TFDS reorders them)."""

import numpy as np
import pytest

from mnist_jax import data


def _sorted_examples(images, labels):
  """The examples as a sorted list of (label, image bytes): order-free."""
  return sorted(zip(labels.tolist(), (im.tobytes() for im in images)))


def test_tfds_and_idx_agree_on_the_mnist_test_split(shared_data, tmp_path,
                                                     monkeypatch):
  # Before tfds is imported: it reads the variable then, as well as when loading.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  pytest.importorskip("tensorflow", reason="needs the tfds extra")
  pytest.importorskip("tensorflow_datasets", reason="needs the tfds extra")
  via_tfds = data.load("mnist", shared_data, source="tfds")
  via_idx = data.load("mnist", shared_data, source="idx")
  assert via_tfds.test_images.shape == via_idx.test_images.shape == (10000, 28, 28)
  assert via_tfds.test_images.dtype == np.uint8
  assert not np.array_equal(via_tfds.test_labels, via_idx.test_labels)  # Reordered...
  assert (_sorted_examples(via_tfds.test_images, via_tfds.test_labels) ==
          _sorted_examples(via_idx.test_images, via_idx.test_labels))  # ...same set.
  assert len(via_tfds.train_labels) == 60000
  assert (tmp_path / "tfds" / "mnist").is_dir()  # Prepared where it was told.


def test_tfds_cannot_build_the_file_order_slice(shared_data):
  with pytest.raises(data.UserError, match="use data_source='idx'"):
    data.load("mnist160", shared_data, source="tfds")
