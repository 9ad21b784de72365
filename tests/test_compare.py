import json

import pytest
from conftest import run_module
from PIL import Image
import tolerances

from mnist_jax import compare, stats
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
  finals, on_validation = {}, True
  for name in ("adam", "sgd"):
    runs = record["configs"][name]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["test_accuracy"]) == 2 for r in runs)  # The override applied.
    summaries = [json.loads((tmp_path / "cmp" / name / f"seed{s}" / "summary.json")
                            .read_text()) for s in (0, 1)]
    # The accuracy a run reports: at its best validation epoch, if it had a
    # validation split, else after its last epoch.
    finals[name] = [
        s["test_accuracy_at_best_epoch"] if s.get("selected_on") == "validation"
        else s["final_test_accuracy"] for s in summaries]
    on_validation &= all(s.get("selected_on") == "validation" for s in summaries)
    accuracy = record["configs"][name]["test_accuracy"]
    # statistics.fmean of the same two floats: within float64's rounding.
    assert accuracy["mean"] == pytest.approx(
        sum(finals[name]) / 2, abs=tolerances.float64_sum(2, max(finals[name])))
    assert accuracy["min"] == min(finals[name]) and accuracy["max"] == max(finals[name])
    assert accuracy["n"] == 2 and len(accuracy["ci95"]) == 2
  assert record["baseline"] == "adam" and record["configs"]["adam"]["p_vs_baseline"] is None
  assert record["configs"]["sgd"]["p_vs_baseline"] == stats.welch(finals["sgd"], finals["adam"])
  table = (tmp_path / "cmp" / "comparison.md").read_text()
  assert "| adam | toy | mlp | adam | 2 |" in table and "| sgd | toy | mlp | sgd | 2 |" in table
  assert "| baseline |" in table
  assert table in result.stdout
  assert ("TEST set" in table) is (not on_validation)
  assert ("TEST set" in result.stderr) is (not on_validation)
  assert "only 2 seed(s)" in table and "only 2 seed(s)" in result.stderr
  with Image.open(tmp_path / "cmp" / "comparison.png") as image:
    assert image.format == "PNG"


