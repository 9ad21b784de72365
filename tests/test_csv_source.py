"""sources.csv_files: Kaggle-style *train*.csv / *test*.csv folders, and every
mistake in them refused in one line naming the file (and line)."""

from pathlib import Path

import numpy as np
import pytest

from mnist_jax.errors import UserError
from mnist_jax.sources import csv_files

HEADER = "pixel1,pixel2,label,pixel3,pixel4"  # The label need not come first.


def _write(path: Path, rows, header: str = HEADER):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")


def _folder(root: Path, train_rows=None, test_rows=None, train_name="mnist_train.csv",
            test_name="mnist_test.csv") -> Path:
  _write(root / train_name, train_rows or [[1, 2, 0, 3, 4], [5, 6, 1, 7, 8],
                                           [9, 10, 2, 11, 255]])
  _write(root / test_name, test_rows or [[0, 0, 2, 0, 9]])
  return root


def _error(root: Path) -> str:
  with pytest.raises(UserError) as caught:
    csv_files.load_csv(root)
  message = str(caught.value)
  assert "\n" not in message
  return message


def test_a_kaggle_style_folder_loads_as_grayscale_images(tmp_path):
  root = _folder(tmp_path / "fashion", train_name="fashion-mnist_train.csv",
                 test_name="fashion-mnist_test.csv")
  (root / "sample_submission.csv").write_text("ImageId,Label\n1,0\n")  # Not a split.
  dataset = csv_files.load_csv(root)
  assert dataset.name == "fashion" and dataset.class_names == ("0", "1", "2")
  assert dataset.train_images.shape == (3, 2, 2, 1) and dataset.train_images.dtype == np.uint8
  assert dataset.train_images[:, ..., 0].tolist() == [[[1, 2], [3, 4]], [[5, 6], [7, 8]],
                                                      [[9, 10], [11, 255]]]
  assert dataset.train_labels.tolist() == [0, 1, 2] and dataset.train_labels.dtype == np.int32
  assert dataset.test_labels.tolist() == [2]
  assert dataset.test_images[0, ..., 0].tolist() == [[0, 0], [0, 9]]


def test_windows_line_endings_spaces_and_blank_lines_are_read(tmp_path):
  root = _folder(tmp_path / "data")
  (root / "mnist_train.csv").write_text(
      "label, pixel1 ,pixel2,pixel3,pixel4\r\n0, 1,2,3,4\r\n\r\n2,5,6,7,8\r\n"
      "1,0,0,0,0\r\n")
  assert csv_files.load_csv(root).train_images[:2, ..., 0].tolist() == [
      [[1, 2], [3, 4]], [[5, 6], [7, 8]]]


@pytest.mark.parametrize("rows, expected", [
    ([[1, 2, 0, 3, 4], [1, 2, 1, 3]], "mnist_train.csv line 3 has 4 values but the header names 5"),
    ([[1, 2, 0, 3, 4], [1, 2.5, 1, 3, 4]], "mnist_train.csv line 3, column 'pixel2': '2.5' is not an integer"),
    ([[1, 2, 0, 3, 4], [1, "x", 1, 3, 4]], "mnist_train.csv line 3, column 'pixel2': 'x' is not an integer"),
    ([[1, 2, 0, 3, 4], [1, 2, 1, 3, 256]], "mnist_train.csv line 3, column 'pixel4': pixel 256 is outside 0..255"),
    ([[1, 2, 0, 3, 4], [-1, 2, 1, 3, 4]], "mnist_train.csv line 3, column 'pixel1': pixel -1 is outside 0..255"),
    ([[1, 2, 0, 3, 4], [1, 2, 1, 3, 99999]], "mnist_train.csv line 3, column 'pixel4': pixel 99999 is outside"),
    ([[1, 2, 0, 3, 4], [1, 2, -3, 3, 4]], "mnist_train.csv line 3: label -3 is negative"),
])
def test_a_bad_row_is_named_by_file_line_and_column(tmp_path, rows, expected):
  root = _folder(tmp_path / "data", train_rows=rows)
  assert expected in _error(root)


def test_line_numbers_count_blank_lines(tmp_path):
  root = _folder(tmp_path / "data")
  (root / "mnist_train.csv").write_text(f"{HEADER}\n1,2,0,3,4\n\n\n1,2,1,3,300\n")
  assert "mnist_train.csv line 5, column 'pixel4': pixel 300" in _error(root)


def test_a_test_file_without_labels_is_refused_for_training(tmp_path):
  root = _folder(tmp_path / "digit-recognizer", train_name="train.csv", test_name="test.csv")
  _write(root / "test.csv", [[0, 0, 0, 0]], header="pixel0,pixel1,pixel2,pixel3")
  assert f"refused for training: {root}/test.csv has no 'label' column" in _error(root)


def test_a_file_without_a_header_is_refused(tmp_path):
  root = _folder(tmp_path / "data")
  _write(root / "mnist_train.csv", [[1, 2, 0, 3, 4]], header="0,1,2,3,4")
  message = _error(root)
  assert "mnist_train.csv has no 'label' column (its first line is '0,1,2,3,...')" in message


def test_a_pixel_count_that_is_not_a_square_is_refused(tmp_path):
  root = _folder(tmp_path / "data")
  _write(root / "mnist_test.csv", [[0, 1, 2, 3]], header="label,a,b,c")
  assert "mnist_test.csv: pixel count 3 is not a square" in _error(root)


def test_train_and_test_images_of_different_sizes_are_refused(tmp_path):
  root = _folder(tmp_path / "data")
  _write(root / "mnist_test.csv", [[0] * 10], header="label," + ",".join("p" * 9))
  assert "2x2x1" in _error(root)


def test_a_header_without_rows_is_refused(tmp_path):
  root = _folder(tmp_path / "data")
  (root / "mnist_test.csv").write_text(HEADER + "\n")
  assert "mnist_test.csv has a header line but no rows" in _error(root)


def test_a_class_missing_from_train_is_refused(tmp_path):
  root = _folder(tmp_path / "data", train_rows=[[1, 2, 0, 3, 4], [1, 2, 2, 3, 4]],
                 test_rows=[[1, 2, 1, 3, 4]])
  assert "no image of class(es) 1" in _error(root)


@pytest.mark.parametrize("extra, expected", [
    (None, None),
    ("old_train.csv", "must hold exactly one *train*.csv file, it holds several: "
                      "mnist_train.csv, old_train.csv"),
])
def test_exactly_one_file_per_split(tmp_path, extra, expected):
  root = _folder(tmp_path / "data")
  if extra:
    _write(root / extra, [[1, 2, 0, 3, 4]])
    assert expected in _error(root)
    (root / extra).unlink()
  (root / "mnist_test.csv").unlink()
  assert "must hold exactly one *test*.csv file, it holds none" in _error(root)


def test_a_missing_folder_is_refused(tmp_path):
  assert f"{tmp_path}/nowhere does not exist" in _error(tmp_path / "nowhere")
