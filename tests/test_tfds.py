"""data_source='tfds' gives the same examples as the IDX files (TFDS reorders them)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from mnist_jax import data


def _sorted_examples(images, labels):
  """The examples as a sorted list of (label, image bytes): order-free."""
  return sorted(zip(labels.tolist(), (im.tobytes() for im in images)))


@pytest.mark.tfds
def test_tfds_and_idx_agree_on_the_mnist_test_split(shared_data, tmp_path,
                                                     monkeypatch):
  # Before tfds is imported: it reads the variable then, as well as when loading.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  via_tfds = data.load("mnist", shared_data, source="tfds")
  via_idx = data.load("mnist", shared_data, source="idx")
  assert via_tfds.test_images.shape == via_idx.test_images.shape == (10000, 28, 28, 1)
  assert via_tfds.test_images.dtype == np.uint8
  assert not np.array_equal(via_tfds.test_labels, via_idx.test_labels)  # Reordered...
  assert (_sorted_examples(via_tfds.test_images, via_tfds.test_labels) ==
          _sorted_examples(via_idx.test_images, via_idx.test_labels))  # ...same set.
  assert len(via_tfds.train_labels) == 60000
  assert (tmp_path / "tfds" / "mnist").is_dir()  # Prepared where it was told.


def test_tfds_cannot_build_the_file_order_slice(shared_data):
  with pytest.raises(data.UserError, match="use data_source='idx'"):
    data.load("mnist160", shared_data, source="tfds")


# Hiding TensorFlow alone means something only where tensorflow_datasets is
# installed (it imports without TensorFlow, then has no load()): the tfds mark.
@pytest.mark.parametrize(
    "missing", ["tensorflow_datasets", pytest.param("tensorflow", marks=pytest.mark.tfds)])
def test_a_missing_tfds_extra_is_one_line_naming_the_extra(missing, tmp_path):
  # `missing` is hidden from a fresh process, as if it were not installed.
  hide_and_train = (
      f"import sys; sys.modules[{missing!r}] = None; "
      "sys.argv[1:] = ['train', '--config=configs/default.py', "
      "'--config.dataset=mnist', '--config.data_source=tfds', "
      f"'--config.data_dir={tmp_path / 'data'}', '--workdir={tmp_path / 'run'}']; "
      "from mnist_jax.__main__ import main; main()")
  result = subprocess.run([sys.executable, "-c", hide_and_train], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr
  # Where neither is installed, the first import tried (tensorflow) is named.
  named = "tensorflow" if missing == "tensorflow" else "tensorflow(_datasets)?"
  assert re.fullmatch(
      rf"error: data_source='tfds' needs the tfds extra \({named} is not "
      r"installed\): pip install -e '\.\[tfds\]'",
      result.stderr.strip().splitlines()[-1]), result.stderr
