"""A live progress line during each epoch, on a terminal only.

The host dispatches compiled calls far ahead of the device, so "dispatched"
says nothing about progress. Each call returns its own step counter (never
donated); the display counts the calls whose counters are ready, asking
`is_ready()`, which never waits. It is redrawn between compiled calls, at
most a few times a second, and writes nothing when output is not a terminal
(logs, CI), where the per-epoch lines suffice.
"""

import collections
import sys
import time

import jax

_REDRAW_SECONDS = 0.25


class EpochProgress:
  """Steps done, images/s and ETA of the running epoch, on one terminal line."""

  def __init__(self, epoch: int, num_epochs: int, steps_per_epoch: int,
               batch_size: int, stream=None, enabled: bool | None = None):
    self._stream = stream or sys.stderr
    self.enabled = self._stream.isatty() if enabled is None else enabled
    self._label = f"epoch {epoch}/{num_epochs}"
    self._total, self._batch_size = steps_per_epoch, batch_size
    self._pending = collections.deque()  # (marker array, steps when ready)
    self._dispatched = self.done = 0
    self._start = time.perf_counter()
    self._last_draw = 0.0

  def dispatched(self, marker: jax.Array, num_steps: int):
    """Records a call that will have run `num_steps` more steps once `marker` is ready."""
    if not self.enabled:
      return
    self._dispatched += num_steps
    self._pending.append((marker, self._dispatched))
    self._refresh()

  def wait(self, marker: jax.Array):
    """Waits for `marker`, redrawing meanwhile (a plain wait when disabled)."""
    if self.enabled:
      while not marker.is_ready():
        self._refresh()
        time.sleep(_REDRAW_SECONDS / 5)
    marker.block_until_ready()
    self.close()

  def close(self):
    if self.enabled:
      self._stream.write("\r\033[K")
      self._stream.flush()
      self.enabled = False

  def _refresh(self):
    while self._pending and self._pending[0][0].is_ready():
      self.done = self._pending.popleft()[1]
    now = time.perf_counter()
    if now - self._last_draw < _REDRAW_SECONDS:
      return
    self._last_draw = now
    elapsed = now - self._start
    rate = self.done * self._batch_size / elapsed if elapsed > 0 else 0.0
    remaining = ((self._total - self.done) * self._batch_size / rate
                 if rate > 0 else float("nan"))
    width = 24
    filled = int(width * self.done / self._total)
    bar = "#" * filled + "." * (width - filled)
    eta = f"ETA {remaining:4.0f} s" if rate > 0 else "ETA    ? s"
    self._stream.write(f"\r\033[K{self._label} [{bar}] {self.done}/{self._total} "
                       f"steps  {rate:,.0f} img/s  {eta}")
    self._stream.flush()
