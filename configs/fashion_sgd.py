"""Fashion-MNIST, Flax example CNN, SGD with momentum 0.9: the other side.

configs/fashion.py's recipe with SGD (momentum 0.9, cosine decay) at 0.05.
With `mnist-jax compare --tune=N` its learning rate is searched over
loguniform(0.005, 0.5), a decade either way, against
configs/fashion_adam.py's with the same budget.

Command:  mnist-jax compare configs/fashion_adam.py configs/fashion_sgd.py
            --tune=8 --seeds=3 --override=num_epochs=2
            --override=steps_per_epoch=100 --override=data_dir=../shared/datasets
Result:   docs/comparisons.md, "A tuned comparison"; the record is
          benchmarks/results/cpu-cpu/compare-tune-fashion-20261205.json.
"""

from configs import fashion


def get_config():
  config = fashion.get_config()
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.learning_rate = 0.05
  return config
