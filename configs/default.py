"""Shared defaults: the Flax MNIST example's CNN and recipe, on MNIST.

Every other config starts from `get_config()` here and changes what it needs.
The fields, their defaults and comments live in the package
(`mnist_jax/config.py`, `defaults()`), which must not depend on this folder.

Command:  python -m mnist_jax.main --config=configs/default.py
Result:   not yet recorded; record it (training, then a JSON record under
          benchmarks/results/) with
          python benchmarks/record_run.py --config=configs/default.py

Any field can be overridden on the command line, e.g.
`python -m mnist_jax.main --config=configs/default.py --config.num_epochs=3`.
"""

import ml_collections

from mnist_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  return config_lib.defaults()
