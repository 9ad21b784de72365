"""The config: an `ml_collections.ConfigDict` of the fields in fields.py.

`defaults()` builds it from that table; `validate` is the one place that
checks a config before anything runs (every field's own check, then the few
rules that join fields); `override` is the one parser of `field=value`, for
`--config.<field>=`, `compare --override` and the Python API;
`with_defaults` fills the fields a config saved in an older checkpoint
lacks. Rooms below take the pieces built from a valid config, not the config.
"""

import difflib
import importlib.util
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
from absl import flags

from mnist_jax import checks, fields, plugins
from mnist_jax.errors import UserError


def defaults() -> ml_collections.ConfigDict:
  """Every field with its default; configs/ start from these."""
  config = ml_collections.ConfigDict()
  for field in fields.FIELDS:
    *groups, name = field.name.split(".")
    node = config
    for group in groups:
      if group not in node:
        node[group] = ml_collections.ConfigDict()
      node = node[group]
    # A typed placeholder, so that --config.<name>=VALUE can replace a None.
    node[name] = (field.default if field.placeholder is None else
                  ml_collections.config_dict.placeholder(field.placeholder))
  return config


# config.dtype: the computation dtype; parameters, optimizer state and loss
# stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.freeze: what stays fixed.
FREEZE = ("none", "features")

# config.require_backend: how to get each backend.
BACKEND_FIXES = {
    "": "", "gpu": "install JAX's CUDA build (pip install -e '.[cuda12]' or '.[cuda13]')",
    "tpu": "install JAX's TPU build on a TPU VM (pip install -e '.[tpu]')",
    "cpu": "hide the accelerators (JAX_PLATFORMS=cpu)"}


