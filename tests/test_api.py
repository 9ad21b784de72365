"""The Python API (api.py): mnist_jax.train, callbacks, mnist_jax.load, predict."""

import os
import re

import numpy as np
import pytest
from conftest import REPO, toy_config
import tolerances

import mnist_jax
from mnist_jax import outputs
from mnist_jax.errors import UserError


def test_the_documented_example_runs_as_written(tmp_path, monkeypatch, capsys):
  # The one example of docs/python-api.md (the README links the page).
  (code,) = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(),
                       re.DOTALL)
  (tmp_path / "configs").symlink_to(REPO / "configs")  # As in the repository.
  monkeypatch.chdir(tmp_path)
  exec(compile(code, "docs/python-api.md", "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.splitlines()
  assert re.fullmatch(r"\d+\.\d%", printed[0].split()[0]) and printed[0].split()[1] == "2"
  assert printed[1] in [str(d) for d in range(10)]
  assert len(outputs.read_metrics(tmp_path / "runs" / "notebook")) == 2


def test_train_overrides_fields_and_nested_sweep_fields(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, num_epochs=1)
  result = mnist_jax.train(config, workdir=tmp_path / "run", batch_size=16,
                           **{"sweep.learning_rate": "0.001,0.003"})
  assert result.summary["config"]["batch_size"] == 16
  assert result.summary["num_members"] == 2
  assert [r["epoch"] for r in result.history] == [1]
  assert config.batch_size == 32  # The caller's config is left as it was.
  with pytest.raises(UserError, match="num_epochz: no such field; did you mean num_epochs"):
    mnist_jax.train(config, workdir=tmp_path / "x", num_epochz=1)
  # Python values are not parsed: a string is no number of epochs.
  with pytest.raises(UserError, match="config.num_epochs must be an integer, got '1'"):
    mnist_jax.train(config, workdir=tmp_path / "x", num_epochs="1")
  with pytest.raises(UserError, match="sweep.rate: no such field"):
    mnist_jax.train(config, workdir=tmp_path / "x", **{"sweep.rate": "1"})
  assert not (tmp_path / "x").exists()


def test_a_callback_that_asks_to_stop_ends_the_run_after_saving(synthetic_data,
                                                                tmp_path):
  seen = []
  result = mnist_jax.train(toy_config(synthetic_data, num_epochs=5),
                           workdir=tmp_path / "run",
                           callbacks=[lambda r: seen.append(r["epoch"]) or r["epoch"] == 2])
  assert seen == [1, 2] and len(result.history) == 2
  assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_a_callback_that_raises_stops_the_run_after_saving_and_is_named(
    synthetic_data, tmp_path):
  def plot_live(record):
    if record["epoch"] == 2:
      raise ValueError("no display")

  with pytest.raises(UserError, match=r"callback .*plot_live raised ValueError: no "
                     r"display; the run stopped after saving epoch 2"):
    mnist_jax.train(toy_config(synthetic_data, num_epochs=5, checkpoint_every_epochs=5),
                    workdir=tmp_path / "run", callbacks=[plot_live])
  assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_load_and_predict(synthetic_data, tmp_path):
  from mnist_jax import data  # pylint: disable=g-import-not-at-top
  mnist_jax.train(toy_config(synthetic_data, num_epochs=2), workdir=tmp_path / "run")
  model = mnist_jax.load(tmp_path / "run")
  test = data.load("toy", synthetic_data)
  probabilities = model.predict(test.test_images)
  assert probabilities.shape == (100, 10)
  # Each of the 10 off by its softmax's roundings (tolerances.probabilities:
  # K + 2), their sum by K more.
  np.testing.assert_allclose(probabilities.sum(1), 1, rtol=tolerances.float32_relative(22))
  assert (probabilities.argmax(1) == test.test_labels).mean() > 0.9
  with pytest.raises(UserError, match="predict takes uint8 images"):
    model.predict(test.test_images.astype(np.float32))
  with pytest.raises(UserError, match=r"shape \[N, 28, 28, 1\]"):
    model.predict(np.zeros((2, 32, 32), np.uint8))


def test_train_and_load_are_the_api_s_functions_even_once_training_is_imported():
  import inspect  # pylint: disable=g-import-not-at-top
  from mnist_jax import api, training  # pylint: disable=g-import-not-at-top,unused-import
  assert mnist_jax.train is api.train and mnist_jax.load is api.load
  assert inspect.isfunction(mnist_jax.train)
  assert {"train", "load"} <= set(dir(mnist_jax))


def test_importing_the_package_does_not_start_jax():
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  code = "import sys, mnist_jax; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
  assert out.stdout.strip() == "False"
