"""Components that describe themselves: one registry per kind, name -> entry.

Each built-in registers itself where it is defined (`models.register`,
`optim.register`, ...: thin wrappers of `register` that name the attributes
of their kind), with what the rest of the code needs to know about it: a
model's classifier layer, an optimizer's hyperparameters. Adding a built-in
is one decorator in one place; no table elsewhere names it.

`resolve(kind, spec)` is the one lookup, for the config's checks and for the
code that builds. A spec is a built-in's name, or a user's own component as
`module:attr` or `file.py:attr` (plugins.py), through the same function.

Importing this imports none of the components: a kind's module registers
its built-ins when first asked for them (`HOMES`).
"""

import dataclasses
import importlib
from typing import Any

from mnist_jax.errors import SpecError

# kind -> the package module whose import registers its built-ins.
HOMES = {"model": "models", "optimizer": "optim", "schedule": "optim",
         "augmentation": "augment", "tta": "augment", "loss": "steps"}

_ENTRIES: dict[str, dict[str, "Entry"]] = {kind: {} for kind in HOMES}


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered component: `target` (the class or function) and the
  attributes its kind declares, read as `entry.classifier` and so on."""
  kind: str
  name: str
  target: Any
  attributes: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __getattr__(self, attribute: str):
    # Only for names that are not fields; vars() avoids recursing in copies.
    attributes = vars(self).get("attributes", {})
    if attribute in attributes:
      return attributes[attribute]
    raise AttributeError(f"{vars(self).get('kind')} entry has no {attribute!r}")


def register(kind: str, name: str, **attributes):
  """A decorator: registers its target as `kind` `name` with `attributes`."""
  def add(target):
    known = _ENTRIES[kind].get(name)
    # The same definition again (a module reloaded) replaces itself; another
    # one under a taken name is a mistake.
    if known is not None and _qualified(known.target) != _qualified(target):
      raise ValueError(f"{kind} '{name}' is already registered "
                       f"({_qualified(known.target)})")
    _ENTRIES[kind][name] = Entry(kind, name, target, dict(attributes))
    return target
  return add


def _qualified(target) -> str:
  return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"


def entries(kind: str) -> dict[str, Entry]:
  """The live name -> Entry of `kind`, its built-ins registered."""
  importlib.import_module(f"mnist_jax.{HOMES[kind]}")
  return _ENTRIES[kind]


def names(kind: str) -> tuple[str, ...]:
  """The built-in names of `kind`, in the order they were registered."""
  return tuple(entries(kind))


def resolve(kind: str, spec, label: str | None = None) -> Entry:
  """The entry of `kind` that `spec` names; a one-line UserError otherwise,
  naming it `label` (a config field: "lr_schedule") or else `kind`."""
  known = entries(kind)
  if isinstance(spec, str) and spec in known:
    return known[spec]
  if isinstance(spec, str) and ":" in spec:
    return _import(kind, spec, label or kind)
  raise SpecError(f"unknown {label or kind} '{spec}'; choose one of "
                  f"{', '.join(known)}, or your own as module:attribute or "
                  f"path/to/file.py:attribute")


def _import(kind: str, spec: str, label: str) -> Entry:
  """A user's component (`module:attr`, `file.py:attr`: plugins.py), as an
  Entry with the attributes a built-in of its kind declares."""
  from mnist_jax import plugins  # pylint: disable=g-import-not-at-top
  target, attributes = plugins.load(kind, spec, label)
  return Entry(kind, spec, target, attributes)


def is_builtin(entry: Entry) -> bool:
  return entry.name in _ENTRIES[entry.kind]
