"""MNIST, best single model: a batch-normalised CNN with shifts and smoothing.

Command:  python -m mnist_jax.main --config=configs/mnist_best.py
Hardware: 2-core AMD EPYC CPU (virtual machine), jax 0.10.2; the default 2
          virtual CPU devices for batch 128.
Time:     895 s of training (12 epochs of 72 to 91 s, about 830 images/s);
          compilation 2.5 s.
Result:   99.76% test accuracy after epoch 12 (seed 0; 99.73% after epochs
          10 and 11, 99.65% after epoch 8). One seed only: the issue's bar is
          99.70% for a single model; the ensemble bar (99.75% over seeds)
          needs vectorised seeds, not built yet.

The run used an earlier moving-average implementation (weights only, no
warm-up), which does not change training; its EMA accuracies are not
quoted. Measured 2026-11-21; a GPU would run this in seconds.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.model = "bn_cnn"
  config.optimizer = "adam"
  config.learning_rate = 3e-3
  config.lr_schedule = "onecycle"
  config.augment = "translate"  # Up to 2 pixels each way.
  config.label_smoothing = 0.1
  config.ema_decay = 0.999
  config.batch_size = 128
  config.num_epochs = 12
  config.plots = False
  return config
