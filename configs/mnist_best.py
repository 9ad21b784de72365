"""MNIST, the strongest single-model recipe tried so far: a batch-normalised
CNN with shifts and smoothing. 5,000 training images (stratified,
validation_seed) are held out for validation: the best epoch, and its
checkpoint in <workdir>/best_checkpoint, are chosen on them, not on the test
set; 55,000 images train.

Command:  python -m mnist_jax.main --config=configs/mnist_best.py
            --config.num_epochs=4
          (4 of the 12 epochs: what the shared CPU's time allowed)
Hardware: 2-core Intel Xeon virtual machine, jax 0.10.2, the default 2
          virtual CPU devices; shared with other jobs, 2026-11-29.
Time:     591 s of training (4 epochs of 123 to 170 s under the load).
Result:   99.60% test accuracy at epoch 4, the epoch chosen on validation
          (99.54%); final test accuracy 99.60% (seed 0)
          (benchmarks/results/cpu-cpu/run-mnist_best-validation5000-4epochs.json).
          The earlier figure: 99.76% after epoch 12 (seed 0), 12 epochs on
          all 60,000 images with nothing held out, the final epoch reported,
          2-core AMD EPYC, 2026-11-21; unrecorded (the docstring of commit
          24c5aef). The 12-epoch run with the split is not yet recorded
          (one was stopped after epoch 4 on 2026-11-29):
          python benchmarks/record_run.py --config=configs/mnist_best.py
            --config.data_dir=DIR --tag=validation5000
          The issue's bar for a single model is 99.70% test accuracy.

Ensemble of three seeds in one run (the issue's bar: 99.75%):
Command:  python -m mnist_jax.main --config=configs/mnist_best.py
            --config.num_seeds=3
Result:   not yet recorded; record it with
          python benchmarks/record_run.py --config=configs/mnist_best.py
            --config.num_seeds=3 --tag=3seeds

A seed trained alone and the same seed as a member of a several-seed run are
not the same program, so float rounding differs, and over the 5,148 steps
of a batch-normalised, max-pooled net that can show in the accuracy.
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
  config.validation_size = 5000  # Choose the best epoch on these, not on test.
  config.plots = False
  return config
