import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_module, run_script
from PIL import Image
import tolerances

from mnist_jax import compare, stats, training
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
  record = json.loads((tmp_path / "cmp" / "comparison-adam-vs-sgd.json").read_text())
  assert list(record["configs"]) == ["adam", "sgd"]
  finals, on_validation = {}, True
  for name in ("adam", "sgd"):
    runs = record["configs"][name]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["test_accuracy"]) == 2 for r in runs)  # The override applied.
    # On CPU (--seeds_as=auto), a run per seed, numbered as its folder.
    assert record["configs"][name]["trained_as"] == "separate"
    summaries = [json.loads((tmp_path / "cmp" / name / f"seed{s}" / "summary.json")
                            .read_text()) for s in (0, 1)]
    for s in (0, 1):
      assert (f"comparing: {name}, seed{s} (run {s + 1} of 2, one per seed), in "
              f"{tmp_path / 'cmp' / name / f'seed{s}'}") in result.stderr
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
  table = (tmp_path / "cmp" / "comparison-adam-vs-sgd.md").read_text()
  assert "| adam | toy | mlp | adam | 2 |" in table and "| sgd | toy | mlp | sgd | 2 |" in table
  assert "| baseline |" in table
  assert table in result.stdout
  assert ("TEST set" in table) is (not on_validation)
  assert ("TEST set" in result.stderr) is (not on_validation)
  assert "only 2 seed(s)" in table and "only 2 seed(s)" in result.stderr
  assert "members of one run" not in table
  with Image.open(tmp_path / "cmp" / "comparison-adam-vs-sgd.png") as image:
    assert image.format == "PNG"


# mnist160 (shipped in the package), as configs/mnist160.py trains it and
# with an MLP whose file asks for 3 seeds of its own: compare's --seeds wins.
MLP160 = """
from configs import mnist160

def get_config():
  config = mnist160.get_config()
  config.model = "mlp"
  config.num_seeds = 3
  return config
"""
OVERRIDES = ["num_epochs=2", "plots=False"]


