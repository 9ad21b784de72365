"""What the benchmark scripts' flags share: values checked as they are parsed.

A bad value is refused when the flags are read, by argparse, as one line
naming the flag (`<script>: error: argument --repeats: ...`, exit status 2),
not as a traceback minutes into a measurement. `run_main` gives a
mnist_jax.errors.UserError raised later (a dataset that does not load, a
batch size the devices do not divide) the same form: one line, status 2,
and `run_child` makes a child process's failure such an error.

The `type=` functions of comma-separated lists return the text as given,
once checked: the scripts pass it on to child processes as it is.
"""

import argparse
import codecs
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, NoReturn

EXIT_STATUS = 2  # argparse's, for a usage error.


def _int(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
  value = _int(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
  return value


def nonnegative_int(text: str) -> int:
  value = _int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
  return value


def positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not value > 0:  # NaN too.
    raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
  return value


def items(text: str) -> list[str]:
  return [x for x in text.split(",") if x]


def positive_ints(text: str) -> str:
  """Comma-separated positive integers, at least one."""
  if not items(text):
    raise argparse.ArgumentTypeError("expected positive integers like 16,32")
  for item in items(text):
    positive_int(item)
  return text


def names(choices: Iterable[str] | Callable[[], Iterable[str]]) -> Callable[[str], str]:
  """A `type=` for comma-separated names, each one of `choices` (or of
  `choices()`, read when a value is checked)."""
  def check(text: str) -> str:
    known = tuple(choices() if callable(choices) else choices)
    unknown = [x for x in items(text) if x not in known]
    if unknown or not items(text):
      raise argparse.ArgumentTypeError(
          f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose "
          f"from {', '.join(known)}")
    return text
  return check


def config_values(field: str) -> Callable[[str], str]:
  """A `type=` for comma-separated values of config field `field`, each
  checked by mnist_jax's own config.validate (its message says why)."""
  def check(text: str) -> str:
    # pylint: disable=g-import-not-at-top
    from configs import default
    from mnist_jax import config as config_lib
    from mnist_jax.errors import UserError
    if not items(text):
      raise argparse.ArgumentTypeError(f"expected one or more {field} values")
    for value in items(text):
      config = default.get_config()
      try:
        config[field] = value
        config_lib.validate(config)
      except (UserError, TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
  return check


def existing_dir(text: str) -> str:
  if not Path(text).expanduser().is_dir():
    raise argparse.ArgumentTypeError(f"{text} is not a folder")
  return text


def existing_file(text: str) -> str:
  if not Path(text).expanduser().is_file():
    raise argparse.ArgumentTypeError(f"{text} does not exist")
  return text


def check_overrides(parser: argparse.ArgumentParser, config_paths: Iterable[str],
                    overrides: list[str], flag: str = "--override"):
  """Refuses `overrides` ("field=value") that a config in `config_paths`
  does not take, naming `flag`, before anything is measured."""
  # pylint: disable=g-import-not-at-top
  from mnist_jax import config as config_lib
  from mnist_jax.errors import UserError
  for path in config_paths:
    try:
      config = config_lib.from_file(str(path))
      config_lib.apply_overrides(config, list(overrides))
      config_lib.validate(config)
    except UserError as e:
      parser.error(f"argument {flag}: {e}")


def run_child(command: list[str], echo: bool = True, **kwargs):
  """Runs a child process, its stderr passed on as it comes (with `echo`);
  a failure raises a UserError that repeats the child's last line (its
  one-line error), so that it is this script's last line too."""
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
  tail = ""
  with subprocess.Popen(command, stderr=subprocess.PIPE, **kwargs) as child:
    for chunk in iter(lambda: child.stderr.read1(1 << 12), b""):
      text = decoder.decode(chunk)
      if echo:
        sys.stderr.write(text)
        sys.stderr.flush()
      tail = (tail + text)[-(1 << 12):]
  if child.returncode:
    lines = tail.strip().splitlines() or ["no error message"]
    raise UserError(f"{lines[-1].removeprefix('error: ')} (in a child process, "
                    f"exit {child.returncode}: {' '.join(command[1:3])} ...)")


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_STATUS)


def run_main(main: Callable[..., object], *args):
  """`main(*args)`, a UserError becoming one line (status 2)."""
  from mnist_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    return main(*args)
  except UserError as e:
    fail(str(e))
