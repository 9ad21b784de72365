"""Trains and evaluates a model: `mnist-jax train --config=configs/fashion.py`.

Any config field can be overridden, e.g. `--config.num_epochs=3`. Every field
with its value, default and meaning:

  mnist-jax train --config=configs/mnist.py --show_config

The workdir (default `runs/<config file stem>`) receives `metrics.jsonl`,
`summary.json` and `checkpoints/`; rerunning the command resumes. The same
as `python -m mnist_jax.main ...`.
"""

from pathlib import Path

from absl import flags
from ml_collections import config_flags

import mnist_jax
from mnist_jax import cli, config_reference, plugins, training
from mnist_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/mnist.py (required); "
    "--config.<field>=<value> overrides a field.", lock_config=True)
flags.mark_flag_as_required("config")
_WORKDIR = cli.workdir_flag()
_SHOW_CONFIG = flags.DEFINE_bool(
    "show_config", False, "Print every config field: its value with this "
    "--config and overrides, its default and its meaning; then exit without "
    "training.")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; config "
                    f"fields are set as --config.<field>=<value>")
  if _SHOW_CONFIG.value:
    print(config_reference.describe(_CONFIG.value))
    return
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  plugins.add_search_dir(Path(config_file).parent)  # Its file.py:attr specs.
  workdir = _WORKDIR.value or str(Path("runs") / Path(config_file).stem)
  # The run started when this process imported the package.
  training.train_and_evaluate(_CONFIG.value, workdir, started_at=mnist_jax.IMPORT_TIME)


if __name__ == "__main__":
  from mnist_jax import __main__ as dispatcher  # pylint: disable=g-import-not-at-top
  dispatcher.exit_when_done(lambda: cli.run(main))
