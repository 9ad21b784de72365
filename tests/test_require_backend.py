"""config.require_backend: a run that asks for an accelerator never falls back to the CPU."""

import json

import pytest
from conftest import REPO, run_module, toy_config

from mnist_jax import config as config_lib
from mnist_jax.errors import UserError


def _train(data_dir, workdir, *flags):
  return run_module("mnist_jax.main", f"--config={REPO}/configs/default.py",
                    "--config.dataset=toy", f"--config.data_dir={data_dir}",
                    "--config.model=mlp", "--config.batch_size=32",
                    "--config.num_epochs=1", "--config.plots=False",
                    f"--workdir={workdir}", *flags)


@pytest.mark.parametrize("backend, fix", [
    ("gpu", "install JAX's CUDA build (pip install -e '.[cuda12]' or '.[cuda13]')"),
    ("tpu", "install JAX's TPU build on a TPU VM (pip install -e '.[tpu]')"),
])
def test_a_missing_accelerator_stops_the_run_before_anything_else(tmp_path, backend, fix):
  # No data at all: the refusal must come before the data is loaded.
  (tmp_path / "empty").mkdir()
  result = _train(tmp_path / "empty", tmp_path / "run",
                  f"--config.require_backend={backend}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: config.require_backend={backend} but JAX's backend is cpu: {fix} "
      f"or drop require_backend")
  assert not (tmp_path / "run").exists()  # Nothing written.


def test_the_backend_there_is_accepted(synthetic_data, tmp_path):
  result = _train(synthetic_data, tmp_path / "run", "--config.require_backend=cpu")
  assert result.returncode == 0, result.stderr
  assert "backend cpu, " in result.stderr  # The start-up banner names it.
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert (summary["backend"], summary["config"]["require_backend"]) == ("cpu", "cpu")


@pytest.mark.parametrize("value", ["cuda", "GPU", None])
def test_an_unknown_backend_is_refused(synthetic_data, value):
  with pytest.raises(UserError, match=r"config.require_backend=.*: choose gpu, "
                     r"tpu, cpu, or '' for any backend"):
    config_lib.validate(toy_config(synthetic_data, require_backend=value))
