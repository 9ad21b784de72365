"""What a sweep reports (issue 25): validation accuracy first and the point
and member it chose, ties broken by the loss, the members that diverged or
stayed at chance named, and the values each member trained with."""

import json
import logging
import math

import numpy as np
import pytest

from conftest import toy_config
from mnist_jax import outputs, training


def _lines(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records]


def _rank(accuracy, loss):
  """Independent of summary.rank: higher accuracy, then lower loss."""
  return accuracy, -loss if math.isfinite(loss) else -math.inf


def _best(records, k):
  """(epoch, validation accuracy, validation loss) member k's selection picks."""
  own = [(r["epoch"], r["members"][k]["validation_accuracy"],
          r["members"][k]["validation_loss"]) for r in records]
  ranks = [_rank(a, l) for _, a, l in own]
  return own[ranks.index(max(ranks))]


def test_a_sweep_reports_validation_first_and_the_point_it_chose_by_loss_on_ties(
    synthetic_data, tmp_path, caplog):
  # Two learning rates that both reach every validation image: their tie in
  # accuracy is broken by the validation loss, not by the order of points
  # (the second has the lower loss).
  config = toy_config(synthetic_data, num_seeds=2, num_epochs=3,
                      validation_size=60, lr_schedule="constant")
  config.sweep.learning_rate = "0.01,0.003"
  with caplog.at_level(logging.INFO):
    result = training.train_and_evaluate(config, tmp_path / "run")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary == json.loads(json.dumps(result.summary))
  records = outputs.read_metrics(tmp_path / "run")

  best = [_best(records, k) for k in range(4)]
  for member, (epoch, accuracy, loss) in zip(summary["members"], best, strict=True):
    assert (member["best_epoch"], member["best_validation_accuracy"],
            member["validation_loss_at_best_epoch"]) == (epoch, accuracy, loss)
    keys = list(member)
    # Validation's figures come before test's.
    assert keys.index("best_validation_accuracy") < keys.index("test_accuracy_at_best_epoch")
    assert keys.index("final_validation_accuracy") < keys.index("final_test_accuracy")
  means = []
  for p, point in enumerate(summary["points"]):
    keys = list(point)
    assert keys.index("validation_accuracy_at_best_epoch") < min(
        keys.index("test_accuracy_at_best_epoch"), keys.index("final_test_accuracy"))
    own = best[2 * p:2 * p + 2]
    mean_accuracy = point["validation_accuracy_at_best_epoch"]["mean"]
    assert mean_accuracy == pytest.approx(np.mean([a for _, a, _ in own]), abs=1e-12)
    means.append((mean_accuracy, point["validation_loss_at_best_epoch"]["mean"]))
  # The case this test is for: a tie in mean validation accuracy, the
  # second point's loss the lower.
  assert means[0][0] == means[1][0] and means[1][1] < means[0][1]
  assert summary["chosen_point"]["index"] == 1
  assert summary["chosen_point"]["values"] == {"learning_rate": 0.003}
  assert summary["chosen_point"]["selected_on"] == "validation"
  assert "lower validation loss" in summary["chosen_point"]["rule"]
  ranks = [_rank(a, l) for _, a, l in best]
  assert summary["chosen_member"]["index"] == ranks.index(max(ranks))

  lines = _lines(caplog)
  for p, lr in enumerate(("0.01", "0.003")):
    line = next(l for l in lines if l.startswith(f"learning_rate={lr}: "))
    assert line.index("validation accuracy") < line.index("test accuracy")
    assert f"{100 * means[p][0]:.2f}%" in line
  assert any(l.startswith("validation chose learning_rate=0.003 (point 1)")
             and "lower validation loss" in l for l in lines)
  epoch_lines = [l for l in lines if l.startswith("epoch ")]
  assert len(epoch_lines) == 3
  assert all(l.index("validation loss") < l.index("test loss") for l in epoch_lines)


def test_the_best_epoch_breaks_ties_in_validation_accuracy_by_its_loss(
    synthetic_data, tmp_path, caplog):
  from mnist_jax.trained import load_trained  # pylint: disable=g-import-not-at-top
  config = toy_config(synthetic_data, num_epochs=4, validation_size=60,
                      lr_schedule="constant", learning_rate=0.01)
  with caplog.at_level(logging.INFO):
    result = training.train_and_evaluate(config, tmp_path / "run")
  records = outputs.read_metrics(tmp_path / "run")
  top = max(r["validation_accuracy"] for r in records)
  tied = [r for r in records if r["validation_accuracy"] == top]
  # The case this test is for: equal accuracies, other losses, the first
  # of them not the lowest.
  assert len(tied) > 1
  expected = min(tied, key=lambda r: r["validation_loss"])
  assert expected is not tied[0]
  assert result.summary["best_epoch"] == expected["epoch"]
  assert "lower validation loss" in result.summary["selection_rule"]
  # The best checkpoint is of the same epoch.
  best = load_trained(tmp_path / "run", checkpoint="best")
  assert best.epoch == expected["epoch"]
  assert any(f"at epoch {expected['epoch']} (the best: the highest validation "
             f"accuracy; ties broken by the lower validation loss" in l
             for l in _lines(caplog))


