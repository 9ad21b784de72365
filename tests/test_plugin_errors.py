"""A spec that names nothing usable, or a user's component that breaks its
protocol (plugins.py, protocols.py): through the command line, one `error:`
line naming the spec, what was wrong and how to fix it, exit status 2, no
traceback, and nothing written (no workdir).

The cases run in one child process that calls the command's entry point
(cli.run(main.main), as `python -m mnist_jax.main` does) once per case, each
with a config file of its own: one start of JAX for all of them.
`test_the_command_itself_exits_2_on_a_broken_plugin` runs one case as its
own process, exit status and all."""

import json
import os
import subprocess
import sys

import jax
import pytest
from conftest import REPO, run_module

from mnist_jax import state as state_lib

# The user's file of components, each broken in its own way.
BAD = '''
import jax.numpy as jnp
import optax
from flax import nnx

NUMBER = 3


class WrongOut(nnx.Module):
  def __init__(self, num_classes, *, rngs, input_shape=(28, 28, 1)):
    self.out = nnx.Linear(28 * 28, 7, rngs=rngs)

  def __call__(self, x):
    return self.out(x.reshape(x.shape[0], -1))


class Raises(nnx.Module):
  def __init__(self, num_classes, *, rngs, input_shape=(28, 28, 1)):
    raise ValueError("my net wants 3 channels")  # RAISES


def function_model(num_classes, *, rngs, input_shape=(28, 28, 1)):
  return jnp.zeros((2, num_classes))


class NoShape(nnx.Module):
  """A model for 28 x 28 images only: takes neither input_shape nor dropout."""

  def __init__(self, num_classes, *, rngs):
    self.out = nnx.Linear(28 * 28, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.out(x.reshape(x.shape[0], -1))


class NnxDropout(nnx.Module):
  """NNX's own idiom: its rngs hold no dropout stream here."""

  def __init__(self, num_classes, *, rngs, input_shape=(28, 28, 1)):
    self.out = nnx.Linear(28 * 28, num_classes, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)  # DROPOUT

  def __call__(self, x):
    return self.out(self.drop(x.reshape(x.shape[0], -1)))


def not_tx(learning_rate, config):
  return optax.sgd


def beta_tx(learning_rate, config, beta1):
  return optax.adam(learning_rate, b1=beta1)
beta_tx.hyperparameters = ("beta1",)  # No config field: nothing to give it.


def mean_loss(logits_BK, labels_BK):
  return -jnp.mean(labels_BK * logits_BK)


def error_count(logits_BK, labels_BK):
  return jnp.argmax(logits_BK, -1) != jnp.argmax(labels_BK, -1)


def loss_raises(logits_BK, labels_BK):
  raise RuntimeError("my loss is unfinished")  # LOSS


def crop(key, x_BHWC):
  return x_BHWC[:, 2:-2, 2:-2, :]


def schedule_raises(config, steps_per_epoch, lr):
  raise KeyError("warmup")  # SCHEDULE
'''


def _line(marker: str, source: str = BAD) -> int:
  return next(i for i, l in enumerate(source.splitlines(), 1) if l.endswith(f"# {marker}"))


# id: ({field: value}, [what the line says], exit status)
CASES = {
    "no_colon_no_builtin": ({"model": "resnet50"}, [
        "unknown model 'resnet50'; choose one of cnn, ", "bn_cnn",
        "or your own as module:attribute or path/to/file.py:attribute"]),
    "module_not_found": ({"optimizer": "no_such_module_q.sub:make"}, [
        "optimizer='no_such_module_q.sub:make': no module named 'no_such_module_q'",
        "add it to PYTHONPATH, or name a file: path/to/file.py:attribute"]),
    "file_not_found": ({"loss": "missing.py:loss"}, [
        "loss='missing.py:loss': no file missing.py in ",
        "relative to the working directory or the config's folder"]),
    "attribute_not_found": ({"augment": "bad.py:nope"}, [
        "'bad.py:nope': bad.py has no attribute 'nope'; it has ", "crop"]),
    "not_callable": ({"tta": "bad.py:NUMBER"}, [
        "'bad.py:NUMBER' is a", "not callable; expected a function: "
        "view(images_BHWC) -> images_BHWC"]),
    "model_output_not_B_by_K": ({"model": "bad.py:WrongOut"}, [
        "model='bad.py:WrongOut' maps float32 images [2, 28, 28, 1] to [2, 7]; "
        "expected float logits [B, num_classes] = [2, 10]"]),
    "model_not_a_module": ({"model": "bad.py:function_model"}, [
        "model='bad.py:function_model' returned an array, not an nnx.Module; "
        "expected a class or function: factory(num_classes"]),
    "optimizer_not_a_transformation": ({"optimizer": "bad.py:not_tx"}, [
        "optimizer='bad.py:not_tx' returned a function, not an "
        "optax.GradientTransformation; expected a function: make(learning_rate, config)"]),
    "optimizer_declares_an_unknown_hyperparameter": ({"optimizer": "bad.py:beta_tx"}, [
        "optimizer='bad.py:beta_tx' declares hyperparameters 'beta1'; it may declare "
        "weight_decay and momentum (given as keywords, sweepable)"]),
    "loss_not_per_example": ({"loss": "bad.py:mean_loss"}, [
        "loss='bad.py:mean_loss' maps logits and labels [13, 10] to []; "
        "expected one loss per example, [13]"]),
    "loss_without_gradient": ({"loss": "bad.py:error_count"}, [
        "loss='bad.py:error_count' gives bool losses, which have no gradient; "
        "expected float losses"]),
    "augmentation_changes_shape": ({"augment": "translate, bad.py:crop"}, [
        "'bad.py:crop' maps float images [2, 28, 28, 1] to [2, 24, 24, 1]; "
        "expected float images of the same shape"]),
    "factory_raises": ({"model": "bad.py:Raises"}, [
        "model='bad.py:Raises' raised ValueError: my net wants 3 channels "
        f"(bad.py, line {_line('RAISES')}) when built"]),
    "dropout_from_the_factorys_rngs": ({"model": "bad.py:NnxDropout"}, [
        "model='bad.py:NnxDropout' raised KeyError: ",
        f"(bad.py, line {_line('DROPOUT')}) when built; a model's rngs hold a 'params' "
        "stream only: for dropout, make nnx.Dropout(rate) without rngs and take "
        "dropout_key=None in __call__"]),
    "loss_raises": ({"loss": "bad.py:loss_raises"}, [
        "loss='bad.py:loss_raises' raised RuntimeError: my loss is unfinished "
        f"(bad.py, line {_line('LOSS')})"]),
    "schedule_raises": ({"lr_schedule": "bad.py:schedule_raises"}, [
        "lr_schedule='bad.py:schedule_raises' raised KeyError: 'warmup' "
        f"(bad.py, line {_line('SCHEDULE')}) when made"]),
    "import_raises": ({"model": "broken.py:Net"}, [
        "model='broken.py:Net': importing broken.py raised ModuleNotFoundError: "
        "No module named 'my_missing_dependency' (broken.py, line 2)"]),
}
# A model that takes no dropout, given one: the config's mistake (exit 1).
NO_DROPOUT = ({"model": "bad.py:NoShape", "dropout": 0.3}, [
    "model 'bad.py:NoShape' has no dropout to set; drop config.dropout or take "
    "it as a keyword argument of the factory"])

