"""Trains and evaluates a model: `python -m mnist_jax.main --config=configs/fashion.py`.

Any config field can be overridden, e.g. `--config.num_epochs=3`. The workdir
(default `runs/<config file stem>`) receives `metrics.jsonl` and `summary.json`.
"""

from pathlib import Path

from absl import flags
from ml_collections import config_flags

from mnist_jax import cli, train
from mnist_jax.errors import UserError

_WORKDIR = cli.workdir_flag()
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/mnist.py.",
    lock_config=True)
flags.mark_flag_as_required("config")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}; config "
                    f"fields are set as --config.<field>=<value>")
  config_file = config_flags.get_config_filename(flags.FLAGS["config"])
  workdir = _WORKDIR.value or str(Path("runs") / Path(config_file).stem)
  train.train_and_evaluate(_CONFIG.value, workdir)


if __name__ == "__main__":
  cli.run(main)
