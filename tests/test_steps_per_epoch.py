"""config.steps_per_epoch: a shorter epoch (and schedule), as Keras's
steps_per_epoch. Toy data of conftest: 256 training images."""

import json
import math

import numpy as np
import pytest
from conftest import toy_config
import tolerances

from mnist_jax import training
from mnist_jax.errors import UserError


def test_an_epoch_takes_the_given_number_of_steps(synthetic_data, tmp_path):
  # 256 images at batch 32 are 8 full batches; 3 per epoch for 2 epochs.
  # Catches an epoch that still runs every batch (step 16), or a schedule
  # sized for the full epochs (the final learning rate would not be the
  # cosine's last step).
  config = toy_config(synthetic_data, num_epochs=2, steps_per_epoch=3)
  result = training.train_and_evaluate(config, tmp_path / "run")
  assert int(np.asarray(result.state.step)) == 6
  records = [json.loads(line) for line in
             (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2]
  # The last step's learning rate, of a cosine over 6 steps: step 5's
  # lr * (1 + cos(pi * 5 / 6)) / 2 (a 16-step schedule would give 4x more).
  # optax computes it in float32: the angle pi * 5 / 6 carries 3 roundings
  # (8 u absolute at 2.6), cos moves by half of that (its slope) plus its
  # own ulp, and 1 + cos = 0.134 carries that 7-fold: ~37 u, then lr's and
  # the product's 2 u; under 20 eps.
  expected = 1e-3 * (1 + math.cos(math.pi * 5 / 6)) / 2
  assert records[-1]["learning_rate"] == pytest.approx(
      expected, rel=tolerances.float32_relative(20))


def test_more_steps_than_full_batches_is_one_line(synthetic_data, tmp_path):
  config = toy_config(synthetic_data, steps_per_epoch=9)
  with pytest.raises(UserError, match=r"steps_per_epoch=9 exceeds the 8 full "
                     r"batches .* use at most 8, or 0"):
    training.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_negative_value_is_refused(synthetic_data, tmp_path):
  # (A float cannot be set at all: ConfigDict keeps the field an int.)
  config = toy_config(synthetic_data, steps_per_epoch=-1)
  with pytest.raises(UserError, match="config.steps_per_epoch"):
    training.train_and_evaluate(config, tmp_path / "run")
