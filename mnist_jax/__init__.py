"""mnist_jax: fast, sharding-aware MNIST-family training in JAX and Flax NNX."""

__version__ = "0.1.0"
