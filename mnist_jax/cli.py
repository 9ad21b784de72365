"""Shared command-line plumbing: user mistakes become one line, bugs keep tracebacks."""

import logging as std_logging
import os
import signal
import sys
import traceback
from typing import Callable, NoReturn

from absl import app, flags, logging

from mnist_jax.errors import Interrupted, UserError


def workdir_flag() -> flags.FlagHolder:
  """The `--workdir` flag that every mnist_jax tool takes (default None).

  Defined once however many tools are imported into one process (a test
  session imports several); each tool says what None means for it.
  """
  if "workdir" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["workdir"])
  return flags.DEFINE_string(
      "workdir", None, "The run's folder (train: default runs/<config file "
      "stem>; compare: default runs/compare; the others: required).")


def member_flag() -> flags.FlagHolder:
  """The `--member` flag of the tools that load a trained run (defined once)."""
  if "member" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["member"])
  return flags.DEFINE_integer(
      "member", None, "Which model of a run of several (config.num_seeds, "
      "config.sweep) to use, 0-based as in its summary.json; default 0.")


def fail(message: str) -> NoReturn:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _config_flag_error(error: Exception, argv: list[str]) -> str | None:
  """A one-line account of a mistake in --config or its overrides, else None."""
  config_file = next((a.split("=", 1)[1] for a in argv
                      if a.startswith("--config=")), None)
  if config_file is None:
    return None
  path = config_file.split(":", 1)[0]
  if isinstance(error, OSError) and not os.path.isfile(path):
    return f"config file {path} does not exist; pass --config=configs/<name>.py"
  if isinstance(error, AttributeError) and "get_config" in str(error):
    return f"config file {path} does not define get_config()"
  if isinstance(error, AttributeError):  # An override names no config field.
    field = str(error).strip("\"'")
    override = next((a.split("=", 1)[0] for a in argv
                     if a.split("=", 1)[0].endswith(f".{field}")), field)
    return (f"{override}: the config has no field '{field}'; see the config "
            f"reference in README.md for the fields there are")
  # Any other failure inside the user's config file: point at its line.
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  if frames:
    where = f"{path}:{frames[-1].lineno}"
    return f"config file {where} failed: {type(error).__name__}: {error}"
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    remaining = flags.FLAGS(argv)
    # config_flags defers a missing file's error to the config's first use.
    config_file = next((a.split("=", 1)[1] for a in argv
                        if a.startswith("--config=")), None)
    if config_file and not os.path.isfile(config_file.split(":", 1)[0]):
      raise FileNotFoundError(config_file)
    return remaining
  except flags.IllegalFlagValueError as e:
    if "--config must have a value" in str(e):
      fail("--config is required, e.g. --config=configs/mnist.py")
    fail(str(e))
  except flags.Error as e:
    fail(str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = _config_flag_error(e, argv)
    if message is None:
      raise
    fail(message)


def _not_library_info(record: std_logging.LogRecord) -> bool:
  """Drops orbax's INFO records (several long lines per save); keeps warnings."""
  return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _quiet_logging():
  """Time-stamped one-line messages; no library chatter at INFO level."""
  handler = logging.get_absl_handler()
  handler.setFormatter(
      std_logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
  handler.addFilter(_not_library_info)
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def run(main: Callable[[list[str]], None]):
  """`absl.app.run(main)`, with user mistakes as one `error:` line and exit 1."""
  def wrapped(argv):
    _quiet_logging()
    try:
      main(argv)
    except UserError as e:
      fail(str(e))
    except Interrupted as e:
      logging.flush()
      print(e, file=sys.stderr)
      sys.exit(128 + e.signum)
    except KeyboardInterrupt:
      logging.flush()
      print("interrupted", file=sys.stderr)
      sys.exit(128 + signal.SIGINT)
  app.run(wrapped, flags_parser=_parse_flags)
