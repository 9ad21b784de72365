"""compare --tune=N (mnist_jax/tuning.py): the same search for every config,
chosen on validation, then the chosen values trained with the seeds."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_module

from mnist_jax import compare, members, training, tuning
from mnist_jax.errors import UserError

# mnist160 (adam at 1e-3, no sweep: the default search around it) against
# SGD with a search of its own over two fields.
SGD160 = """
from configs import mnist160

def get_config():
  config = mnist160.get_config()
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.sweep.learning_rate = "loguniform(0.01, 0.3)"
  config.sweep.momentum = "uniform(0.5, 0.95)"
  return config
"""
OVERRIDES = ["num_epochs=2", "plots=False", "model=mlp"]
TRIALS = 3


def _configs(folder: Path) -> list[str]:
  (folder / "sgd160.py").write_text(SGD160)
  return [str(REPO / "configs" / "mnist160.py"), str(folder / "sgd160.py")]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
  """mnist160 against sgd160, --tune=3 --seeds=2 (as the members of one
  run), without interruption."""
  root = tmp_path_factory.mktemp("tuned")
  paths = _configs(root)
  return paths, root / "cmp", compare.compare(paths, 2, root / "cmp", OVERRIDES,
                                              "members", tune=TRIALS)


def _best(search_summary):
  """The point validation chooses, from the search run's summary.json: the
  highest validation accuracy at its best epoch, ties by the lower loss."""
  best = max(search_summary["members"], key=lambda m: (
      m["best_validation_accuracy"], -m.get("validation_loss_at_best_epoch", 0)))
  return {k: v for k, v in best.items() if k in members.SWEEPABLE}


def test_each_config_is_tuned_on_validation_then_trained_with_the_seeds(tuned):
  _, workdir, record = tuned
  assert record["tune"] == TRIALS and record["ranked_on"] == "validation"
  searched = {"mnist160": {"learning_rate": "loguniform(0.0001, 0.01)"},
              "sgd160": {"learning_rate": "loguniform(0.01, 0.3)",
                         "momentum": "uniform(0.5, 0.95)"}}
  for name, result in record["configs"].items():
    tuning_ = result["tuning"]
    assert tuning_["searched"] == searched[name]
    # The same budget: 3 trials of 2 epochs, as the members of one run.
    assert (tuning_["trials"], tuning_["epochs"], tuning_["trial_epochs"]) == (
        TRIALS, 2, 6)
    search = json.loads((workdir / name / "tune3" / "search" / "summary.json").read_text())
    assert len(search["members"]) == TRIALS
    assert tuning_["train_seconds"] == search["train_seconds"]
    # Its points are the draws of the search config's distributions.
    assert [{k: v for k, v in m.items() if k in members.SWEEPABLE}
            for m in search["members"]] == [
                {k: p[k] for k in searched[name]} for p in tuning_["points"]]
    # The point validation chose (the trials differ, so a wrong pick fails).
    assert len({p["validation_accuracy"] for p in tuning_["points"]}) > 1 or (
        len({p["validation_loss"] for p in tuning_["points"]}) > 1)
    assert tuning_["chosen"] == _best(search)
    assert tuning_["validation_accuracy"] == max(
        m["best_validation_accuracy"] for m in search["members"])
    # mnist160 has no validation split: a tenth of 80 images is less than
    # one per class, so 10 are held out, for the search and the seeds.
    assert tuning_["held_out_for_validation"] == 10 and tuning_["train_images"] == 80
    assert search["config"]["validation_size"] == 10
    # The seeds train the chosen values, without the sweep, in tune3/.
    seeds = json.loads((workdir / name / "tune3" / "seeds0-1" / "summary.json").read_text())
    for field, value in tuning_["chosen"].items():
      assert seeds["config"][field] == value
    assert seeds["config"]["sweep_samples"] == 0 and seeds["config"]["validation_size"] == 10
    assert all(v == "" for v in seeds["config"]["sweep"].values())
    assert [m["seed"] for m in seeds["members"]] == [0, 1]
    assert [r["reported_test_accuracy"] for r in result["runs"]] == [
        m["test_accuracy_at_best_epoch"] for m in seeds["members"]]
  table = (workdir / "comparison-mnist160-vs-sgd160-tune3.md").read_text()
  chosen = record["configs"]["sgd160"]["tuning"]["chosen"]
  assert (f"| sgd160 | mnist160 | mlp | sgd | 2 | learning_rate="
          f"{chosen['learning_rate']:.4g}, momentum={chosen['momentum']:.4g} | 3 x 2 | "
          in table)
  assert "Tuned (--tune=3)" in table
  assert ("- mnist160 searched learning_rate=loguniform(0.0001, 0.01); chosen at "
          in table)
  assert "10 of its 80 training images held out for validation" in table
  assert json.loads((workdir / "comparison-mnist160-vs-sgd160-tune3.json").read_text()
                    ) == record


def test_an_interrupted_tuned_comparison_reuses_its_finished_searches(
    tuned, tmp_path, monkeypatch):
  paths, workdir, record = tuned
  # The machine went down after both searches finished, before any seeds
  # trained: only the searches are there.
  for name in ("mnist160", "sgd160"):
    shutil.copytree(workdir / name / "tune3" / "search",
                    tmp_path / name / "tune3" / "search")
  train = training.train_and_evaluate
  trained = []

  def recorded(config, workdir, *args, **kwargs):
    trained.append(Path(workdir).relative_to(tmp_path).as_posix())
    return train(config, workdir, *args, **kwargs)
  monkeypatch.setattr(training, "train_and_evaluate", recorded)
  # The seeds now as a run each (--seeds_as=separate; auto's choice on CPU).
  resumed = compare.compare(paths, 2, tmp_path, OVERRIDES, "separate", tune=TRIALS)
  assert trained == [f"{name}/tune3/seed{k}" for name in ("mnist160", "sgd160")
                     for k in (0, 1)]
  for name, result in resumed["configs"].items():
    assert result["tuning"] == record["configs"][name]["tuning"]
    # The same seeds of the same chosen values, as a run each: the same
    # accuracies as the members' at every epoch (bitwise on CPU).
    assert ([r["test_accuracy"] for r in result["runs"]]
            == [r["test_accuracy"] for r in record["configs"][name]["runs"]])


def test_a_search_of_another_config_is_trained_not_read(tuned, tmp_path, monkeypatch):
  paths, workdir, _ = tuned
  shutil.copytree(workdir / "mnist160" / "tune3" / "search",
                  tmp_path / "mnist160" / "tune3" / "search")

  class Trained(Exception):
    pass

  def refuse(*args, **kwargs):
    raise Trained
  monkeypatch.setattr(training, "train_and_evaluate", refuse)
  # Another sweep_seed draws other trials: that search is not the one there.
  with pytest.raises(Trained):
    compare.compare(paths[:1], 2, tmp_path, [*OVERRIDES, "sweep_seed=1"], tune=TRIALS)


@pytest.mark.parametrize("tune, override, message", [
    (0, [], "--tune must be at least 1 .the trials each config's search trains., got 0"),
    (-2, [], "--tune must be at least 1"),
    (3, ["sweep.learning_rate=0.001,0.01"],
     r"--tune draws its trials from distributions, but config.sweep.learning_rate="
     r"'0.001,0.01' is a grid: write it as a distribution, e.g. "
     r"'loguniform\(0.001, 0.01\)', 'uniform\(a, b\)' or 'choice\(0.001, 0.01\)'"),
])
def test_bad_tuning_is_one_line_and_trains_nothing(tmp_path, monkeypatch, tune,
                                                   override, message):
  def no_training(*args, **kwargs):
    raise AssertionError("trained")
  monkeypatch.setattr(training, "train_and_evaluate", no_training)
  with pytest.raises(UserError, match=message):
    compare.compare(_configs(tmp_path), 2, tmp_path / "cmp", [*OVERRIDES, *override],
                    tune=tune)
  assert not (tmp_path / "cmp").exists()


def test_bad_tune_flag_exits_with_one_line(tmp_path):
  result = run_module("mnist_jax", "compare", *_configs(tmp_path), "--tune=0",
                      f"--workdir={tmp_path / 'cmp'}")
  assert result.returncode == 1
  assert result.stderr.strip() == ("error: --tune must be at least 1 (the trials "
                                   "each config's search trains), got 0")
  assert not (tmp_path / "cmp").exists()


def test_holdout_size():
  assert tuning.holdout_size(60_000, 10) == 5000  # At most 5,000.
  assert tuning.holdout_size(20_000, 10) == 2000  # A tenth.
  assert tuning.holdout_size(80, 10) == 10  # At least one per class.
  assert tuning.holdout_size(88_800, 37) == 5000


def test_without_tune_a_sweeping_config_is_still_refused(tmp_path):
  with pytest.raises(UserError, match="compare compares configs, not sweep points"):
    compare.compare(_configs(tmp_path)[1:], 2, tmp_path / "cmp",
                    [*OVERRIDES, "sweep_samples=3"])


def test_the_budget_of_a_search_with_successive_halving(tmp_path):
  # 4 trials, 2 epochs, the best half kept after epoch 1: 4 + 2 trial-epochs.
  # (Learning rates of 3e-4..3e-2, where both survivors learn.)
  record = compare.compare(
      _configs(tmp_path)[:1], 1, tmp_path / "cmp",
      [*OVERRIDES, "learning_rate=0.003", "sweep_halving_epochs=1",
       "sweep_halving_eta=2"], "members", tune=4)
  result = record["configs"]["mnist160"]["tuning"]
  assert (result["trials"], result["epochs"], result["trial_epochs"]) == (4, 2, 6)
  assert result["halving_epochs"] == "1"
  search = json.loads((tmp_path / "cmp" / "mnist160" / "tune4" / "search" /
                       "summary.json").read_text())
  # The choice is among the survivors, each trained to the last epoch.
  assert len(result["points"]) == 2 and result["chosen"] == _best(search)
  table = (tmp_path / "cmp" / "comparison-mnist160-tune4.md").read_text()
  assert "| 4 x 2 (6 trial-epochs, halving) |" in table
