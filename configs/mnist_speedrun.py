"""MNIST speedrun: the fast recipe's model, Adam with a one-cycle schedule.

Command:  python -m mnist_jax.main --config=configs/mnist_speedrun.py
          (10 seeds, timed: python benchmarks/run.py --sections=time_to_accuracy
          --speedruns=mnist_speedrun --seeds=10 --data_dir=...)
Hardware: 2-core AMD EPYC CPU (virtual machine), jax 0.10.2; the default 2
          virtual CPU devices for batch 128.
Time:     99.0% first reached after 14.6 s of training, mean over seeds 0-9
          (14.3 to 15.2 s: at the end of the second epoch, every seed), about
          8,300 images/s; compilation 0.37 s.
Result:   99.21% mean test accuracy over seeds 0-9 (std 0.06; min 99.12%,
          max 99.30%): every seed above 99.0%. After the first of the two
          epochs: 98.41% mean. Record:
          benchmarks/results/cpu-cpu/harness-1dev-20261121T0516.json.
          On 1 CPU device (before the automatic split) the same recipe gave
          99.18% mean (min 99.08%) in 17.8 s of training.

One-epoch recipes measured on the way, on 1 CPU device (mean test accuracy, seeds, training
seconds): batch 256 with peak lr 3e-3 98.23% (3, 16.3 s), 1e-2 98.79% (3,
16.4 s), 2e-2 98.89% (2, 16.9 s), 3e-2 98.85% (2, 17.1 s); batch 128 with
1e-2 98.89% (2, 9.4 s), 2e-2 98.92% (3, 9.3 s). Batch 128 trains this model
at nearly twice the images/s of batch 256 on this CPU. The reference to beat
(tuomaso/train_mnist_fast) reports 99.04% after one epoch in 0.76 s on a
GTX 1660 Ti laptop GPU.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.model = "speedrun"
  config.optimizer = "adam"
  config.learning_rate = 1e-2
  config.lr_schedule = "onecycle"
  config.batch_size = 128
  config.num_epochs = 2
  config.plots = False
  return config