def _configs(folder):
  (folder / "mlp160.py").write_text(MLP160)
  return [str(REPO / "configs" / "mnist160.py"), str(folder / "mlp160.py")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """Seeds 0 and 1 of mnist160 and mlp160 compared without interruption: as
  members (compare's default) and as a run per seed (--separate)."""
  root = tmp_path_factory.mktemp("straight")
  paths = _configs(root)
  return paths, {how: compare.compare(paths, 2, root / how, OVERRIDES, seeds_as=how)
                 for how in ("members", "separate")}


def _per_seed(record, key):
  return {name: [run[key] for run in result["runs"]]
          for name, result in record["configs"].items()}


def test_seeds_as_members_of_one_run_report_what_separate_runs_do(straight):
  paths, records = straight
  members, separate = records["members"], records["separate"]
  for name in ("mnist160", "mlp160"):
    assert members["configs"][name]["trained_as"] == "members"
    assert separate["configs"][name]["trained_as"] == "separate"
    assert [r["seed"] for r in members["configs"][name]["runs"]] == [0, 1]
  # Each member computes what a run of its seed alone does; on CPU, as
  # tests/test_members.py asserts, to the same test accuracy (a count of
  # the same 80 images), at every epoch.
  assert (_per_seed(members, "reported_test_accuracy")
          == _per_seed(separate, "reported_test_accuracy"))
  assert _per_seed(members, "test_accuracy") == _per_seed(separate, "test_accuracy")
  # And the seeds differ, so that members given one seed, or swapped, fail.
  assert all(a != b for a, b in _per_seed(separate, "test_accuracy").values())
  # One run of two members per config (not the file's 3), each seed's
  # share of its time half of it.
  folder = Path(paths[1]).parent
  run = json.loads((folder / "members" / "mlp160" / "seeds0-1" / "summary.json").read_text())
  assert [m["seed"] for m in run["members"]] == [0, 1]
  assert sorted(p.name for p in (folder / "members" / "mlp160").iterdir()) == ["seeds0-1"]
  assert sorted(p.name for p in (folder / "separate" / "mlp160").iterdir()) == [
      "seed0", "seed1"]
  for entry in members["configs"]["mlp160"]["runs"]:
    assert entry["run_train_seconds"] == run["train_seconds"]
    # One division of the same float.
    assert entry["train_seconds"] == run["train_seconds"] / 2


def test_an_interrupted_comparison_resumes_where_it_stopped(straight, tmp_path,
                                                            monkeypatch):
  paths, records = straight
  train = training.train_and_evaluate
  trained = []

  def stop_after_epoch_1(record):
    if record["epoch"] == 1:
      raise RuntimeError("the machine went down")

  def interrupted(config, workdir, started_at=None, callbacks=()):
    trained.append(Path(workdir).relative_to(tmp_path).as_posix())
    if "mlp160" in str(workdir):  # The second config: after its first epoch.
      callbacks = (*callbacks, stop_after_epoch_1)
    return train(config, workdir, started_at, callbacks)
  monkeypatch.setattr(training, "train_and_evaluate", interrupted)
  with pytest.raises(UserError, match="the machine went down"):
    compare.compare(paths, 2, tmp_path, OVERRIDES, "members")
  assert trained == ["mnist160/seeds0-1", "mlp160/seeds0-1"]
  assert not list(tmp_path.glob("comparison-*"))

  resumed = []

  def recorded(*args, **kwargs):
    result = train(*args, **kwargs)
    resumed.append(result.summary)
    return result
  monkeypatch.setattr(training, "train_and_evaluate", recorded)
  record = compare.compare(paths, 2, tmp_path, OVERRIDES, "members")
  # The finished config is read, not trained again; the other resumes
  # from its checkpoint of epoch 1.
  assert [s["config"]["model"] for s in resumed] == ["mlp"]
  assert resumed[0]["resumed_from_epoch"] == 1
  # And ends where the uninterrupted comparison did (bitwise on CPU).
  for key in ("reported_test_accuracy", "test_accuracy"):
    assert _per_seed(record, key) == _per_seed(records["members"], key)


def test_a_second_comparison_keeps_the_first_and_reuses_its_runs(
    straight, tmp_path, monkeypatch):
  paths, _ = straight
  workdir = tmp_path / "cmp"
  shutil.copytree(Path(paths[1]).parent / "members", workdir)
  first = {p.name: p.read_bytes() for p in workdir.glob("comparison-*")}
  assert sorted(first) == [f"comparison-mnist160-vs-mlp160.{s}" for s in ("json", "md", "png")]

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(training, "train_and_evaluate", no_training)
  compare.compare(paths[::-1], 2, workdir, OVERRIDES, "members")
  compare.compare(paths[1:], 2, workdir, OVERRIDES, "members")
  names = sorted(p.name for p in workdir.glob("comparison-*"))
  assert names == sorted(f"{stem}.{s}" for s in ("json", "md", "png") for stem in (
      "comparison-mnist160-vs-mlp160", "comparison-mlp160-vs-mnist160",
      "comparison-mlp160"))
  assert {name: (workdir / name).read_bytes() for name in first} == first
  reversed_record = json.loads((workdir / "comparison-mlp160-vs-mnist160.json").read_text())
  assert reversed_record["baseline"] == "mlp160"


def test_comparison_stem_names_the_configs():
  assert compare.comparison_stem(["mnist", "mnist_speedrun"]) == (
      "comparison-mnist-vs-mnist_speedrun")
  long = [f"config_{k:02d}_with_a_long_name" for k in range(6)]
  stems = {compare.comparison_stem(long), compare.comparison_stem(long[:5] + ["other"]),
           compare.comparison_stem(long[::-1])}
  assert len(stems) == 3 and all(len(s) <= 100 for s in stems)


def test_a_config_that_sweeps_is_refused_and_early_stopping_trains_a_run_per_seed(
    tmp_path):
  paths = _configs(tmp_path)
  with pytest.raises(UserError, match="mnist160.py sweeps .sweep.learning_rate.: "
                     "compare compares configs, not sweep points"):
    compare.compare(paths, 2, tmp_path / "cmp", ["sweep.learning_rate=0.001,0.01"])
  assert not (tmp_path / "cmp").exists()
  # Members stop together, on their mean validation accuracy; a seed alone
  # stops on its own: early stopping keeps a run per seed.
  stopping = compare.load_configs(paths, ["early_stopping_patience=2",
                                          "validation_size=8"])["mlp160"]
  assert [compare.trained_as(stopping, how, backend) for how, backend in (
      ("members", "cpu"), ("auto", "gpu"))] == ["separate", "separate"]
  # Otherwise as asked; auto: a run per seed on CPU (unrolled members
  # trained slower there), members where they are vmapped.
  config = compare.load_configs(paths)["mlp160"]
  assert [compare.trained_as(config, how, backend) for how, backend in (
      ("members", "cpu"), ("separate", "gpu"), ("auto", "cpu"), ("auto", "gpu"),
      ("auto", "tpu"))] == ["members", "separate", "separate", "members", "members"]
  assert compare.trained_as(config) == "separate"  # This machine's: CPU.
  with pytest.raises(UserError, match="--seeds_as='vmap': choose one of auto, members"):
    compare.trained_as(config, "vmap")


def test_compare_members_benchmark_tiny(tmp_path, script_env):
  out = tmp_path / "record.json"
  run_script("benchmarks/compare_members.py", "--configs=configs/mnist160.py",
             "--seeds=2", "--rounds=2", "--override=num_epochs=1", f"--out={out}",
             env=script_env)
  record = json.loads(out.read_text())
  assert [(r["round"], r["side"]) for r in record["runs"]] == [
      (0, "before"), (0, "after"), (1, "after"), (1, "before")]
  assert [r["configs"]["mnist160"]["trained_as"] for r in record["runs"]] == [
      "separate", "members", "members", "separate"]
  assert record["same_accuracies"] and record["max_abs_accuracy_difference"] == {"mnist160": 0}
  by = {(r["round"], r["side"]): r for r in record["runs"]}
  for ratio in record["after_over_before"]:
    k = ratio["round"]
    # The record's own floats, divided once.
    assert ratio["wall_seconds"] == by[(k, "after")]["wall_seconds"] / by[(k, "before")]["wall_seconds"]
  assert record["commands"]["before"].endswith("--seeds_as=separate")
  assert record["commands"]["after"].endswith("--seeds_as=members")
  assert record["lscpu_model_name"] and record["machine"]["date"]


def test_compare_members_benchmark_refuses_a_bad_flag_in_one_line(script_env):
  result = run_script("benchmarks/compare_members.py", "--seeds=0", env=script_env,
                      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].endswith(
      "argument --seeds: must be a positive integer, got '0'")


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
