"""Successive halving in one run (halving.py): rungs keep the best sweep
points by validation accuracy, the run trains on with their members only,
and a killed run resumes with the same survivors to the same numbers."""

import json
import logging
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import REPO, checkpoint_params, toy_config

from mnist_jax import outputs, training
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained

LEARNING_RATES = "0.0003,0.003,0.03,0.3"
# mnist160: 80 train images, 16 held out for validation, 4 steps of 16.
TINY = dict(dataset="mnist160", batch_size=16, validation_size=16,
            lr_schedule="constant")


def _config(num_epochs, rungs, **overrides):
  config = toy_config("unused", **{
      **TINY, "num_epochs": num_epochs, "sweep_halving_epochs": rungs,
      "sweep_halving_eta": 2, **overrides})
  config.sweep.learning_rate = LEARNING_RATES
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _ranked(record, num_seeds):
  """The points of a record's members, best first, as the rung must rank
  them: mean validation accuracy over seeds, then the lower loss."""
  by_point = {}
  for m in record["members"]:
    by_point.setdefault(m["point"], []).append(m)
  assert all(len(v) == num_seeds for v in by_point.values())
  return sorted(by_point, key=lambda p: (
      -np.mean([m["validation_accuracy"] for m in by_point[p]]),
      np.mean([m["validation_loss"] for m in by_point[p]]), p))


def test_a_rung_keeps_the_best_points_and_trains_on_with_their_members_only(
    tmp_path, caplog):
  caplog.set_level(logging.INFO)
  config = _config(2, "1", num_seeds=2)
  halved = training.train_and_evaluate(config, tmp_path / "halved")
  log = caplog.text
  config.sweep_halving_epochs = ""  # The same members, never cut.
  full = training.train_and_evaluate(config, tmp_path / "full")

  first, second = outputs.read_metrics(tmp_path / "halved")
  assert [m["member"] for m in first["members"]] == list(range(8))
  kept = sorted(_ranked(first, num_seeds=2)[:2])
  rung, = halved.summary["halving"]["rungs"]
  assert rung["epoch"] == 1 and rung["kept"] == kept
  survivors = [p * 2 + s for p in kept for s in range(2)]
  assert [m["member"] for m in second["members"]] == survivors
  assert [m["point"] for m in second["members"]] == [p for p in kept for _ in "ab"]
  assert halved.summary["halving"]["surviving_members"] == survivors
  # Why each was dropped: its mean validation accuracy against the cut-off.
  for point in rung["points"]:
    assert point["kept"] == (point["point"] in kept)
    assert (point["validation_accuracy"] >= rung["cutoff_validation_accuracy"]
            if point["kept"] else
            point["validation_accuracy"] <= rung["cutoff_validation_accuracy"])
    # The log says the same, after the rung epoch's line.
    line = (f"point {point['point']} (learning_rate={point['learning_rate']:g}; "
            f"seeds [0, 1], members {point['members']}): validation accuracy "
            f"{100 * point['validation_accuracy']:.2f}%")
    assert line in log and log.index(line) > log.index("epoch 1/2")
    assert ("dropped" in log[log.index(line):].splitlines()[0]) != point["kept"]
  assert [len(r["ensembles"]) for r in (first, second)] == [4, 2]

  # The state went on with the survivors' own rows: parameters, optimizer
  # state (their learning rates), keys and data order. Each survivor's
  # epoch 2 is the un-cut run's same member's (its steps written out alone,
  # CPU's unrolled members: the same operations, to the bit).
  assert jax.tree.leaves(halved.state.params)[0].shape[0] == 4
  assert list(halved.state.opt_state.hyperparams["learning_rate"]) == [
      np.float32(float(LEARNING_RATES.split(",")[p])) for p in kept for _ in "ab"]
  full_second = outputs.read_metrics(tmp_path / "full")[1]
  for entry in second["members"]:
    want = full_second["members"][entry["member"]]
    for name in ("train_loss", "validation_loss", "test_loss"):
      assert entry[name] == pytest.approx(want[name], rel=1e-5), (entry, name)
  for got, want in zip(_leaves(halved.state.params), _leaves(full.state.params),
                       strict=True):
    np.testing.assert_allclose(got, want[np.asarray(survivors)], rtol=1e-5, atol=1e-6)

  # The summary's members are the survivors', the checkpoint loads them.
  assert [(m["member"], m["learning_rate"]) for m in halved.summary["members"]] == [
      (m["member"], m["learning_rate"]) for m in second["members"]]
  assert [p["point"] for p in halved.summary["points"]] == kept
  chosen = halved.summary.get("chosen_member")  # Where summary.py chooses one.
  if chosen:
    assert chosen["member"] == survivors[chosen["index"]]
  # By its original number (evaluate, predict and export's --member).
  trained = load_trained(tmp_path / "halved", member=survivors[3], checkpoint="last")
  assert trained.config.learning_rate == second["members"][3]["learning_rate"]
  np.testing.assert_array_equal(_leaves(trained.state.params)[0],
                                _leaves(halved.state.params)[0][3])
  dropped = min(set(range(8)) - set(survivors))
  with pytest.raises(UserError, match=f"--member={dropped}: .* holds members "
                     f"{re_escape(str(survivors))}"):
    load_trained(tmp_path / "halved", member=dropped, checkpoint="last")


