"""Fashion-MNIST, the strongest recipe tried so far: a batch-normalised CNN
with flips, shifts, random erasing, label smoothing, an EMA and test-time flips.
5,000 training images (stratified, validation_seed) are held out for
validation: the best epoch, and its checkpoint in <workdir>/best_checkpoint,
are chosen on them, not on the test set; 55,000 images train.

Command:  python -m mnist_jax.main --config=configs/fashion_best.py
Hardware: 2-core Intel Xeon virtual machine, jax 0.10.2, the default 2
          virtual CPU devices; nothing else running, 2026-11-29.
Time:     1,062 s of training (12 epochs of 82 to 94 s).
Result:   94.29% test accuracy at epoch 12, the final one and the one
          chosen on validation (94.32%); 94.22% with the moving average of
          the weights (seed 0)
          (benchmarks/results/cpu-cpu/run-fashion_best-validation5000.json).
          Earlier figures: 92.48% at epoch 4 of a run stopped there
          (run-fashion_best-validation5000-4epochs.json), and 94.23% after
          epoch 12 on all 60,000 images with nothing held out, 2-core AMD
          EPYC, 2026-11-21, unrecorded (the docstring of commit 4628445).
          The issue's bar is 95.5% test accuracy, which published results
          reach with wide ResNets trained for hundreds of epochs (e.g.
          WRN-28-10 with random erasing: Zhong et al., "Random Erasing Data
          Augmentation", AAAI 2020): work for a GPU (`--config.model=resnet
          --config.depth=28 --config.width=10` is the starting point), not
          measured here.

Ensemble of three seeds in one run (summary.json's
final_ensemble_test_accuracy):
Command:  python -m mnist_jax.main --config=configs/fashion_best.py
            --config.num_seeds=3
Result:   not yet recorded; record it with
          python benchmarks/record_run.py --config=configs/fashion_best.py
            --config.num_seeds=3 --tag=3seeds
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
  config.validation_size = 5000  # Choose the best epoch on these, not on test.
  config.plots = False
  return config
