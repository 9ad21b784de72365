"""Fashion-MNIST with the Flax example's CNN: SGD with momentum, cosine decay.

Command:  python -m mnist_jax.main --config=configs/fashion.py
Measured: (filled in below from a real run)
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.optimizer = "sgd"
  config.learning_rate = 0.05
  config.weight_decay = 5e-4
  config.num_epochs = 14
  return config
