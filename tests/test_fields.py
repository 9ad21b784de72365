"""The field table (mnist_jax/fields.py): every field checked, with a one-line
error; one override parser for --config.<field>=, compare --override and the
Python API; what a resume may change."""

import pytest
from absl import flags
from conftest import REPO, run_module, toy_config
from ml_collections import config_flags

from mnist_jax import config as config_lib
from mnist_jax import fields, members, training
from mnist_jax.errors import UserError


# Fields that nothing checked before the table: each value trained (or failed
# deep inside a run) instead of stopping with this line.
@pytest.mark.parametrize("overrides, message", [
    ({"ema_decay": 1.5}, r"config.ema_decay must be in \[0, 1\), got 1.5"),
    ({"ema_decay": -0.1}, r"config.ema_decay must be in \[0, 1\)"),
    ({"translate_pixels": -1}, "config.translate_pixels must be 0 .no shift. or a positive integer"),
    ({"augment": "translate", "image_size": 16, "translate_pixels": 16},
     "config.translate_pixels=16 must be less than the images' side, 16 pixels"),
    ({"weight_decay": -1e-4}, r"config.weight_decay must be 0 \(off\) or positive, got -0.0001"),
    ({"warmup_epochs": -1.0}, "config.warmup_epochs must be 0 or positive"),
    ({"warmup_epochs": 3.0}, "config.warmup_epochs=3.0 must be less than num_epochs=3"),
    ({"lr_step_epochs": "5;8"}, "config.lr_step_epochs='5;8': expected epochs separated by commas"),
    ({"lr_step_epochs": "5,-1"}, "config.lr_step_epochs='5,-1': values must not be negative"),
    ({"lr_step_factor": 0.0}, "config.lr_step_factor must be positive"),
    ({"momentum": 1.0}, r"config.momentum must be in \[0, 1\), got 1.0"),
    ({"nesterov": None}, "config.nesterov must be True or False, got None"),
    ({"plots": None}, "config.plots must be True or False"),
    ({"pixel_mean": None}, "config.pixel_mean must be a number, got None"),
    ({"seed": None}, "config.seed must be an integer, got None"),
    ({"validation_seed": -1}, "config.validation_seed must be 0 .* or a positive integer"),
    ({"depth": -6}, "config.depth must be 0 .* or a positive integer, got -6"),
    ({"dataset": ""}, "config.dataset must be a non-empty string, got ''"),
    ({"init_from": None}, "config.init_from must be a string, got None"),
    ({"data_source": "hdf5"}, "unknown data_source 'hdf5'; choose one of idx, tfds"),
    ({"heartbeat_timeout_seconds": 0}, "config.heartbeat_timeout_seconds must be a positive integer"),
    ({"coordinator_address": ""}, "config.coordinator_address must be a non-empty string"),
    ({"num_processes": 0}, "config.num_processes must be a positive integer, got 0"),
    ({"process_id": -1}, "config.process_id must be 0 .* or a positive integer, got -1"),
    ({"num_processes": 2, "process_id": 2}, "config.process_id=2 must be less than num_processes=2"),
])
def test_a_bad_value_of_any_field_is_one_line_before_anything_runs(overrides, message):
  config = toy_config("unused", **overrides)
  with pytest.raises(UserError, match=message) as error:
    config_lib.validate(config)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("field, text, message", [
    ("learning_rate", "0.1,fast", "expected numbers separated by commas"),
    ("learning_rate", "0.1,0", "learning rates must be positive"),
    ("momentum", "0.9,nan", "expected numbers separated by commas"),
    ("weight_decay", ",", "expected numbers separated by commas"),
])
def test_a_bad_sweep_is_refused_by_its_fields_check(field, text, message):
  config = toy_config("unused", optimizer="sgd")
  config.sweep[field] = text
  with pytest.raises(UserError, match=f"config.sweep.{field}=.*{message}"):
    config_lib.validate(config)


