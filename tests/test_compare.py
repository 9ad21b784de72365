import json

import pytest
from conftest import run_module
from PIL import Image

from mnist_jax import compare
from mnist_jax.errors import UserError

CONFIG = """
from configs import default

def get_config():
  config = default.get_config()
  config.dataset = "toy"
  config.data_dir = {data_dir!r}
  config.model = "mlp"
  config.optimizer = {optimizer!r}
  config.learning_rate = {learning_rate}
  config.batch_size = 32
  config.num_epochs = 5
  config.plots = False
  return config
"""


def _write_configs(tmp_path, data_dir):
  paths = []
  for name, optimizer, lr in (("adam", "adam", 1e-3), ("sgd", "sgd", 0.05)):
    path = tmp_path / f"{name}.py"
    path.write_text(CONFIG.format(data_dir=str(data_dir), optimizer=optimizer,
                                  learning_rate=lr))
    paths.append(path)
  return paths


def test_compares_configs_over_seeds(synthetic_data, tmp_path):
  paths = _write_configs(tmp_path, synthetic_data)
  result = run_module("mnist_jax", "compare", *paths, "--seeds=2",
                      "--override=num_epochs=2", f"--workdir={tmp_path / 'cmp'}")
  assert result.returncode == 0, result.stderr
  record = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
  assert list(record["configs"]) == ["adam", "sgd"]
  for name in ("adam", "sgd"):
    runs = record["configs"][name]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["test_accuracy"]) == 2 for r in runs)  # The override applied.
    finals = [json.loads((tmp_path / "cmp" / name / f"seed{s}" / "summary.json")
                         .read_text())["final_test_accuracy"] for s in (0, 1)]
    stats = record["configs"][name]["test_accuracy"]
    assert stats["mean"] == pytest.approx(sum(finals) / 2)
    assert stats["min"] == min(finals) and stats["max"] == max(finals)
  table = (tmp_path / "cmp" / "comparison.md").read_text()
  assert "| adam | toy | mlp | adam | 2 |" in table and "| sgd | toy | mlp | sgd | 2 |" in table
  assert table in result.stdout
  with Image.open(tmp_path / "cmp" / "comparison.png") as image:
    assert image.format == "PNG"


@pytest.mark.parametrize("override, message", [
    ("num_epochs", "expected field=value"),
    ("nofield=3", "the config has no field 'nofield'"),
    ("batch_size=0", "batch_size must be a positive integer"),
])
def test_bad_overrides_fail_before_training(synthetic_data, tmp_path, override, message):
  paths = _write_configs(tmp_path, synthetic_data)
  with pytest.raises(UserError, match=message):
    compare.compare([str(p) for p in paths], 1, tmp_path / "cmp", [override])
  assert not (tmp_path / "cmp").exists()


def test_missing_config_file(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    compare.compare([str(tmp_path / "nope.py")], 1, tmp_path / "cmp")