def test_members_that_diverge_or_stay_at_chance_are_named_and_counted(
    synthetic_data, tmp_path, caplog):
  # 1e-9: member 1 stays at its initialisation; 1e12: member 2 diverges.
  config = toy_config(synthetic_data, optimizer="sgd", momentum=0.9, num_epochs=2)
  config.sweep.learning_rate = "0.05,1e-9,1e12"
  with caplog.at_level(logging.INFO):
    result = training.train_and_evaluate(config, tmp_path / "run")
  summary = result.summary
  # No validation split: judged on the 100 test images, 10 classes; 3
  # binomial standard errors above chance.
  bound = 0.1 + 3 * math.sqrt(0.1 * 0.9 / 100)
  assert summary["chance"]["split"] == "test" and summary["chance"]["num_images"] == 100
  assert summary["chance"]["at_most"] == pytest.approx(bound, rel=1e-12)
  last = outputs.read_metrics(tmp_path / "run")[-1]["members"]
  # The cases this test is for.
  assert last[0]["test_accuracy"] > bound and math.isfinite(last[1]["train_loss"])
  assert last[1]["test_accuracy"] <= bound and not math.isfinite(last[2]["train_loss"])
  assert [m["status"] for m in last] == ["ok", "at_chance", "diverged"]
  assert [m["status"] for m in summary["members"]] == ["ok", "at_chance", "diverged"]
  assert [(m["member"], m["learning_rate"], m["status"])
          for m in summary["collapsed_members"]] == [
              (1, 1e-9, "at_chance"), (2, 1e12, "diverged")]
  note = "mean of 3 members, member 1 at chance and member 2 diverged included"
  assert summary["means_over_members"] == note
  lines = _lines(caplog)
  epoch_lines = [l for l in lines if l.startswith("epoch ")]
  assert note.replace("mean", "means") in epoch_lines[-1]
  assert any(l.startswith("member 1 (seed=0, learning_rate=1e-09) stayed at chance")
             for l in lines)
  assert any(l.startswith("member 2 (seed=0, learning_rate=1e+12) diverged")
             for l in lines)
  # Test is what selection reads here, and the run says so.
  assert summary["chosen_member"] == {
      "index": 0, "seed": 0, "learning_rate": 0.05, "selected_on": "test",
      "rule": summary["chosen_member"]["rule"]}


def test_a_single_run_at_chance_is_flagged(synthetic_data, tmp_path, caplog):
  config = toy_config(synthetic_data, optimizer="sgd", learning_rate=1e-9,
                      num_epochs=1, validation_size=60)
  with caplog.at_level(logging.INFO):
    result = training.train_and_evaluate(config, tmp_path / "run")
  # On the 60 validation images, not the 100 test ones.
  assert result.summary["chance"]["at_most"] == pytest.approx(
      0.1 + 3 * math.sqrt(0.09 / 60), rel=1e-12)
  assert result.summary["status"] == "at_chance"
  assert any(l.startswith("this run at chance: final validation accuracy")
             for l in _lines(caplog))


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_a_one_value_sweep_reports_the_value_it_trained_with(
    synthetic_data, tmp_path, caplog, num_seeds):
  common = dict(num_epochs=1, lr_schedule="constant", num_seeds=num_seeds)
  config = toy_config(synthetic_data, **common)
  config.sweep.learning_rate = "3e-2"
  with caplog.at_level(logging.INFO):
    swept = training.train_and_evaluate(config, tmp_path / "swept")
  plain = training.train_and_evaluate(
      toy_config(synthetic_data, learning_rate=3e-2, **common), tmp_path / "plain")
  # It trained at 3e-2: the plain run's losses, to the injected rate's
  # rounding (one float32 product, tolerances of test_members).
  assert swept.summary["final_test_loss"] == pytest.approx(
      plain.summary["final_test_loss"], rel=1e-4)
  assert swept.summary["config"]["learning_rate"] == 0.03
  record = outputs.read_metrics(tmp_path / "swept")[-1]
  assert record["learning_rate"] == pytest.approx(0.03, rel=1e-6)
  banner = next(l for l in _lines(caplog) if l.startswith("config: "))
  assert "learning_rate=0.03" in banner and "learning_rate=0.001" not in banner


def test_a_sweep_of_several_values_says_so_in_banner_and_config(
    synthetic_data, tmp_path, caplog):
  config = toy_config(synthetic_data, num_epochs=1, learning_rate=0.005)
  config.sweep.learning_rate = "0.01,0.03"
  with caplog.at_level(logging.INFO):
    result = training.train_and_evaluate(config, tmp_path / "run")
  assert result.summary["config"]["learning_rate"] == "swept, see members"
  assert [m["learning_rate"] for m in result.summary["members"]] == [0.01, 0.03]
  banner = next(l for l in _lines(caplog) if l.startswith("config: "))
  assert "learning_rate: swept, see members" in banner
  assert "learning_rate=0.005" not in banner
