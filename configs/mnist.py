"""MNIST with the Flax example's CNN: SGD with momentum, cosine decay.

Command:  python -m mnist_jax.main --config=configs/mnist.py
Hardware: 2-core AMD EPYC CPU (virtual machine), 1 CPU device, jax 0.10.2.
Time:     2 min 5 s to 2 min 14 s wall for the command (two runs, 2026-11-21);
          117 to 125 s of training (4 epochs of 29 to 31 s, 1,900 to 2,050
          images/s), 1.1 to 1.5 s compilation.
Result:   99.13% test accuracy after 4 epochs, both runs (seed 0; 99.17% after
          epoch 3).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.num_epochs = 4
  return config
