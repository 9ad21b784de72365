"""MNIST, the strongest single-model recipe tried so far: a batch-normalised
CNN with shifts and smoothing. 5,000 training images (stratified,
validation_seed) are held out for validation: the best epoch, and its
checkpoint in <workdir>/best_checkpoint, are chosen on them, not on the test
set; 55,000 images train.

Command:  python -m mnist_jax.main --config=configs/mnist_best.py
Result:   not yet recorded with the validation split; record it with
          python benchmarks/record_run.py --config=configs/mnist_best.py
            --config.data_dir=DIR --tag=validation5000
          and read summary.json's test_accuracy_at_best_epoch (at
          best_epoch) and final_test_accuracy. 12 epochs did not fit the
          time the shared 2-core CPU allowed on 2026-11-29 (stopped after
          epoch 4; no record). The issue's bar for a single model is 99.70%
          test accuracy. The figure to compare with: 99.76% after epoch 12
          (seed 0) from the same recipe without a validation split (all
          60,000 images trained, the final epoch reported, nothing held out
          to choose on), 2-core AMD EPYC, 2026-11-21; unrecorded (the
          docstring of commit 24c5aef, command as above).

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
