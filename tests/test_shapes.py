"""End to end, the whole pipeline follows a dataset's image size and channels:
an RGB 20x24 `.npz` trains, evaluates, predicts from PNG files, exports and
plots; every model builds for other shapes; image_size resizes a gray folder
and a checkpoint remembers it; MNIST's 28x28x1 keeps its export signature.

Each test names the broken implementations it catches. The data are tiny
and made here, so the file runs offline; compiling dominates its time."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_config
from PIL import Image
from test_plots import assert_png
import tolerances

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import evaluate, export, models, predict, registry, steps, training
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained

RGB_SHAPE = (20, 24, 3)  # H != W, so a transposed size is caught too.
NUM_CLASSES = 3


def rgb_split(num: int, seed: int):
  """Learnable RGB images [N, 20, 24, 3]: class c lights channel c (red,
  green, blue) in a band of rows 6..14, over dim noise. Only the colour tells
  the classes apart, so a pipeline that keeps one channel cannot learn them."""
  rng = np.random.default_rng(seed)
  labels = np.arange(num) % NUM_CLASSES
  rng.shuffle(labels)
  images = rng.integers(0, 50, (num, *RGB_SHAPE))
  for i, c in enumerate(labels):
    images[i, 6:14, 3:21, c] = 230
  return images.astype(np.uint8), labels.astype(np.uint8)


def write_rgb_npz(path: Path) -> Path:
  """A user's .npz in MedMNIST's layout: labels [N, 1], as MedMNIST's are."""
  arrays = {}
  for split, num, seed in (("train", 96, 1), ("test", 48, 2), ("val", 24, 3)):
    images, labels = rgb_split(num, seed)
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
  np.savez(path, **arrays)
  return path


def write_gray_folder(root: Path) -> Path:
  """train/<class>/*.png and test/<class>/*.png, 32x32 grayscale: class c
  lights rows 8c+4..8c+12."""
  rng = np.random.default_rng(4)
  for split, per_class in (("train", 16), ("test", 8)):
    for c in range(NUM_CLASSES):
      folder = root / split / f"class{c}"
      folder.mkdir(parents=True)
      for i in range(per_class):
        pixels = rng.integers(0, 50, (32, 32)).astype(np.uint8)
        pixels[8 * c + 4:8 * c + 12, 4:28] = 230
        Image.fromarray(pixels, "L").save(folder / f"{i}.png")
  return root


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
  """One RGB run (cnn, width 0.25, plots on) that the tests below read."""
  base = tmp_path_factory.mktemp("rgb")
  npz = write_rgb_npz(base / "colours.npz")
  config = toy_config(base, dataset=str(npz), model="cnn", width=0.25,
                      batch_size=16, num_epochs=2, learning_rate=3e-3,
                      plots=True,
                      # Module-scoped: the autouse fixture that points the
                      # cache at a tmp folder has not run yet.
                      compilation_cache=False)
  result = training.train_and_evaluate(config, base / "run")
  return base / "run", npz, result


def test_an_rgb_run_trains_and_writes_its_summary_and_metrics(rgb_run):
  # Catches: a channel dropped on the way (only colour tells the classes
  # apart: one channel caps accuracy at 2/3), labels [N, 1] split from their
  # images, or a model built for 28x28x1 (the run would not start).
  workdir, _, result = rgb_run
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["dataset"] == "colours" and summary["model"] == "cnn"
  assert summary["final_test_accuracy"] == result.summary["final_test_accuracy"]
  # Chance is 1/3; the bands are plain to see.
  assert summary["final_test_accuracy"] >= 0.9, summary["final_test_accuracy"]
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2]
  assert records[-1]["test_accuracy"] == summary["final_test_accuracy"]


