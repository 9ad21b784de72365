"""mnist_jax: fast, sharding-aware MNIST-family training in JAX and Flax NNX.

From Python: `mnist_jax.train(config, ...)` and `mnist_jax.load(workdir)`
(api.py); importing the package itself imports nothing else.
"""

import time

# When the package was first imported: the start of a run, for the start-up
# time that the summary reports (time to the first training step).
IMPORT_TIME = time.perf_counter()

__version__ = "0.1.0"


def __getattr__(name: str):
  """`mnist_jax.train` and `mnist_jax.load`: api.py's functions, imported
  when first used (JAX starts then, not at `import mnist_jax`). No module of
  the package is named train or load, so importing one never replaces them."""
  if name in ("train", "load"):
    from mnist_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")


def __dir__():
  return [*globals(), "train", "load"]
