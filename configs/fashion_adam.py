"""Fashion-MNIST, Flax example CNN, Adam: one side of a tuned comparison.

configs/fashion.py's recipe (Adam at 1e-3, cosine decay). With
`mnist-jax compare --tune=N` its learning rate is searched over
loguniform(1e-4, 1e-2), a decade either way (it sweeps nothing of its own),
against configs/fashion_sgd.py's with the same budget.

Command:  mnist-jax compare configs/fashion_adam.py configs/fashion_sgd.py
            --tune=8 --seeds=3 --override=num_epochs=2
            --override=steps_per_epoch=100 --override=data_dir=../shared/datasets
Result:   docs/comparisons.md, "A tuned comparison"; the record is
          benchmarks/results/cpu-cpu/compare-tune-fashion-20261205.json.
"""

from configs import fashion


def get_config():
  config = fashion.get_config()
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  return config