def test_load_trained_and_evaluate_follow_the_rgb_shape(rgb_run):
  # Catches: a checkpoint that forgets its image shape (load_trained would
  # rebuild for 28x28x1 and fail to restore), and an evaluation that differs
  # from training's (another batch, images reshaped).
  workdir, _, _ = rgb_run
  trained = load_trained(workdir)
  assert trained.image_shape == RGB_SHAPE
  assert trained.class_names == ("0", "1", "2")
  checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints", read_only=True)
  try:
    assert checkpoints.latest_meta()["image_shape"] == list(RGB_SHAPE)
  finally:
    checkpoints.close()
  report = evaluate.evaluate_trained(trained, evaluate.load_dataset(trained))
  assert report["num_test_images"] == 48
  # The checkpoint loaded may be the newest or the best on the validation
  # split: training's test accuracy of that epoch, whichever it is.
  records = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines()]
  # Both the division of the same two counts: exactly equal.
  assert report["test_accuracy"] == records[trained.epoch - 1]["test_accuracy"]


def test_predict_reads_rgb_png_files_at_the_dataset_shape(rgb_run, tmp_path):
  # Catches: predict converting files to 28x28 gray, or to the right size
  # but one channel, or swapping height and width (PIL sizes are W x H).
  workdir, npz, _ = rgb_run
  with np.load(npz) as arrays:
    images, labels = arrays["test_images"][:12], arrays["test_labels"][:12, 0]
  paths = []
  for i, image in enumerate(images):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(image, "RGB").save(paths[-1])
  results = predict.predict(workdir, paths, top=NUM_CLASSES)
  assert [p for p, _ in results] == paths
  top1 = [int(ranked[0][0]) for _, ranked in results]
  assert np.mean(np.array(top1) == labels) >= 0.75, (top1, labels)
  # A file of the dataset's size is read as is: the same probabilities as
  # the model gives the arrays themselves.
  trained = load_trained(workdir)
  logits = np.asarray(trained.logits_fn(trained.state, images))
  expected = np.asarray(jax.nn.softmax(logits, -1))
  # From predict's own program (tolerances.probabilities).
  bound = tolerances.probabilities(expected, tolerances.logits(logits, trained.state.params))
  for (_, ranked), probabilities, slack in zip(results, expected, bound):
    for name, p in ranked:
      assert p == pytest.approx(probabilities[int(name)], abs=slack[int(name)])


def test_export_of_an_rgb_run_takes_b_h_w_3(rgb_run, tmp_path):
  # Catches: an export signature fixed at [b, 28, 28], or [b, H, W] that
  # drops the channels, or a module that computes something else.
  workdir, npz, _ = rgb_run
  trained = load_trained(workdir)
  path = export.export(trained, tmp_path / "model.jax_export", ["cpu"])
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  (spec,) = exported.in_avals
  assert [str(d) for d in spec.shape] == ["b", "20", "24", "3"]
  assert spec.dtype == np.uint8
  described = json.loads(Path(f"{path}.json").read_text())
  assert described["input"]["shape"] == ["b", 20, 24, 3]
  assert described["output"]["shape"] == ["b", NUM_CLASSES]
  assert "RGB" in described["input"]["description"]
  with np.load(npz) as arrays:
    images = arrays["test_images"][:5]
  # Another compiled program for the same model: its sums may round in
  # another order (tolerances.logits).
  expected = trained.logits_fn(trained.state, images)
  tolerances.assert_within(exported.call(images), expected,
                           tolerances.logits(expected, trained.state.params))


def test_the_plots_of_an_rgb_run_show_colour_images(rgb_run):
  # Catches: plots that fail or draw blank on [N, H, W, 3] images, or a
  # prediction grid that shows one channel in gray.
  workdir, _, _ = rgb_run
  names = ["confident_mistakes.png", "confusion_matrix.png",
           "test_predictions.png", "training_curves.png"]
  assert sorted(p.name for p in (workdir / "plots").glob("*.png")) == names
  for name in names:
    pixels = assert_png(workdir / "plots" / name)
    if name == "test_predictions.png":
      # Class 1's band is green and class 2's blue: drawn in colour, those
      # pixels are there (nothing else in the figure is green or blue).
      r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
      assert ((g > 180) & (r < 90) & (b < 90)).sum() > 100
      assert ((b > 180) & (r < 90) & (g < 90)).sum() > 100


