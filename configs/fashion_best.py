"""Fashion-MNIST, best recipe measured so far: a batch-normalised CNN with
flips, shifts, random erasing, label smoothing, an EMA and test-time flips.

Command:  python -m mnist_jax.main --config=configs/fashion_best.py
Hardware: 2-core AMD EPYC CPU (virtual machine), jax 0.10.2; the default 2
          virtual CPU devices for batch 128.
Time:     858 s of training (12 epochs of 69 to 74 s, about 850 images/s);
          compilation 3.4 s.
Result:   94.23% test accuracy after epoch 12 (seed 0; best 94.31% after
          epoch 11); the moving average of the weights 94.26%. Below the
          issue's 95.5% bar, which the published results reach with wide
          ResNets (WRN-28-10: 95.9%) trained for hundreds of epochs: work for
          a GPU (`--config.model=resnet --config.depth=28 --config.width=10`
          is the starting point), not measured here.

Ensemble of three seeds in one run:
Command:  python -m mnist_jax.main --config=configs/fashion_best.py
            --config.num_seeds=3
Time:     2,928 s of training (epochs 1-4 took 335 to 356 s while a test
          suite shared the 2 cores, epochs 5-12 188 to 202 s); compilation
          9.6 s.
Result:   seeds 0, 1, 2: 94.56%, 94.42%, 94.29% (mean 94.42%, std 0.14);
          the ensemble of the three, 94.69%: higher than each, still below
          95.5%. Their moving averages 94.47%, 94.36%, 94.17%.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "fashion_mnist"
  config.model = "bn_cnn"
  config.optimizer = "adam"
  config.learning_rate = 3e-3
  config.lr_schedule = "onecycle"
  config.augment = "flip,translate,erase"
  config.label_smoothing = 0.1
  config.ema_decay = 0.999
  config.tta = "flip"  # Average the predictions for each image and its mirror.
  config.batch_size = 128
  config.num_epochs = 12
  config.plots = False
  return config
