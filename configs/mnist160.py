"""mnist160: 160 MNIST images, a smoke test of the whole pipeline in seconds.

The first 8 images of each class of the MNIST train split train the model (80
images); the first 8 of each class of the test split evaluate it (80 images).
It checks that everything runs, not what a recipe reaches. The images ship
inside the package (mnist_jax/datasets/mnist160.npz): it runs offline, with no
data folder.

Command:  python -m mnist_jax.main --config=configs/mnist160.py
Result:   73.75% test accuracy on the 80 test images (seed 0; best 75.00%),
          20 epochs of 5 steps, on a 2-core Intel Xeon CPU with the default
          2 virtual CPU devices, jax 0.10.2, 2026-11-29. Its times are in the
          record; they were measured while other jobs shared the 2 cores.
Record:   benchmarks/results/cpu-cpu/run-mnist160-20261129T1404.json
          (python benchmarks/record_run.py --config=configs/mnist160.py)
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist160"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.batch_size = 16
  config.num_epochs = 20
  return config