def flat(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """Every leaf field, nested ones as `sweep.learning_rate`."""
  result = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      result.update({f"{key}.{k}": v for k, v in flat(value).items()})
    else:
      result[key] = value
  return result


def with_defaults(config: ml_collections.ConfigDict | dict[str, Any]
                  ) -> ml_collections.ConfigDict:
  """`config` (a ConfigDict, or a checkpoint's saved dict) with the fields it
  lacks taken from `defaults()`: a run saved before a field existed behaved
  as its default does."""
  merged = defaults()
  with merged.unlocked():  # Fields that are not defaults' are kept too.
    merged.update(config)  # Recurses into `sweep`; ints become float fields.
  return merged


def differences(config: ml_collections.ConfigDict) -> str:
  """The fields that differ from `defaults()`, as `name=value, ...`."""
  default = flat(defaults())
  return ", ".join(f"{k}={v!r}" for k, v in flat(config).items()
                   if k not in default or default[k] != v)


def changed_fields(saved: dict[str, Any], config: ml_collections.ConfigDict
                   ) -> dict[str, tuple[Any, Any]]:
  """{field: (saved value, value now)} of the fields a resume changes, as
  saved (plain values through JSON: ConfigDicts never equal dicts)."""
  before, now = flat(saved), flat(json.loads(json.dumps(config.to_dict())))
  return {k: (v, now[k]) for k, v in before.items() if k in now and now[k] != v}


def refused_changes(saved: ml_collections.ConfigDict,
                    config: ml_collections.ConfigDict) -> list[str]:
  """`field=... there, ... now` for each field a resume may not change
  (fields.Field.resumable) whose value `config` changes."""
  before, now = flat(saved), flat(config)
  return [f"{f.name}={before[f.name]!r} there, {now[f.name]!r} now"
          for f in fields.FIELDS if not f.resumable and before[f.name] != now[f.name]]


def validate(config: ml_collections.ConfigDict):
  """Config errors that need no data: one message each, with the fix."""
  values = flat(config)
  for field in fields.FIELDS:
    field.check(field.name, values[field.name])
  _check_together(config)


def _check_together(config: ml_collections.ConfigDict):
  """The rules that join fields, once each field is valid by itself."""
  from mnist_jax import augment, members, registry  # pylint: disable=g-import-not-at-top
  if (config.freeze != "none"
      and registry.resolve("model", config.model).classifier is None):
    how = ("register it with models.register(..., classifier=<its last "
           "layer's attribute>)" if ":" not in config.model else
           "declare classifier = '<its last layer's attribute>' on the class")
    raise UserError(f"config.freeze={config.freeze}: model '{config.model}' "
                    f"names no classifier; {how}")
  names = augment.parse(config.augment, config.dataset)
  augment.parse_tta(config.tta, config.dataset)
  # Fields its optimizer cannot sweep, sweep_samples without a distribution
  # and the reverse, grids mixed with draws: what drawing the points refuses.
  members.sweep_points(config)
  if config.warmup_epochs and config.warmup_epochs >= config.num_epochs:
    raise UserError(f"config.warmup_epochs={config.warmup_epochs!r} must be less "
                    f"than num_epochs={config.num_epochs!r}: the schedule would "
                    f"never decay")
  if "translate" in names and config.image_size:
    validate_for_images(config, (config.image_size, config.image_size))
  if (config.num_processes is not None and config.process_id is not None
      and config.process_id >= config.num_processes):
    raise UserError(f"config.process_id={config.process_id} must be less than "
                    f"num_processes={config.num_processes}")


def validate_for_images(config: ml_collections.ConfigDict,
                        image_shape: tuple[int, ...]):
  """What needs the images' shape (H, W, ...), once the data is loaded."""
  side = min(image_shape[:2])
  if "translate" in config.augment and config.translate_pixels >= side:
    raise UserError(f"config.translate_pixels={config.translate_pixels} must be "
                    f"less than the images' side, {side} pixels: a shift that "
                    f"large leaves an empty image")


def from_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` would load it."""
  if not Path(path).is_file():
    raise UserError(f"config file {path} does not exist")
  plugins.add_search_dir(Path(path).parent)  # Its file.py:attr specs.
  spec = importlib.util.spec_from_file_location(f"compared_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path} does not define get_config()")
  return module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str],
                    flag: str = "--override="):
  """Each `field=value` of `overrides` (`sweep.learning_rate=0.01,0.1` too),
  its text parsed as the command line's `--config.<field>=` parses it.
  `flag` is how a message names an override: "--override=num_epochs"."""
  for item in overrides:
    name, sep, text = item.partition("=")
    if not sep:
      raise UserError(f"{flag}{item}: expected field=value")
    override(config, name, text, label=f"{flag}{name}", parse=True)


# How --config.<field>=TEXT parses TEXT, by the field's type: as
# ml_collections' config_flags does (its _FIELD_TYPE_TO_PARSER).
_PARSERS = {float: flags.FloatParser(), int: flags.IntegerParser(),
            bool: flags.BooleanParser(), str: flags.ArgumentParser()}
_TYPE_WORDS = {float: "a number", int: "an integer", bool: "True or False",
               str: "a string"}


def override(config: ml_collections.ConfigDict, name: str, value: Any,
             label: str | None = None, parse: bool = False):
  """Sets field `name` (dotted: `sweep.learning_rate`) of `config` to `value`.

  With `parse`, `value` is text, parsed by the field's type as the command
  line parses it. The value must have the field's type (an int for a float
  field too; None always: validate judges it); a dict sets the fields of a
  group (`sweep`). An unknown field is an error naming the nearest one, and
  `label` (default: `name`) what was written.
  """
  node, leaf = _find(config, name, label or name)
  kind = node.get_type(leaf)
  if isinstance(node[leaf], ml_collections.ConfigDict):
    if not isinstance(value, dict):
      raise UserError(f"config.{name} is a group of fields: set "
                      f"{name}.<field>=value, one each")
    for key, item in value.items():
      override(config, f"{name}.{key}", item, label and f"{label}.{key}")
    return
  if parse:
    try:
      value = _PARSERS.get(kind, _PARSERS[str]).parse(value)
    except ValueError:
      pass  # The type check below words it.
  if kind is float and checks.is_int(value):
    value = float(value)
  if value is not None and kind in _TYPE_WORDS and not (
      isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
    raise UserError(f"config.{name} must be {_TYPE_WORDS[kind]}, got {value!r}")
  with config.unlocked():
    node[leaf] = value


def _find(config: ml_collections.ConfigDict, name: str, label: str):
  """(the ConfigDict holding field `name`, its key), or a UserError naming
  the nearest field: `did you mean sweep.learning_rate?`."""
  node, path = config, name.split(".")
  for i, key in enumerate(path):
    known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = (f"did you mean {'.'.join([*path[:i], close[0], *path[i + 1:]])}?"
              if close else "list the fields with --show_config")
      raise UserError(f"{label}: no such field; {hint}")
    if i == len(path) - 1:
      return node, key
    node = node[key]
