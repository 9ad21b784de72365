"""The epoch loop (loop.py) driven directly: what it yields, and a stop."""

import jax
import numpy as np
from conftest import small_dataset, toy_config

from mnist_jax import assembly, loop, runtime, sharding


def _run(num_seeds=1) -> assembly.Run:
  """A compiled run of 64 images, 4 calls of one step an epoch."""
  config = toy_config("unused", batch_size=16, num_seeds=num_seeds,
                      steps_per_call=1, eval_batch_size=8)
  dataset = small_dataset(64, 20, seed=1)
  run = assembly.assemble(config, dataset, runtime.Runtime(
      sharding.make_mesh(jax.devices()[:1]), "cpu", True))
  assert run.compiled is None  # Compiled only when asked.
  return run.compile()


def test_epochs_yields_each_finished_epoch_with_its_metrics():
  run = _run(num_seeds=2)
  plan = run.plan
  assert plan.calls == (1, 1, 1, 1) and plan.eval_batch_size == 8
  results = list(loop.epochs(run.compiled, plan, run.state, run.device_data,
                             run.data_key, 2, 3, show_progress=False))
  assert [r.epoch for r in results] == [2, 3]
  for r in results:
    assert set(r.values) == {"train_loss", "train_accuracy", "test_loss",
                             "test_accuracy"}
    assert r.values["test_accuracy"].shape == (2,)  # One per member.
    assert r.ensembles is not None and r.epoch_seconds > 0
  assert int(results[-1].state.step[0]) == 2 * plan.steps_per_epoch


def test_a_stop_request_mid_epoch_hands_back_the_state_of_the_last_finished_one():
  run = _run()
  plan, calls = run.plan, []

  def should_stop():  # Asked before each call: stop before the third of epoch 2.
    calls.append(None)
    return len(calls) == plan.steps_per_epoch + 3

  epochs = run.epochs(1, 5, should_stop=should_stop, show_progress=False)
  finished = next(epochs)
  assert isinstance(finished, loop.EpochResult) and finished.epoch == 1
  # Copied now: the next epoch consumes (donates) this state.
  params = [np.asarray(x) for x in jax.tree.leaves(finished.state.params)]
  stopped = next(epochs)
  assert isinstance(stopped, loop.StoppedMidEpoch) and stopped.last_epoch == 1
  assert next(epochs, None) is None
  # The state as epoch 1 left it, not two steps into epoch 2.
  assert int(stopped.state.step) == plan.steps_per_epoch
  for a, b in zip(jax.tree.leaves(stopped.state.params), params, strict=True):
    np.testing.assert_array_equal(a, b)
