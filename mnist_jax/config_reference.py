"""Every config field with its value, default and meaning: `--show_config`.

A field's meaning is written in one place, the "Config reference" table of
README.md, which users read anyway; tests/test_console.py checks that the
table names every field of `config.defaults()` and nothing else. The README
is read from the source checkout, or, in an installed package, from its
metadata (pyproject's `readme` makes it the package's long description).
"""

import importlib.metadata
import re
import textwrap
from pathlib import Path
from typing import Any

import ml_collections

from mnist_jax import config as config_lib

_SECTION = "## Config reference"


def _readme() -> str:
  path = Path(__file__).resolve().parents[1] / "README.md"
  if path.is_file():
    return path.read_text()
  try:
    return importlib.metadata.metadata("mnist_jax").get_payload() or ""
  except importlib.metadata.PackageNotFoundError:
    return ""


def meanings(readme: str | None = None) -> dict[str, str]:
  """field (`sweep.learning_rate` for nested ones) -> meaning, in table order.

  A row may name several fields (`momentum`, `nesterov`): each gets its text.
  """
  text = _readme() if readme is None else readme
  section = text.partition(_SECTION)[2].partition("\n## ")[0]
  result = {}
  for line in section.splitlines():
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0].startswith("`"):
      for field in re.findall(r"`([\w.]+)`", cells[0]):
        result[field] = cells[2]
  return result


def flat_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Every leaf field, nested ones as `sweep.learning_rate`."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update({f"{key}.{k}": v for k, v in flat_fields(value).items()})
    else:
      flat[key] = value
  return flat


def describe(config: ml_collections.ConfigDict) -> str:
  """`field = value  (default ...)` and the meaning beneath, for every field."""
  defaults = flat_fields(config_lib.defaults())
  meaning = meanings()
  values = flat_fields(config)
  # The reference's order (grouped by topic), then fields it does not know.
  names = [n for n in meaning if n in values] + [n for n in values if n not in meaning]
  lines = []
  for name in names:
    value = values[name]
    if name not in defaults:
      note = "not a field of the defaults"
    elif defaults[name] == value:
      note = "default"
    else:
      note = f"default {defaults[name]!r}"
    lines.append(f"{name} = {value!r}  ({note})")
    if meaning.get(name):
      lines.append(textwrap.fill(meaning[name].replace("`", ""), width=79,
                                 initial_indent="    ", subsequent_indent="    "))
  return "\n".join(lines)
