"""predict's reading of image files: depth, transparency and polarity give
the same 28x28 input as the plain 8-bit grayscale file of the same drawing;
folders and globs, batched, give what each file alone gives."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_module
from PIL import Image
import tolerances

from mnist_jax import data, predict, training
from mnist_jax.errors import UserError
from mnist_jax.sources import folder as folder_source
from mnist_jax.trained import load_trained


def _ink(size=40) -> np.ndarray:
  """A drawn stroke (an "L" with soft edges): uint8 [size, size], 0 = none."""
  ink = np.zeros((size, size), np.float32)
  ink[8:32, 12:18] = 255
  ink[26:32, 12:30] = 255
  soft = sum(np.roll(ink, shift, axis) for shift in (-1, 0, 1) for axis in (0, 1)) / 6
  return soft.round().astype(np.uint8)


def _save(tmp_path, name, image: Image.Image):
  path = tmp_path / name
  image.save(path)
  return path


@pytest.fixture
def reference(tmp_path) -> np.ndarray:
  """What predict makes of the drawing as 8-bit grayscale, light on dark."""
  path = _save(tmp_path, "reference.png", Image.fromarray(_ink(), "L"))
  return predict.to_mnist_format(path, "auto", "digit")


def _rgba(rgb, alpha) -> Image.Image:
  return Image.fromarray(np.dstack([*rgb, alpha]).astype(np.uint8), "RGBA")


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path, reference):
  ink = _ink()
  path = _save(tmp_path, "deep.png", Image.fromarray(ink.astype(np.uint16) * 257))
  with Image.open(path) as image:
    assert image.mode == "I;16"  # Really 16 bits on disk.
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"),
                                reference)


@pytest.mark.parametrize("make", [
    # Dark strokes on a transparent sheet (a drawing app's export): paper is white.
    lambda ink: _rgba([np.zeros_like(ink)] * 3, ink),
    # Light strokes on a transparent sheet whose hidden colour is black or
    # white: paper is black.
    lambda ink: _rgba([np.full_like(ink, 255)] * 3, ink),
    lambda ink: _rgba([np.where(ink > 0, 255, 0)] * 3, ink),
    lambda ink: Image.fromarray(np.dstack([np.full_like(ink, 255), ink]), "LA"),
], ids=["dark_on_transparent", "light_on_transparent_white",
        "light_on_transparent_black", "light_on_transparent_LA"])
def test_strokes_on_a_transparent_sheet_read_as_the_drawing(tmp_path, reference, make):
  path = _save(tmp_path, "drawn.png", make(_ink()))
  got = predict.to_mnist_format(path, "auto", "digit")
  # Compositing onto the paper rounds each pixel once (by at most 0.5 grey
  # level); the framing's resize averages pixels (weights summing to 1) and
  # rounds again: at most 1 apart.
  np.testing.assert_allclose(got, reference, atol=1)


def test_a_palette_image_with_a_transparent_colour(tmp_path):
  binary = np.where(_ink() > 127, 255, 0).astype(np.uint8)
  expected = predict.to_mnist_format(
      _save(tmp_path, "binary.png", Image.fromarray(binary, "L")), "auto", "digit")
  # Index 0 (black) is transparent, index 1 is white ink.
  image = Image.fromarray((binary > 0).astype(np.uint8), "P")
  image.putpalette([0, 0, 0, 255, 255, 255])
  path = tmp_path / "palette.png"
  image.save(path, transparency=0)
  with Image.open(path) as reread:
    assert reread.mode == "P" and reread.info["transparency"] == 0
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"),
                                expected)


def test_transparent_margins_of_an_opaque_scan_take_the_papers_shade(tmp_path):
  paper = 255 - _ink()  # Dark ink on white paper.
  opaque = predict.to_mnist_format(
      _save(tmp_path, "scan.png", Image.fromarray(paper, "L")), "auto", "digit")
  alpha = np.full_like(paper, 255)
  alpha[:3], alpha[-3:], alpha[:, :3], alpha[:, -3:] = 0, 0, 0, 0
  rgb = np.where(alpha > 0, paper, 0)  # Hidden black behind the margins.
  path = _save(tmp_path, "cropped.png", _rgba([rgb] * 3, alpha))
  np.testing.assert_array_equal(predict.to_mnist_format(path, "auto", "digit"), opaque)


def test_a_fully_transparent_image_is_blank(tmp_path):
  path = _save(tmp_path, "empty.png", _rgba([np.full((20, 20), 255)] * 3,
                                            np.zeros((20, 20))))
  with pytest.raises(UserError, match="is blank"):
    predict.to_mnist_format(path, "auto", "digit")


# Folders and globs, through a run trained on mnist160 (1 epoch): what is
# asserted is that the folder path gives what single files give, not accuracy.

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
  from configs import mnist160  # pylint: disable=g-import-not-at-top
  config = mnist160.get_config()
  config.num_epochs = 1
  config.plots = False
  workdir = tmp_path_factory.mktemp("predict") / "run"
  training.train_and_evaluate(config, workdir)
  return workdir


def _tree(root: Path) -> list[str]:
  """Test images of mnist160 at three depths, with a hidden folder, a
  hidden file and a text file that predict must not read; the image paths
  in sorted order."""
  images = data.load("mnist160").test_images[..., 0]
  where = ["b.png", "a/2.png", "a/10.png", "a/deep/x.PNG", "c/y.jpg", "c/z.bmp"]
  for i, name in enumerate(where):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(images[i]).save(root / name)
  (root / ".cache").mkdir()
  Image.fromarray(images[7]).save(root / ".cache" / "hidden.png")
  Image.fromarray(images[8]).save(root / "c" / ".thumb.png")
  (root / "notes.txt").write_text("not an image")
  return sorted(str(root / name) for name in where)


def test_a_folder_is_walked_recursively_in_sorted_order(tmp_path):
  # Catches: only the top level read, os.walk's own order, hidden folders
  # or non-image files read, extensions matched case-sensitively.
  expected = _tree(tmp_path / "tree")
  assert predict.find_images([tmp_path / "tree"]) == [(p, True) for p in expected]
  assert expected[0].endswith("a/10.png")  # String order, as `sort` gives.


def test_a_glob_is_expanded_sorted_and_a_named_file_kept_as_named(tmp_path):
  expected = _tree(tmp_path / "tree")
  pattern = str(tmp_path / "tree" / "**" / "*.png")
  assert predict.find_images([pattern]) == [
      (p, True) for p in expected if p.endswith(".png")]
  # A file whose name holds glob characters is that file, not a pattern.
  odd = tmp_path / "scan[1].png"
  Image.fromarray(np.full((28, 28), 200, np.uint8)).save(odd)
  assert predict.find_images([str(odd), expected[0]]) == [(str(odd), False),
                                                         (expected[0], False)]


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
    (lambda d: d / "nothing*.png", "matches no image files"),
])
def test_a_folder_or_glob_with_no_images_exits_2(tmp_path, make, message):
  # Refused before any model loads: the workdir holds no run.
  argument = make(tmp_path)
  result = run_module("mnist_jax.predict", f"--workdir={tmp_path}", argument)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: {argument} {message} ({', '.join(folder_source.IMAGE_SUFFIXES)})"]


def test_a_folder_predicts_as_single_files_do_and_skips_a_corrupt_one(run, tmp_path):
  expected = _tree(tmp_path / "tree")
  corrupt = tmp_path / "tree" / "a" / "3.png"
  corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
  out = tmp_path / "predictions.csv"
  result = run_module("mnist_jax.predict", f"--workdir={run}", tmp_path / "tree",
                      f"--out={out}", "--top=2")
  # Catches: a corrupt file ending the run, or not reported, or exit 0.
  assert result.returncode == 1, result.stderr
  assert [l for l in result.stderr.splitlines() if l.startswith("skipped")] == [
      f"skipped: {corrupt}: is not an image that can be read (cannot identify "
      f"image file '{corrupt}'); check that it opens in an image viewer, or "
      f"save it again as PNG"]
  assert "Traceback" not in result.stderr
  printed = [line.split("\t") for line in result.stdout.splitlines()]
  assert [p for p, *_ in printed] == expected and all(len(l) == 3 for l in printed)
  with open(out, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["path", "class", "probability", "top3"]
  assert [r[0] for r in rows[1:]] == expected
  # Each file alone, as `predict FILE` reads it (a batch of one): the same
  # class and probability, and the top 3 in order.
  trained = load_trained(run)
  for (path, name, probability, top3), line in zip(rows[1:], printed):
    ((_, alone),) = predict.predictions(trained, [(path, False)])
    best = predict.ranked(alone, trained.class_names, 3)
    # Written to 6 decimals (5e-7 off); a batch of one and the folder's are
    # two programs (tolerances.probabilities of tolerances.logits).
    image = predict.to_dataset_format(Path(path), trained.image_shape, "auto",
                                      predict.resolved_fit(trained, "auto"))
    logits = trained.logits_fn(trained.state, image[None])
    slack = 5e-7 + tolerances.probabilities(
        alone[None], tolerances.logits(logits, trained.state.params)).max()
    assert name == best[0][0] and float(probability) == pytest.approx(best[0][1], abs=slack)
    assert [t.split(":")[0] for t in top3.split(";")] == [n for n, _ in best]
    assert [float(t.split(":")[1]) for t in top3.split(";")] == pytest.approx(
        [p for _, p in best], abs=slack)
    assert line[1] == f"{best[0][0]} {100 * best[0][1]:.1f}%"


def test_a_named_unreadable_file_is_still_an_error(run, tmp_path):
  expected = _tree(tmp_path / "tree")
  (tmp_path / "bad.png").write_text("not an image")
  with pytest.raises(UserError, match="bad.png is not an image that can be read"):
    predict.predict(run, [tmp_path / "tree", tmp_path / "bad.png"])
  skipped = []
  (tmp_path / "tree" / "bad.png").write_text("not an image")
  results = predict.predict(run, [tmp_path / "tree"],
                            on_skip=lambda path, why: skipped.append(path))
  assert skipped == [str(tmp_path / "tree" / "bad.png")]
  assert [p for p, _ in results] == expected


def test_the_benchmark_writes_its_record_in_tiny_mode(run, tmp_path):
  out = tmp_path / "record.json"
  result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "predict_folder.py"),
                           f"--workdir={run}", "--dataset=mnist160", "--repeats=1",
                           "--batch_sizes=16,80",
                           f"--out={out}"], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
  assert result.returncode == 0, result.stderr
  record = json.loads(out.read_text())
  assert record["images"] == 80 and len(record["command"]["seconds"]) == 1
  assert len(record["command_on_one_file"]["seconds"]) == 1
  accuracy = record["accuracy"]
  # The model on the dataset's arrays, through inference, is evaluate.
  assert accuracy["dataset_arrays"] == accuracy["evaluate"]
  # Whole-image framing reads a 28x28 file back as its array, but for
  # contrast stretched to 255 (7 of mnist160's test images peak at 254):
  # the files read back equal give the arrays' class.
  equal = record["fit_whole_images_equal_to_dataset"]
  assert equal >= 70
  assert record["agreement_with_dataset_arrays"]["fit_whole"] >= equal / 80
  assert 0 < accuracy["command_csv"] <= 1
  assert record["machine"]["git_commit"] and record["parts_in_process"]["decode_seconds"] > 0
  assert list(record["parts_in_process"]["model_seconds_by_batch_size"]) == ["16", "80"]
