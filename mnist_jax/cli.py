"""Shared command-line plumbing: user mistakes become one line, bugs keep tracebacks."""

import functools
import logging as std_logging
import os
import signal
import sys
import sysconfig
import textwrap
import traceback
import types
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


def checkpoint_flag() -> flags.FlagHolder:
  """The `--checkpoint` flag of the tools that load a trained run (defined once)."""
  if "checkpoint" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["checkpoint"])
  return flags.DEFINE_string(
      "checkpoint", "", "Which checkpoint: best (the best epoch by validation "
      "accuracy), last (the newest) or an epoch number; default best where the "
      "run kept one (it had a validation split), else last.")


def member_flag() -> flags.FlagHolder:
  """The `--member` flag of the tools that load a trained run (defined once)."""
  if "member" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["member"])
  return flags.DEFINE_integer(
      "member", None, "Which model of a run of several (config.num_seeds, "
      "config.sweep) to use, 0-based as in its summary.json; default 0.")


def out_flag(help_text: str) -> flags.FlagHolder:
  """The `--out` flag (default None) of export and predict: defined once,
  with the help of the first of them imported (the command's own, run alone)."""
  if "out" in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS["out"])
  return flags.DEFINE_string("out", None, help_text)


def fail(message: str, exit_status: int = 1) -> NoReturn:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(exit_status)


def _config_file(argv: list[str]) -> str | None:
  """The value of --config= in `argv`, if any."""
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
              None)


def _config_flag_error(error: Exception, argv: list[str]) -> str | None:
  """A one-line account of a mistake in --config or its overrides, else None."""
  config_file = _config_file(argv)
  if config_file is None:
    return None
  path = config_file.split(":", 1)[0]
  if isinstance(error, OSError) and not os.path.isfile(path):
    return f"config file {path} does not exist; pass --config=configs/<name>.py"
  if isinstance(error, AttributeError) and "get_config" in str(error):
    return f"config file {path} does not define get_config()"
  if isinstance(error, (AttributeError, KeyError)):
    message = _override_error(argv)
    if message:
      return message
  # Any other failure inside the user's config file: point at its line.
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  if frames:
    where = f"{path}:{frames[-1].lineno}"
    return f"config file {where} failed: {type(error).__name__}: {error}"
  return None


def _override_error(argv: list[str]) -> str | None:
  """The first `--config.<field>=VALUE` that names no field, or whose value
  is not of the field's type, in config.override's words (those of compare
  --override and the Python API too), else None.

  Found by applying the overrides again to the config file's config, rather
  than by reading ml_collections' exception text, which differs with the
  depth of the path.
  """
  from mnist_jax import config as config_lib  # pylint: disable=g-import-not-at-top  (jax: on errors only)
  try:
    config = flags.FLAGS["config"].parser.parse(_config_file(argv))
  except Exception:  # pylint: disable=broad-except
    return None  # The caller reports the original error.
  overrides = [a[len("--config."):] for a in argv
               if a.startswith("--config.") and "=" in a]
  try:
    config_lib.apply_overrides(config, overrides, flag="--config.")
  except UserError as e:
    return str(e)
  return None


def command_help(module: types.ModuleType) -> str:
  """`--help`: the command's docstring and the flags the command itself holds."""
  spec = getattr(module, "__spec__", None)
  command = (sys.argv[0] if sys.argv[0].startswith("mnist-jax") or spec is None
             else f"python -m {spec.name}")
  lines = [f"usage: {command} [flags]", "",
           (module.__doc__ or "").strip(), "", "flags:"]
  for holder in vars(module).values():
    if isinstance(holder, flags.FlagHolder):
      flag = flags.FLAGS[holder.name]
      default = flag.default
      if isinstance(default, list):
        default = ",".join(default) or None
      default = (f" (default: {default!r})" if isinstance(default, str) else
                 "" if default in (None, False) else f" (default: {default})")
      lines.append(textwrap.fill(f"--{flag.name}: {flag.help}{default}",
                                 width=79, initial_indent="  ",
                                 subsequent_indent="      "))
  lines += ["", "--verbosity=1 also shows the libraries' log lines; --helpfull",
            "lists every flag, JAX's and absl's too."]
  return "\n".join(lines)


_HELP_ARGS = ("-h", "-?", "--help", "--helpshort")


def _parse_flags(module: types.ModuleType, argv: list[str]) -> list[str]:
  # absl's --help prints only the flags of __main__ (none, under the
  # mnist-jax dispatcher) and exits 1.
  if any(a in _HELP_ARGS for a in argv[1:]):
    try:
      print(command_help(module), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader has what it wanted.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    remaining = flags.FLAGS(argv)
    # config_flags defers a missing file's error to the config's first use.
    config_file = _config_file(argv)
    if config_file and not os.path.isfile(config_file.split(":", 1)[0]):
      raise FileNotFoundError(config_file)
    return remaining
  except flags.Error as e:
    if "--config must have a value" in str(e):
      fail("--config is required, e.g. --config=configs/mnist.py")
    # A value config_flags refused: in the words of every override's parser.
    fail(_config_file(argv) and _override_error(argv) or str(e))
  except Exception as e:  # pylint: disable=broad-except
    message = _config_flag_error(e, argv)
    if message is None:
      raise
    fail(message)


# Library directories: records from code there are the libraries' own.
_LIBRARY_DIRS = tuple(sorted({os.path.realpath(sysconfig.get_path(key)) + os.sep
                              for key in ("purelib", "platlib", "stdlib")}))
_OWN_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep


@functools.lru_cache(maxsize=None)
def _is_library(pathname: str) -> bool:
  path = os.path.realpath(pathname)
  return path.startswith(_LIBRARY_DIRS) and not path.startswith(_OWN_DIR)


def _shown(record: std_logging.LogRecord) -> bool:
  """Our records; libraries' warnings and errors (the expected ones of orbax
  are dropped where checkpoints are opened, in checkpoint.py).

  `--verbosity=1` (or more) shows every record.
  """
  if flags.FLAGS["verbosity"].value >= 1 or not _is_library(record.pathname):
    return True
  return record.levelno >= std_logging.WARNING


def _quiet_logging():
  """Time-stamped one-line messages; no library chatter."""
  handler = logging.get_absl_handler()
  handler.setFormatter(
      std_logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
  handler.addFilter(_shown)


def run(main: Callable[[list[str]], None]):
  """`absl.app.run(main)`, with user mistakes as one `error:` line and exit 1."""
  def wrapped(argv):
    _quiet_logging()
    try:
      main(argv)
    except UserError as e:
      fail(str(e), e.exit_status)
    except Interrupted as e:
      logging.flush()
      print(e, file=sys.stderr)
      sys.exit(128 + e.signum)
    except KeyboardInterrupt:
      logging.flush()
      print("interrupted", file=sys.stderr)
      sys.exit(128 + signal.SIGINT)
  module = sys.modules[main.__module__]
  app.run(wrapped, flags_parser=functools.partial(_parse_flags, module))