CONFIG = '''
from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist160"
  config.batch_size = 16
  config.num_epochs = 1
{fields}  return config
'''

# Runs the command once per case, in this one process.
DRIVER = '''
import io, json, sys, traceback
from mnist_jax import cli, main
outcomes = {}
for name, argv in json.loads(sys.argv[1]).items():
  err, real = io.StringIO(), sys.stderr
  sys.stderr = err
  try:
    sys.argv = ["mnist_jax.main", *argv]
    cli.run(main.main)
    status = 0
  except SystemExit as e:
    status = e.code
  except BaseException:  # A bug: its traceback, for the test to show.
    traceback.print_exc(file=err)
    status = "raised"
  finally:
    sys.stderr = real
  outcomes[name] = {"status": status, "stderr": err.getvalue()}
print(json.dumps(outcomes))
'''


def _write_case(folder, name, fields):
  path = folder / f"{name}.py"
  path.write_text(CONFIG.format(fields="".join(
      f"  config.{field} = {value!r}\n" for field, value in fields.items())))
  return path


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
  """The user's folder: bad.py, broken.py (its import fails) and a config
  file for each case, which name them relative to it."""
  folder = tmp_path_factory.mktemp("user")
  (folder / "bad.py").write_text(BAD)
  (folder / "broken.py").write_text('"""Needs a package not installed."""\n'
                                    'import my_missing_dependency\n')
  return folder


@pytest.fixture(scope="module")
def outcomes(user_folder, tmp_path_factory):
  """{case: (exit status, stderr, workdir)}: each case's command, run in
  another folder than the configs' (`cwd`), so that file specs are found
  beside their config."""
  cwd = tmp_path_factory.mktemp("cwd")
  cases = {**CASES, "no_dropout": NO_DROPOUT}
  argvs = {name: [f"--config={_write_case(user_folder, name, fields)}",
                  f"--workdir={cwd / name}"] for name, (fields, _) in cases.items()}
  result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return {name: (o["status"], o["stderr"], cwd / name)
          for name, o in json.loads(result.stdout.splitlines()[-1]).items()}


def _assert_one_line(status, stderr, workdir, expected, exit_status):
  assert "Traceback" not in stderr, stderr
  assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
  for words in expected:
    assert words in stderr, stderr
  assert status == exit_status, stderr
  assert not workdir.exists()  # Nothing written.


@pytest.mark.parametrize("case", CASES)
def test_a_bad_spec_is_one_line_with_exit_status_2(outcomes, case):
  _assert_one_line(*outcomes[case], CASES[case][1], exit_status=2)


def test_a_field_the_model_does_not_take_is_the_configs_mistake(outcomes, user_folder):
  _assert_one_line(*outcomes["no_dropout"], NO_DROPOUT[1], exit_status=1)
  # Without the dropout the same class builds: a class's own __init__ says
  # what it takes (it takes no input_shape: it is given none).
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model = f"{user_folder}/bad.py:NoShape"
  state = state_lib.build(config, 10, 5).state
  assert (28 * 28, 10) in [x.shape for x in jax.tree.leaves(state.params)]


def test_the_command_itself_exits_2_on_a_broken_plugin(user_folder, tmp_path):
  fields, expected = CASES["factory_raises"]
  result = run_module("mnist_jax.main",
                      f"--config={_write_case(user_folder, 'own_process', fields)}",
                      f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
  _assert_one_line(result.returncode, result.stderr, tmp_path / "run", expected,
                   exit_status=2)
