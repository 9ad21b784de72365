import io

import jax.numpy as jnp

from mnist_jax import progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_draws_steps_rate_and_eta_on_a_terminal_and_clears_the_line():
  out = _Terminal()
  bar = progress.EpochProgress(2, 5, steps_per_epoch=4, batch_size=8, stream=out)
  bar._last_draw = -1e9  # Draw at once, not after the redraw interval.
  bar.dispatched(jnp.int32(1), 1)
  assert bar.done == 1  # A ready marker counts as done.
  assert "epoch 2/5 [######..................] 1/4 steps" in out.getvalue()
  assert "img/s" in out.getvalue() and "ETA" in out.getvalue()
  bar.wait(jnp.int32(4))
  assert out.getvalue().endswith("\r\033[K")  # The line is cleared for the log.


def test_writes_nothing_when_output_is_not_a_terminal():
  out = io.StringIO()
  bar = progress.EpochProgress(1, 1, steps_per_epoch=4, batch_size=8, stream=out)
  bar.dispatched(jnp.int32(1), 1)
  bar.wait(jnp.int32(4))
  assert out.getvalue() == ""