@pytest.mark.parametrize("override, message", [
    ("num_epochs", "expected field=value"),
    ("nofield=3", "--override=nofield: no such field"),
    ("batch_size=abc", "config.batch_size must be an integer, got 'abc'"),
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


def _run(seed, test, validation=None, seconds=10.0):
  """A run_entry from a summary.json as train writes it: with a validation
  split when `validation` is given, else as summaries without one (or written
  before selected_on existed) read."""
  summary = {"final_test_accuracy": test - 0.01, "best_test_accuracy": test + 0.01,
             "train_seconds": seconds}
  if validation is not None:
    summary.update(selected_on="validation", best_epoch=3, test_accuracy_at_best_epoch=test,
                   best_validation_accuracy=validation)
  else:
    summary["final_test_accuracy"] = test
  return compare.run_entry(seed, summary, [{"test_accuracy": test, "epoch_seconds": seconds}])


def _result(*runs):
  return {"dataset": "mnist", "model": "cnn", "optimizer": "adam", "num_epochs": 3,
          "runs": list(runs)}


def test_reported_accuracy():
  old = {"final_test_accuracy": 0.97, "best_test_accuracy": 0.98}
  assert compare.reported_accuracy(old) == (0.97, "test")
  assert compare.reported_accuracy({**old, "selected_on": "test"}) == (0.97, "test")
  assert compare.reported_accuracy(
      {**old, "selected_on": "validation", "test_accuracy_at_best_epoch": 0.975,
       "best_validation_accuracy": 0.99}) == (0.975, "validation")


def test_table_on_validation():
  # c has the best validation accuracy but the worst test accuracy: ranked on
  # validation, it comes right after the baseline.
  results = {
      "base": _result(_run(0, 0.970, 0.980), _run(1, 0.972, 0.981), _run(2, 0.971, 0.979)),
      "b": _result(_run(0, 0.975, 0.982), _run(1, 0.976, 0.983), _run(2, 0.978, 0.985, 20.0)),
      "c": _result(_run(0, 0.960, 0.990), _run(1, 0.961, 0.991), _run(2, 0.962, 0.990))}
  record = compare.comparison_record(results, 3, [])
  assert record["ranked_on"] == "validation" and record["ranking"] == ["base", "c", "b"]
  assert list(record["configs"]) == ["base", "b", "c"]  # JSON keeps the order given.
  b = record["configs"]["b"]
  # By hand: mean 0.97633.., sample std sqrt(0.000004667/2) = 0.0015275,
  # half-width t(0.975, 2) * std / sqrt(3) = 4.302653 * 0.00088192. Each is
  # typed to its last digit: off by at most half of it (float64's own
  # rounding, 1e-16, is far below).
  typed = lambda decimals: 0.5 * 10.0 ** -decimals
  assert b["test_accuracy"]["mean"] == pytest.approx(0.9763333333, abs=typed(10))
  assert b["test_accuracy"]["std"] == pytest.approx(0.0015275252, abs=typed(10))
  assert b["test_accuracy"]["ci95"] == pytest.approx(
      [0.9763333333 - 0.0037946, 0.9763333333 + 0.0037946], abs=typed(7) + typed(10))
  assert b["validation_accuracy"]["mean"] == pytest.approx(0.9833333333, abs=typed(10))
  assert b["train_seconds"]["mean"] == pytest.approx(40 / 3, abs=tolerances.float64_sum(3, 20))
  # Welch on the reported test accuracies, not on validation: scipy 1.17.1's
  # ttest_ind([.975, .976, .978], [.970, .972, .971], equal_var=False), to
  # within stats.welch's agreement with scipy (tests/test_stats.py: 1e-10).
  assert b["p_vs_baseline"] == pytest.approx(0.010555091171330584, rel=1e-10)
  assert record["configs"]["base"]["p_vs_baseline"] is None
  table = compare.markdown_table(record)
  assert ("| b | mnist | cnn | adam | 3 | 98.33% | 97.63% | 0.15 | 97.25..98.01% | 0.011 | "
          "97.50% | 97.80% | 13.3 |") in table
  assert "| base | mnist | cnn | adam | 3 | 98.00% | 97.10% | 0.10 | 96.85..97.35% | baseline |" in table
  assert "| c | mnist | cnn | adam | 3 | 99.03% | 96.10% |" in table and "| <0.001 |" in table
  rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")]
  assert rows == ["| config", "| base", "| c", "| b"]
  assert "best validation epoch" in table
  assert "TEST set" not in table and "Warning" not in table  # Validation, 3 seeds.
  assert "95% CI:" in table and "p vs baseline:" in table


def test_table_on_test_says_so():
  results = {"base": _result(_run(0, 0.970), _run(1, 0.972)),
             "worse": _result(_run(0, 0.950), _run(1, 0.951)),
             "better": _result(_run(0, 0.975), _run(1, 0.976))}
  record = compare.comparison_record(results, 2, ["num_epochs=2"])
  assert record["ranked_on"] == "test" and record["ranking"] == ["base", "better", "worse"]
  table = compare.markdown_table(record)
  assert compare.TEST_SET_SENTENCE in table and "validation mean" not in table
  assert "after the last epoch over 2 seed(s); overrides: num_epochs=2" in table
  assert compare.seeds_warning(2) in table and "only 2 seed(s)" in table
  # t(0.975, 1) = 12.706: two seeds give a wide interval.
  assert "| base | mnist | cnn | adam | 3 | 97.10% | 0.14 | 95.83..98.37% | baseline |" in table


def test_one_validation_split_missing_ranks_on_test():
  results = {"base": _result(_run(0, 0.970, 0.99), _run(1, 0.972, 0.99), _run(2, 0.97, 0.99)),
             "other": _result(_run(0, 0.975), _run(1, 0.976), _run(2, 0.974))}
  record = compare.comparison_record(results, 3, [])
  assert record["ranked_on"] == "test"
  assert compare.TEST_SET_SENTENCE in compare.markdown_table(record)


def test_one_seed_has_no_interval_or_p_value():
  record = compare.comparison_record(
      {"base": _result(_run(0, 0.97)), "other": _result(_run(0, 0.98))}, 1, [])
  assert record["configs"]["other"]["p_vs_baseline"] is None
  assert record["configs"]["other"]["test_accuracy"]["ci95"] is None
  table = compare.markdown_table(record)
  assert "| other | mnist | cnn | adam | 3 | 98.00% | 0.00 | n/a | n/a | 98.00% |" in table
  assert "only 1 seed(s)" in table
