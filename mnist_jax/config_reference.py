"""Every config field with its value, default and meaning: `--show_config`,
and docs/config.md, the field reference, written from fields.py's table.

    python -m mnist_jax.config_reference   # rewrites docs/config.md

tests/test_console.py fails when docs/config.md differs from what this writes.
"""

import textwrap
from pathlib import Path

import ml_collections

from mnist_jax import config as config_lib
from mnist_jax import fields, plugins

PAGE = Path(__file__).resolve().parents[1] / "docs" / "config.md"

_INTRO = """\
# Config reference

<!-- Written by `python -m mnist_jax.config_reference` from the table in
mnist_jax/fields.py, where each field is declared once; edit it there. -->

Config files are Python files with `get_config()` (ml_collections) that start
from `mnist_jax.config.defaults()` (`configs/default.py`) and change what they
need. Any field can be overridden: `--config.num_epochs=3
--config.sweep.learning_rate=0.01,0.1` on the command line, `--override=` in
`mnist-jax compare`, keywords in `mnist_jax.train(...)`; each value is parsed
by the field's type. `mnist-jax train --config=FILE --show_config` prints
every field's value with that config, its default and its meaning. A run
checks every field before it loads any data, with a one-line error that says
what is wrong.
"""


def meaning(field: fields.Field) -> str:
  """Its doc, then what its flags mean for a run, in words."""
  notes = []
  if field.sweepable:
    notes.append(f"`sweep.{field.name}` trains several values at once.")
  if field.structural:
    notes.append("It shapes the training state: a resume refuses another value.")
  elif not field.resumable:
    notes.append("A resume refuses another value.")
  return ". ".join([field.doc, " ".join(notes)] if notes else [field.doc])


def page() -> str:
  """docs/config.md: the intro, then one row per field, in the table's order."""
  rows = ["| field | default | meaning |", "|---|---|---|"]
  for field in fields.FIELDS:
    rows.append(f"| `{field.name}` | `{field.default!r}` | {meaning(field)} |")
  return _INTRO + "\n" + "\n".join(rows) + "\n"


def describe(config: ml_collections.ConfigDict) -> str:
  """`field = value  (default ...)` and the meaning beneath, for every field."""
  defaults = config_lib.flat(config_lib.defaults())
  values = config_lib.flat(config)
  # The table's order (grouped by topic), then fields it does not know.
  names = ([f.name for f in fields.FIELDS if f.name in values]
           + [n for n in values if n not in fields.BY_NAME])
  # The user's own components, by field: where each is found from here.
  own = {}
  for key, entry in plugins.used(config).items():
    where = (entry.get("path") or "not found from here" if
             plugins.file_path(entry["spec"]) or ".py:" in entry["spec"]
             else "a module on the Python path")
    own.setdefault(key.partition("[")[0], []).append(f"{entry['spec']}: {where}")
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
    lines.extend(f"    your own {found}" for found in own.get(name, ()))
    if name in fields.BY_NAME:
      text = meaning(fields.BY_NAME[name]).replace("`", "")
      lines.append(textwrap.fill(text, width=79,
                                 initial_indent="    ", subsequent_indent="    "))
  return "\n".join(lines)


if __name__ == "__main__":
  PAGE.parent.mkdir(exist_ok=True)
  PAGE.write_text(page())
  print(f"wrote {PAGE}")
