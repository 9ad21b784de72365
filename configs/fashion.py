"""Fashion-MNIST with the Flax example's CNN: Adam, cosine decay.

Command:  python -m mnist_jax.main --config=configs/fashion.py
Result:   not yet recorded; record it with
          python benchmarks/record_run.py --config=configs/fashion.py
          (SGD with momentum, --config.optimizer=sgd --config.learning_rate=0.05,
          was also tried; not recorded either.)
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.num_epochs = 12
  return config
