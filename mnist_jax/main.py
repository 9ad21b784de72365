"""Trains and evaluates a model: `python -m mnist_jax.main --config=configs/fashion.py`.

Any config field can be overridden, e.g. `--config.num_epochs=3`. The workdir
(default `runs/<config file stem>`) receives `metrics.jsonl` and `summary.json`.
"""

import logging as std_logging
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from mnist_jax import train
from mnist_jax.errors import UserError

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output folder; default runs/<config file stem>.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/mnist.py.",
    lock_config=True)
flags.mark_flag_as_required("config")


def _quiet_logging():
  """Time-stamped one-line messages; no JAX start-up chatter about TPUs."""
  handler = logging.get_absl_handler()
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s",
                                             datefmt="%H:%M:%S"))
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def main(argv):
  _quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or str(Path("runs") / Path(config_file).stem)
  try:
    train.train_and_evaluate(_CONFIG.value, workdir)
  except UserError as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
