"""MNIST, best single model: a batch-normalised CNN with shifts and smoothing.

Command:  python -m mnist_jax.main --config=configs/mnist_best.py
Hardware: 2-core AMD EPYC CPU (virtual machine), jax 0.10.2; the default 2
          virtual CPU devices for batch 128.
Time:     895 s of training (12 epochs of 72 to 91 s, about 830 images/s);
          compilation 2.5 s.
Result:   99.76% test accuracy after epoch 12 (seed 0; 99.73% after epochs
          10 and 11, 99.65% after epoch 8), over the issue's 99.70% bar for a
          single model.

Ensemble of three seeds in one run (the issue's bar: 99.75%):
Command:  python -m mnist_jax.main --config=configs/mnist_best.py
            --config.num_seeds=3
Time:     2,286 s of training (12 epochs of 188 to 195 s), compilation 8.0 s;
          three sequential runs would take about 2,700 s.
Result:   seeds 0, 1, 2: 99.74%, 99.74%, 99.70% (mean 99.73%, std 0.02);
          the ensemble of the three, 99.75% (99.76% after epoch 11); their
          moving averages 99.75%, 99.73%, 99.70%. Seed 0 ends at 99.74%
          here against 99.76% alone: not the same program (and the single
          run an older commit), so float rounding differs, and over 5,600
          steps of a batch-normalised, max-pooled net that shows.

The single run used an earlier moving-average implementation (weights only,
no warm-up), which does not change training; its EMA accuracies are not
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
