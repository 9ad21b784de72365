"""MNIST with the Flax example's CNN: SGD with momentum, cosine decay.

Command:  python -m mnist_jax.main --config=configs/mnist.py
Hardware: 2-core AMD EPYC CPU (virtual machine), 1 CPU device, jax 0.10.2.
Time:     2 min 5 s wall for the command; 117 s of training (4 epochs of
          29 s, ~2,050 images/s), 1.1 s compilation.
Result:   99.13% test accuracy after 4 epochs (seed 0; 99.17% after epoch 3).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.num_epochs = 4
  return config
