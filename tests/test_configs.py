"""Every config file in configs/ loads as the command line loads it, and is valid.

The list is whatever configs/ holds when the test runs, so a config added
(or changed) later is checked without editing this file.
"""

import jax
import numpy as np
import pytest
from absl import flags
from conftest import REPO
from ml_collections import config_flags

from mnist_jax import config as config_lib
from mnist_jax import data, optim, plugins, sources
from mnist_jax import state as state_lib

CONFIG_FILES = sorted(p for p in (REPO / "configs").glob("*.py")
                      if p.name != "__init__.py")


def load_like_the_cli(path):
  """The config `mnist-jax train --config=<path>` trains (mnist_jax/main.py's flag)."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                  lock_config=True)
  flag_values(["mnist-jax train", f"--config={path}"])
  plugins.add_search_dir(path.parent)  # As main does: its file.py:attr specs.
  return flag_values.config


def test_the_configs_named_in_the_readme_are_all_found():
  names = {p.stem for p in CONFIG_FILES}
  assert {"default", "mnist", "mnist160", "fashion", "mnist_best", "fashion_best",
          "mnist_speedrun", "fashion_speedrun"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_loads_validates_and_builds_its_model_and_optimizer(path):
  config = load_like_the_cli(path)
  from configs import default  # pylint: disable=g-import-not-at-top
  # Every field is one of default.py's: a misspelled field would be ignored.
  assert set(config.to_dict()) <= set(default.get_config().to_dict()), (
      set(config.to_dict()) - set(default.get_config().to_dict()))
  # validate also refuses a model, optimizer or schedule not registered (an
  # assertion of that after it could not fail).
  config_lib.validate(config)
  assert config.dataset in sources.KNOWN.split(", ")  # Every built-in name.
  # What validate cannot see without data: the model and the optimizer build
  # (initialisers, optimizer state), with MNIST's 60,000 images and 10
  # classes. The initial state is one compiled program (state._initializer),
  # which jax.eval_shape cannot trace through: built, about a second each.
  steps_per_epoch = 60_000 // config.batch_size
  state = state_lib.build(config, 10, steps_per_epoch).state
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {np.dtype("float32")}
  lr = optim.schedule(config, steps_per_epoch)
  total_steps = config.num_epochs * steps_per_epoch
  lrs = [float(lr(s)) for s in range(0, total_steps, total_steps // 8)]
  assert all(0 <= x < float("inf") for x in lrs) and max(lrs) > 0


def test_a_config_saved_before_newer_fields_gets_their_defaults():
  # What a checkpoint of an older run holds: fewer fields, ints for floats.
  saved = {"model": "cnn", "seed": 3, "width": 1, "sweep": {"learning_rate": "0.1"},
           "retired_field": 7}
  config = config_lib.with_defaults(saved)
  assert config.seed == 3 and config.width == 1.0 and isinstance(config.width, float)
  assert config.sweep.learning_rate == "0.1" and config.sweep.momentum == ""
  defaults = config_lib.defaults()
  for field in ("adam_b1", "pixel_std", "onecycle_div_factor", "init", "num_seeds"):
    assert config[field] == defaults[field]
  assert config.retired_field == 7  # Kept: the checkpoint's record of the run.


# The configs whose files define their own component (a model, an optimizer):
# each trains a few steps through the real path, `python -m mnist_jax.main
# --config=<file>`, from another folder, so that the component is found in
# the config's own folder as a user's command finds it.
# The optimizer's weight decay is swept (two members): its declared
# hyperparameter arrives as an array, as in any sweep.
OWN_COMPONENT_CONFIGS = [
    ("own_model", "model", "own_model.py:Mixer", []),
    ("own_optimizer", "optimizer", "own_optimizer.py:cautious_adamw",
     ["--config.sweep.weight_decay=0.0,0.05"])]


@pytest.mark.parametrize("name, field, spec, extra", OWN_COMPONENT_CONFIGS,
                         ids=[c[0] for c in OWN_COMPONENT_CONFIGS])
def test_a_config_with_its_own_component_trains_on_mnist160(name, field, spec, extra,
                                                             tmp_path, script_env):
  import json  # pylint: disable=g-import-not-at-top
  import math  # pylint: disable=g-import-not-at-top
  from conftest import run_module  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  done = run_module("mnist_jax.main", f"--config={REPO / 'configs' / f'{name}.py'}",
                    "--config.dataset=mnist160", "--config.batch_size=16",
                    "--config.num_epochs=2", "--config.steps_per_epoch=2",
                    "--config.plots=False", *extra, f"--workdir={workdir}",
                    env=script_env, cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["config"][field] == spec and summary["num_epochs"] == 2
  assert 0.0 <= summary["final_test_accuracy"] <= 1.0
  assert math.isfinite(summary["final_test_loss"])
  if extra:
    assert [m["weight_decay"] for m in summary["members"]] == [0.0, 0.05]


def test_cautious_masks_the_updates_that_disagree_with_the_gradient_and_rescales():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  spec = f"{REPO / 'configs' / 'own_optimizer.py'}:cautious"
  cautious = plugins.load("optimizer", spec, "optimizer")[0]
  grads = {"w": jnp.array([1.0, 1.0, -1.0, 2.0]), "b": jnp.array([1.0, -1.0])}
  # An inner update that disagrees with the gradient at w[1] and all of b.
  flip = {"w": jnp.array([1.0, -1.0, 1.0, 1.0]), "b": jnp.array([-1.0, -1.0])}
  inner = optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda g, s, p=None: (jax.tree.map(lambda x, f: x * f, g, flip), s))
  tx = cautious(inner)
  updates, _ = tx.update(grads, tx.init(grads))
  # w keeps 3 of 4 entries, rescaled by 4/3; b keeps none: no update at all.
  np.testing.assert_allclose(updates["w"], [4 / 3, 0.0, -4 / 3, 8 / 3], rtol=1e-6)
  np.testing.assert_allclose(updates["b"], [0.0, 0.0])
