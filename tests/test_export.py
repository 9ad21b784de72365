"""`python -m mnist_jax.export`: the exported module computes what the checkpoint does."""

import json

import jax
import numpy as np
import pytest
import tolerances
from conftest import run_module, synthetic_split, toy_config

from mnist_jax import export, training
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained


@pytest.fixture
def workdir(synthetic_data, tmp_path):
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), tmp_path / "run")
  return tmp_path / "run"


def test_exported_model_matches_the_checkpoint(workdir):
  result = run_module("mnist_jax.export", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  path = workdir / "model.jax_export"
  assert str(path) in result.stdout
  assert sorted(p.name for p in workdir.glob("model.jax_export*")) == [
      "model.jax_export", "model.jax_export.json"]  # No temporary files left.

  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert exported.nr_devices == 1
  assert set(exported.platforms) == set(export.PLATFORMS)
  trained = load_trained(workdir)
  logits_fn = trained.logits_fn
  images_NHW, _ = synthetic_split(10, 10, seed=3)
  for images_BHW in (images_NHW[:3], images_NHW[3:]):
    logits_BK = np.asarray(exported.call(images_BHW))
    assert logits_BK.shape == (len(images_BHW), 10) and logits_BK.dtype == np.float32
    # Another compiled program for the same model: its sums may round in
    # another order. Catches an export of other weights or preprocessing.
    # The step takes the dataset's [B, H, W, 1]; the module adds the axis.
    expected = logits_fn(trained.state, images_BHW[..., None])
    tolerances.assert_within(logits_BK, expected,
                             tolerances.logits(expected, trained.state.params))

  meta = json.loads((workdir / "model.jax_export.json").read_text())
  assert meta["class_names"] == list(trained.class_names)
  assert meta["input"]["shape"] == ["b", 28, 28] and meta["input"]["dtype"] == "uint8"
  assert meta["output"]["shape"] == ["b", 10] and meta["output"]["dtype"] == "float32"
  assert meta["jax_version"] == jax.__version__
  assert meta["epoch"] == 1 and meta["model"] == "mlp"


def test_export_to_a_chosen_path_for_one_platform(workdir, tmp_path):
  path = export.export(load_trained(workdir), tmp_path / "new" / "m.bin", ["cpu"])
  assert path == tmp_path / "new" / "m.bin"
  exported = jax.export.deserialize(bytearray(path.read_bytes()))
  assert exported.platforms == ("cpu",)
  assert json.loads((tmp_path / "new" / "m.bin.json").read_text())["platforms"] == ["cpu"]
  with pytest.raises(UserError, match="--platforms: unknown gpu"):
    export.export(load_trained(workdir), path, ["cpu", "gpu"])


@pytest.mark.parametrize("args, message", [
    ([], "error: --workdir is required: the workdir of a training run"),
    (["--workdir={empty}"], "error: no checkpoints in {empty}/checkpoints; train first"),
    (["--workdir={empty}", "--platforms=cpu,gpu"],
     "error: --platforms: unknown gpu; choose from cpu, cuda, rocm, tpu"),
    (["--workdir={empty}", "extra"], "error: unexpected arguments: extra"),
])
def test_mistakes_print_one_line(tmp_path, args, message):
  empty = tmp_path / "empty"
  empty.mkdir()
  result = run_module("mnist_jax.export", *[a.format(empty=empty) for a in args],
                      cwd=tmp_path)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message.format(empty=empty))
  assert list(empty.iterdir()) == []


def test_workdir_without_a_readable_checkpoint(tmp_path):
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  result = run_module("mnist_jax.export", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: no readable checkpoint in {tmp_path / 'run' / 'checkpoints'}")
  assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "checkpoints"]