def _command(workdir):
  return [sys.executable, "-m", "mnist_jax.main", f"--config={REPO}/configs/default.py",
          "--config.model=mlp", "--config.optimizer=adam", "--config.plots=False",
          "--config.learning_rate=0.001", "--config.num_epochs=4",
          "--config.sweep_halving_epochs=1,3", "--config.sweep_halving_eta=2",
          f"--config.sweep.learning_rate={LEARNING_RATES}",
          *(f"--config.{k}={v}" for k, v in TINY.items()), f"--workdir={workdir}"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, script_env):
  """Two rungs, 4 -> 2 -> 1 sweep points (one member: a single run's
  state), never interrupted: the reference."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  result = subprocess.run(_command(workdir), env=script_env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _learning_metrics(workdir):
  return [{k: v for k, v in r.items() if "seconds" not in k and "per_sec" not in k}
          for r in outputs.read_metrics(workdir)]


def _final_params(workdir):
  return checkpoint_params(workdir / "checkpoints" / "4" / "state")


def _rungs(workdir):
  """summary.json's rungs, without the compile's seconds."""
  rungs = json.loads((workdir / "summary.json").read_text())["halving"]["rungs"]
  return [{k: v for k, v in r.items() if k != "compile_seconds"} for r in rungs]


def test_down_to_one_member_and_a_stopped_run_resumes_with_the_same_survivors(
    straight, tmp_path):
  records = outputs.read_metrics(straight)
  assert [len(r["members"]) for r in records] == [4, 2, 2, 1]
  summary = json.loads((straight / "summary.json").read_text())
  last_point = summary["halving"]["surviving_points"]
  assert len(last_point) == 1 and records[-1]["members"][0]["point"] == last_point[0]
  assert records[-1]["members"][0]["test_accuracy"] == records[-1]["test_accuracy"]
  assert [r["epoch"] for r in summary["halving"]["rungs"]] == [1, 3]

  # Stopped after the rung's epoch 1 (its checkpoint holds the 4 members it
  # ranked, its record the decision: the resume cuts), then after epoch 2
  # (its checkpoint holds the 2 survivors), then run to the end.
  workdir = tmp_path / "run"
  for epoch in (1, 2):
    training.train_and_evaluate(_config(4, "1,3"), workdir,
                                callbacks=[lambda record, e=epoch: record["epoch"] == e])
    assert len(outputs.read_metrics(workdir)) == epoch
  resumed = training.train_and_evaluate(_config(4, "1,3"), workdir)
  assert resumed.summary["resumed_from_epoch"] == 2
  assert resumed.state.step.shape == ()  # One member: a single run's state.
  assert _learning_metrics(workdir) == _learning_metrics(straight)
  for a, b in zip(_final_params(workdir), _final_params(straight), strict=True):
    np.testing.assert_array_equal(a, b)  # Bitwise.
  assert _rungs(workdir) == _rungs(straight)


def test_a_run_killed_after_a_rung_resumes_with_its_survivors_bitwise(
    straight, tmp_path, script_env):
  reference = straight
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_command(workdir), env=script_env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  # The rung epoch's checkpoint: its state holds the 4 members it ranked, its
  # record the rung's decision, which the resume must apply.
  while not (workdir / "checkpoints" / "1").is_dir():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "no checkpoint within 300 s"
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert len(outputs.read_metrics(workdir)) < 4  # Really interrupted.
  resumed = subprocess.run(_command(workdir), env=script_env, cwd=REPO,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from the checkpoint of epoch" in resumed.stderr
  assert _learning_metrics(workdir) == _learning_metrics(reference)
  for a, b in zip(_final_params(workdir), _final_params(reference), strict=True):
    np.testing.assert_array_equal(a, b)  # Bitwise.
  assert _rungs(workdir) == _rungs(reference)
  assert "successive halving, rung at epoch 3" in resumed.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"validation_size": 0}, "set config.validation_size (e.g. 5000)"),
    ({"sweep_halving_epochs": "2,1"}, "the epochs must increase"),
    ({"sweep_halving_epochs": "1,1"}, "the epochs must increase"),
    ({"sweep_halving_epochs": "3"}, "each rung must come before the last epoch"),
    ({"sweep_halving_epochs": "5"}, "each rung must come before the last epoch"),
    ({"sweep_halving_epochs": "1.5"}, "rungs are whole epochs"),
    ({"sweep_halving_eta": 1}, "sweep_halving_eta=1 must be at least 2"),
    ({"sweep_halving_epochs": "1,2", "num_epochs": 4, "sweep_halving_eta": 4},
     "the rung at epoch 2 would find one sweep point left"),
    ({"sweep_halving_epochs": "1,2,3", "num_epochs": 4},
     "the rung at epoch 3 would find one sweep point left"),
    ({"learning_rates": ""}, "halves sweep points, and this run trains one"),
    ({"learning_rates": "0.01", "num_seeds": 3},
     "halves sweep points, and this run trains one"),
])
def test_a_halving_that_cannot_run_is_one_line_and_trains_nothing(
    tmp_path, overrides, message):
  overrides = dict(overrides)
  learning_rates = overrides.pop("learning_rates", LEARNING_RATES)
  config = _config(overrides.pop("num_epochs", 3),
                   overrides.pop("sweep_halving_epochs", "1"), **overrides)
  config.sweep.learning_rate = learning_rates
  with pytest.raises(UserError, match=re_escape(message)) as error:
    training.train_and_evaluate(config, tmp_path / "run")
  assert "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()


def re_escape(text):
  import re  # pylint: disable=g-import-not-at-top
  return re.escape(text)


def test_rungs_keep_ceil_points_over_eta():
  from mnist_jax import halving, members  # pylint: disable=g-import-not-at-top
  config = _config(9, "1,2,3", sweep_halving_eta=3)
  config.sweep.learning_rate = ",".join(str(0.001 * (k + 1)) for k in range(10))
  full = members.Members.from_config(config)
  rung = halving.Halving(config, full, {})
  record = {"epoch": 1, "members": [
      {"validation_accuracy": a, "validation_loss": l} for a, l in zip(
          [.5, .9, .1, .9, .3, .7, .7, .2, .9, .6],
          [1., .5, 1., .4, 1., .2, .1, 1., .4, 1.])]}
  rung.on_epoch_end(record, None)
  # ceil(10 / 3) = 4: the three at 0.9, then of the two at 0.7 the lower loss.
  assert rung.rungs[0]["kept"] == [1, 3, 6, 8]
  assert rung.rungs[0]["cutoff_validation_accuracy"] == 0.7
  assert [m["member"] for m in record["members"]] == list(range(10))


def test_the_summary_numbers_every_member_as_the_full_sweep_does():
  # After a rung the summary's per-member entries come by position among the
  # survivors; each gets its original number back, collapsed members too.
  # Catches a summary that names a flagged survivor by its position (member
  # 1 of those left) where the run's logs and metrics say member 3.
  from mnist_jax import halving, members  # pylint: disable=g-import-not-at-top
  config = _config(3, "1")
  cut = halving.Halving(config, members.Members.from_config(config), {})
  cut.points = [1, 3]  # Points 0 and 2 dropped; one seed a point.
  summary = {"members": [{}, {}], "points": [{}, {}],
             "chosen_member": {"index": 0}, "collapsed_members": [{"member": 1}]}
  cut.add_to(summary)
  assert [m["member"] for m in summary["members"]] == [1, 3]
  assert summary["chosen_member"]["member"] == 1
  assert summary["collapsed_members"] == [{"member": 3}]


def test_a_survivor_at_chance_is_named_by_its_sweep_number(tmp_path, caplog):
  # Learning rates this low leave every member of mnist160 at chance after 2
  # epochs, the survivors of the rung too. The end-of-run lines name them by
  # their original numbers, with their own values. Catches the log looking a
  # survivor's original number up among the survivors' positions (an
  # IndexError at the end of training, or another member's values).
  caplog.set_level(logging.INFO)
  config = _config(2, "1", lr_schedule="constant")
  config.sweep.learning_rate = "0.00001,0.00002,0.00003,0.00004"
  summary = training.train_and_evaluate(config, tmp_path / "run").summary
  survivors = summary["halving"]["surviving_members"]
  collapsed = summary["collapsed_members"]
  assert collapsed and {c["member"] for c in collapsed} <= set(survivors)
  for c in collapsed:
    rate = c["learning_rate"]
    assert rate == float(config.sweep.learning_rate.split(",")[c["member"]])
    assert f"member {c['member']} (seed=0, learning_rate={rate:g}) stayed at chance" in caplog.text
