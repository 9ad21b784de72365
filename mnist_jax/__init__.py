"""mnist_jax: fast, sharding-aware MNIST-family training in JAX and Flax NNX."""

import time

# When the package was first imported: the start of a run, for the start-up
# time that the summary reports (time to the first training step).
IMPORT_TIME = time.perf_counter()

__version__ = "0.1.0"
