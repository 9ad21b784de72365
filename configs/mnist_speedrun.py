"""MNIST speedrun: the fast PyTorch recipe (tuomaso/train_mnist_fast) with
fewer images: its model, PyTorch's initialisation, MNIST's input statistics,
Adam with betas (0.7, 0.9) and PyTorch's OneCycleLR to 1e-2; plus label
smoothing 0.1, which the recipe lacks; and batch 128 for 280 steps (35,840
images, 0.6 of an epoch) where the recipe trains one epoch at batch 256.

Why the smoothing: the recipe alone, 10 seeds in one run
(`--config.label_smoothing=0 --config.num_seeds=10`), reached 98.99% mean
(std 0.08, 98.86..99.11%) on a 2-core Xeon, 2026-11-29; with smoothing 0.1,
99.19% (std 0.05, 99.10..99.26%), at no cost in time.
Why batch 128 for 280 steps: that one epoch at 256 had 0.23 points of
margin above 99%, so fewer images suffice; at 128 they buy more updates.
Seeds 0-9 in one run (`--config.num_seeds=10`, 2-core AMD EPYC, 2026-12-05,
other jobs sharing the cores, so no times quoted), mean test accuracy: at
batch 256, 180 steps 99.09%, 160 steps 99.06%, 140 steps (35,840 images)
99.01%; at batch 128, 280 steps (the same 35,840 images) 99.12%. Width 0.75
cost a tenth of a point (99.13% for the full epoch at 256). Each was
`--config.num_seeds=10 --config.batch_size=B --config.steps_per_epoch=S`.
Training at batch 128 on 2 virtual devices ran at the images/s of batch 256
on 4 (8,364 against 8,465 in the two records below).

Command:  python -m mnist_jax.main --config=configs/mnist_speedrun.py
          (against PyTorch, seeds 0-9, timed: python benchmarks/pytorch_cpu.py
          --data_dir=../shared/datasets)
Hardware: 2-core AMD EPYC virtual machine, 2 virtual CPU devices (the
          default for batch 128), jax 0.10.2, PyTorch 2.13 on 2 threads, both
          in one process, alternating seed by seed, every other process on
          the machine paused; 2026-12-05.
Time:     4.29 s of training, median of seeds 0-9 (3.94..4.82 s), against
          7.88 s (6.84..9.43 s) for the PyTorch recipe: 0.54 times PyTorch's
          time (the ranges apart); compilation 1.4 s, outside the clock. The
          recipe before (one epoch at 256), the same day and machine: 7.08 s
          against PyTorch's 9.29 s, 0.76. On the Intel Xeon only the recipe
          before has a record: 1.23 (pytorch-recipe-vs-speedrun-4dev.json).
Result:   99.12% mean test accuracy (std 0.06; 99.01..99.20%): every seed
          reaches 99%. PyTorch's recipe: 99.01% (std 0.08; 98.83..99.10%),
          three of its 10 seeds below 99%.
Record:   benchmarks/results/cpu-cpu/pytorch-recipe-vs-speedrun-amd-epyc.json
          (and ...-amd-epyc-before.json).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.model = "speedrun"
  config.init = "torch"
  config.pixel_mean, config.pixel_std = 0.1307, 0.3081
  config.optimizer = "adam"
  config.adam_b1, config.adam_b2 = 0.7, 0.9
  config.learning_rate = 1e-2
  config.lr_schedule = "onecycle"
  config.label_smoothing = 0.1
  # Batch 128 for 280 steps: 35,840 images, 0.6 of an epoch (see above).
  config.batch_size = 128
  config.steps_per_epoch = 280
  config.num_epochs = 1
  config.plots = False
  return config
