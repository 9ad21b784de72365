"""A run built once (assembly.py): what `assemble` holds, and that the
callers of the epoch loop wire their runs through it."""

import jax
import pytest
from conftest import REPO, small_dataset, toy_config

from mnist_jax import assembly, runtime, sharding
from mnist_jax.errors import UserError

# The wiring `assemble` does once; its callers do none of it themselves.
WIRING = ("state_lib.build(", "Plan.make(", "data_keys(", "compile_steps(")
CALLERS = ("mnist_jax/training.py", "benchmarks/run.py", "benchmarks/pytorch_cpu.py",
           "benchmarks/strategies.py", "benchmarks/emnist_scale.py",
           "tests/test_loop.py")


@pytest.mark.parametrize("caller", CALLERS)
def test_the_callers_of_the_loop_wire_their_runs_through_assemble(caller):
  text = (REPO / caller).read_text()
  assert "assembly." in text
  assert [w for w in WIRING if w in text] == []


def test_assemble_holds_the_validation_split_and_compiles_nothing_unasked():
  config = toy_config("unused", batch_size=16, validation_size=16)
  on = runtime.Runtime(sharding.make_mesh(jax.devices()[:1]), "cpu", True)
  run = assembly.assemble(config, small_dataset(96, 20, seed=1), on, place=False)
  assert len(run.dataset.val_labels) == 16 and len(run.dataset.train_labels) == 80
  assert run.plan.steps_per_epoch == 5 and run.device_data is None
  with pytest.raises(UserError, match="placed"):
    run.compile()
  placed = run.placed(drop_host_images=True)
  assert placed.device_data.val_labels is not None and placed.compiled is None
  assert placed.dataset.train_images is None and run.dataset.train_images is not None
  with pytest.raises(UserError, match="compile"):
    next(placed.epochs(1, 1))
