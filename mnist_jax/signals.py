"""SIGTERM and Ctrl-C as requests to stop at the next safe point, not as kills.

Preemptible machines send SIGTERM shortly before they go; laptops get Ctrl-C.
Inside `StopOnSignal` either one only records the request, and the training
loop, which checks between compiled calls, saves and stops. A second Ctrl-C
stops at once.
"""

import signal
import threading


class StopOnSignal:
  """Context manager; `.signum` is the first signal received, else None."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # Asked twice: stop now.
    self.signum = signum

  def __enter__(self):
    # Handlers can only be installed from the main thread; elsewhere (a
    # library caller's worker thread) the signals keep their usual meaning.
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