@pytest.mark.parametrize("shape", [RGB_SHAPE, (32, 32, 1)], ids=["20x24x3", "32x32x1"])
@pytest.mark.parametrize("name", registry.names("model"))
def test_every_model_builds_and_takes_a_training_step_for_other_shapes(name, shape):
  # Catches: a dense layer sized for 28x28 (7 * 7 * features), a first
  # convolution that takes one channel, or a pool that fails on odd sizes.
  config = toy_config("unused", model=name, width=0.25)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (4, *shape)), jnp.uint8)
  labels = jnp.asarray([0, 1, 2, 0], jnp.int32)
  # Keys of XLA's RngBitGenerator, not threefry: compiling the initialisers
  # (one program per weight shape) dominates this test, and threefry's
  # compile far slower. Shapes do not depend on the generator.
  with jax.default_prng_impl("rbg"):
    built = state_lib.build(config, NUM_CLASSES, steps_per_epoch=1, image_shape=shape)

    @jax.jit  # One program: compiling dominates.
    def step_then_evaluate(state):
      state, sums = steps.train_step(built.graphs, built.recipe, built.tx, state,
                                     images, labels)
      return state, sums, steps.eval_logits(built.graphs, built.recipe, state, images)

    state, (loss_sum, _, count), logits = step_then_evaluate(built.state)
  assert int(count) == 4 and np.isfinite(float(loss_sum))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), built.state.params,
                         state.params)
  assert all(jax.tree.leaves(changed))  # Every weight got a gradient.
  assert logits.shape == (4, NUM_CLASSES) and np.isfinite(logits).all()


def test_image_size_resizes_a_folder_and_the_checkpoint_remembers_it(tmp_path):
  # Catches: image_size ignored for folders (the run would be 32x32), a
  # checkpoint that does not record the shape (load_trained would rebuild at
  # 28x28), and a resume at another size that fails deep in orbax instead of
  # naming image_size (STRUCTURAL_FIELDS without it).
  root = write_gray_folder(tmp_path / "stripes")
  config = toy_config(tmp_path, dataset=str(root), model="mlp", width=0.25,
                      batch_size=8, num_epochs=2, learning_rate=3e-3,
                      image_size=16)
  workdir = tmp_path / "run"
  result = training.train_and_evaluate(config, workdir)
  assert result.summary["final_test_accuracy"] >= 0.9
  trained = load_trained(workdir)
  assert trained.image_shape == (16, 16, 1)
  assert trained.class_names == ("class0", "class1", "class2")
  checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints", read_only=True)
  try:
    meta = checkpoints.latest_meta()
  finally:
    checkpoints.close()
  assert meta["image_shape"] == [16, 16, 1] and meta["config"]["image_size"] == 16
  # 32x32 files given to predict are brought to the run's 16x16.
  results = predict.predict(workdir, [str(root / "test" / f"class{c}" / "0.png")
                                      for c in range(NUM_CLASSES)])
  assert [ranked[0][0] for _, ranked in results] == ["class0", "class1", "class2"]

  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  config.image_size = 0
  with pytest.raises(UserError) as raised:
    training.train_and_evaluate(config, workdir)
  message = str(raised.value)
  assert "\n" not in message and "image_size=16 there, 0 now" in message, message
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_an_mnist_shaped_run_still_exports_b_28_28(tmp_path):
  # Catches: the export signature made [b, 28, 28, 1] for grayscale, which
  # breaks every caller of an MNIST model exported before.
  from configs import mnist160  # pylint: disable=g-import-not-at-top
  config = mnist160.get_config()
  config.num_epochs, config.width, config.plots = 1, 0.25, False
  training.train_and_evaluate(config, tmp_path / "run")
  trained = load_trained(tmp_path / "run")
  assert trained.image_shape == models.MNIST_SHAPE
  path = export.export(trained, tmp_path / "model.jax_export", ["cpu"])
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert [str(d) for d in exported.in_avals[0].shape] == ["b", "28", "28"]
  assert json.loads(Path(f"{path}.json").read_text())["input"]["shape"] == ["b", 28, 28]
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
  # As above: the same model, another program (tolerances.logits).
  expected = trained.logits_fn(trained.state, images[..., None])  # The step's layout.
  tolerances.assert_within(exported.call(images), expected,
                           tolerances.logits(expected, trained.state.params))
