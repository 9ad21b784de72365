"""The checks of single config fields, for mnist_jax/fields.py's table.

A check is `check(name, value)`: it returns if `value` is valid for field
`name` and raises a one-line UserError (what is wrong, and the value) if not.
The factories below make the few kinds a field needs; a field's own rule
that fits none of them is a small function in fields.py.
"""

import math
from typing import Any, Callable

from mnist_jax.errors import UserError

Check = Callable[[str, Any], None]


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  """An int or a float, not a bool, NaN or infinity."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def rule(valid: Callable[[Any], bool], words: str) -> Check:
  """A check that `valid(value)`, which `words` say: "a positive integer"."""
  def check(name: str, value):
    if not valid(value):
      raise UserError(f"config.{name} must be {words}, got {value!r}")
  return check


positive_int = rule(lambda v: is_int(v) and v > 0, "a positive integer")
integer = rule(is_int, "an integer")
positive = rule(lambda v: is_number(v) and v > 0, "positive")
number = rule(is_number, "a number")
# Rates and decays (dropout, smoothing, momentum, moving averages): [0, 1).
rate = rule(lambda v: is_number(v) and 0 <= v < 1, "in [0, 1)")
fraction = rule(lambda v: is_number(v) and 0 < v < 1, "in (0, 1)")
boolean = rule(lambda v: isinstance(v, bool), "True or False")
text = rule(lambda v: isinstance(v, str), "a string")
non_empty_text = rule(lambda v: isinstance(v, str) and bool(v.strip()),
                      "a non-empty string")


def zero_or_positive_int(zero: str) -> Check:
  """0 (meaning `zero`, e.g. "off") or a positive integer."""
  return rule(lambda v: is_int(v) and v >= 0, f"0 ({zero}) or a positive integer")


def zero_or_positive(zero: str = "") -> Check:
  """0 (meaning `zero`, if given) or a positive number."""
  return rule(lambda v: is_number(v) and v >= 0,
              f"0{f' ({zero})' if zero else ''} or positive")


def optional(check: Check) -> Check:
  """None (the field's automatic choice), or what `check` accepts."""
  def optional_check(name: str, value):
    if value is not None:
      check(name, value)
  return optional_check


def one_of(choices: Callable[[], Any],
           message: str = "config.{name}={value!r}: choose one of {choices}") -> Check:
  """A name among `choices()` (called when checking: registries are read
  only then, so importing this costs nothing). `message` is formatted with
  name, value and choices (the names, comma-separated)."""
  def check(name: str, value):
    names = tuple(choices())
    if not (isinstance(value, str) and value in names):
      raise UserError(message.format(name=name, value=value,
                                     choices=", ".join(names)))
  return check


def comma_numbers(what: str, example: str, positive_nouns: str = "") -> Check:
  """Numbers separated by commas ("" for none), never negative: `what` names
  them in the message, `example` shows some. Where `positive_nouns` names
  them (e.g. "learning rates"), zero is refused too."""
  def check(name: str, value):
    try:
      values = [float(v) for v in value.split(",") if v.strip()]
    except (AttributeError, ValueError):
      values = None
    if values and not all(map(math.isfinite, values)):
      values = None
    if values is None or (value.strip() and not values):
      raise UserError(f"config.{name}={value!r}: expected {what} separated by "
                      f"commas, e.g. '{example}'")
    if positive_nouns and values and min(values) <= 0:
      raise UserError(f"config.{name}={value!r}: {positive_nouns} must be positive")
    if values and min(values) < 0:
      raise UserError(f"config.{name}={value!r}: values must not be negative")
  return check