def test_translate_pixels_as_large_as_the_loaded_images_is_refused(synthetic_data,
                                                                   tmp_path):
  # The toy images are 28x28, which no field says: checked once they load.
  config = toy_config(synthetic_data, augment="translate", translate_pixels=28)
  with pytest.raises(UserError, match="translate_pixels=28 must be less than the "
                     "images' side, 28 pixels"):
    training.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_the_table_declares_the_defaults_once_and_its_lookups_resolve():
  assert sorted(config_lib.flat(config_lib.defaults())) == sorted(fields.BY_NAME)
  assert len(fields.BY_NAME) == len(fields.FIELDS)
  config_lib.validate(config_lib.defaults())
  for field in fields.FIELDS:  # A default that fails its own check.
    field.check(field.name, field.default)
  assert all(fields.choices(name) for name in fields._NAMES)  # pylint: disable=protected-access
  swept = {f.name for f in fields.FIELDS if f.sweepable}
  assert swept == set(members.SWEEPABLE)
  assert {f"sweep.{n}" for n in swept} == {f.name for f in fields.FIELDS
                                          if f.name.startswith("sweep.")}
  assert all(not f.resumable for f in fields.FIELDS if f.structural)


def load_like_the_cli(*overrides):
  """The config `mnist-jax train --config=configs/mnist160.py OVERRIDES` trains."""
  argv = ["mnist-jax train", f"--config={REPO}/configs/mnist160.py",
          *[f"--config.{o}" for o in overrides]]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


OVERRIDES = ["num_epochs=3", "learning_rate=1", "width=2.5e-1", "plots=false",
             "nesterov=True", "data_dir=/data", "num_processes=2", "augment=flip,erase",
             "tta=", "sweep.learning_rate=0.01,0.1", "sweep.momentum=0.9"]


def test_the_override_parser_reads_values_as_the_command_line_does():
  config = config_lib.from_file(str(REPO / "configs" / "mnist160.py"))
  config_lib.apply_overrides(config, OVERRIDES)
  assert config.to_dict() == load_like_the_cli(*OVERRIDES).to_dict()
  assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
  assert config.sweep.learning_rate == "0.01,0.1" and config.plots is False


@pytest.mark.parametrize("override, message", [
    ("num_epoch=3", "--override=num_epoch: no such field; did you mean num_epochs?"),
    ("sweep.learning_rat=0.1",
     "--override=sweep.learning_rat: no such field; did you mean sweep.learning_rate?"),
    ("batch_size=abc", "config.batch_size must be an integer, got 'abc'"),
    ("batch_size=1.5", "config.batch_size must be an integer, got '1.5'"),
    ("plots=maybe", "config.plots must be True or False, got 'maybe'"),
    ("learning_rate=fast", "config.learning_rate must be a number, got 'fast'"),
    ("sweep=0.1", "config.sweep is a group of fields: set sweep.<field>=value, one each"),
])
def test_a_bad_override_is_the_same_line_from_compare_and_the_command_line(
    tmp_path, override, message):
  config = config_lib.from_file(str(REPO / "configs" / "mnist160.py"))
  with pytest.raises(UserError) as error:
    config_lib.apply_overrides(config, [override])
  assert str(error.value) == message
  result = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                      f"--config.{override}", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1
  assert result.stderr == f"error: {message.replace('--override=', '--config.')}\n"


def test_python_values_keep_the_fields_types():
  config = toy_config("unused")
  config_lib.override(config, "learning_rate", 1)  # An int for a float field.
  config_lib.override(config, "sweep", {"learning_rate": "0.1,0.2"})
  config_lib.override(config, "data_dir", None)
  assert config.learning_rate == 1.0 and config.sweep.learning_rate == "0.1,0.2"
  for name, value in (("num_epochs", "3"), ("num_epochs", 2.0), ("plots", 1),
                      ("batch_size", True), ("dataset", 3)):
    with pytest.raises(UserError, match=f"config.{name} must be"):
      config_lib.override(config, name, value)


def test_a_resume_refuses_another_seed_and_reports_changed_fields(
    synthetic_data, tmp_path, caplog):
  workdir = tmp_path / "run"
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), workdir)
  before = (workdir / "metrics.jsonl").read_text()
  with pytest.raises(UserError, match="seed=0 there, 1 now; use another --workdir"):
    training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2, seed=1), workdir)
  with pytest.raises(UserError, match="validation_size=0 there, 64 now"):
    training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2,
                                        validation_size=64), workdir)
  assert (workdir / "metrics.jsonl").read_text() == before
  config = toy_config(synthetic_data, num_epochs=2, tta="translate")
  caplog.set_level("INFO")
  training.train_and_evaluate(config, workdir)
  assert any(m.endswith("; changed fields: {'num_epochs': (1, 2), "
                        "'tta': ('', 'translate')}") for m in caplog.messages)
