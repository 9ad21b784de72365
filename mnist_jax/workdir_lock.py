"""One training run per workdir at a time: an exclusive lock on `<workdir>/.lock`.

Two runs on one workdir (a job resubmitted while the first still runs) would
both append to metrics.jsonl and both write checkpoints. The second is
refused instead, with one line naming the first.

The lock is `fcntl.flock` on `<workdir>/.lock`. The kernel holds it for as
long as the file stays open and drops it when the process ends, however it
ends (SIGKILL, out of memory), so a killed run never leaves the workdir
locked. The file's contents are only a note of who holds it (pid, host,
start time), for the refusal's message; the run clears the note when it
releases the lock.

What "stale" means here. With flock a lock cannot outlive its process, so
only the note can be stale: one found by a run that got the lock was left by
a run that ended without releasing it (killed, or its host went down). The
new run takes over with a warning naming the old one. Where flock is not
supported (some network filesystems answer ENOLCK or EOPNOTSUPP), the note is
all there is: a note naming a live pid on this host, or any pid on another
host (which cannot be checked from here), refuses; one naming a pid on this
host that no longer exists is stale and taken over with a warning. Without
flock two runs starting in the same instant could both pass; with it, not.

Limits: some shared filesystems lock only among the processes of one host
(Lustre mounted with `localflock`, NFS with `local_lock=flock`); two runs on
different hosts then both get the lock, and the second only warns (the note
names the other host). A process forked (without exec) from a run shares its
open lock file, so the lock lasts until both have ended.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mnist_jax.errors import UserError

LOCK_FILE = ".lock"


class WorkdirLock:
  """Context manager: holds the lock of `workdir` from enter to exit."""

  def __init__(self, workdir: os.PathLike | str):
    self.workdir = Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock, or raises a UserError naming the run that holds it."""
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(f"cannot open the lock file {self.path} ({e.strerror}); "
                      f"pass --workdir with a writable folder") from None
    try:
      note = self._lock(fd)
      if note:  # Left by a run that ended without releasing the lock.
        logging.warning(
            "taking over the lock of %s: %s ended without releasing it "
            "(killed?)%s", self.workdir, _describe(note),
            "" if note.get("host") == socket.gethostname() else
            "; if it still runs, stop this run: this filesystem's locks may "
            "not reach other hosts")
      _write_note(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": datetime.datetime.now().astimezone()
                                  .isoformat(timespec="seconds")})
    except BaseException:
      os.close(fd)  # Closing drops the flock, if taken.
      raise
    self._fd = fd
    return self

  def _lock(self, fd: int) -> dict[str, Any] | None:
    """Locks `fd`; returns the note found there (None if empty)."""
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # Held by a live process (EWOULDBLOCK).
      self._refuse(_read_note(fd, wait=True))
    except OSError as e:  # This filesystem cannot flock: the note decides.
      note = _read_note(fd)
      if note and not _certainly_dead(note):
        self._refuse(note, f" (no file locking here: {e.strerror}; delete "
                           f"{self.path} if that run has ended)")
      return note
    return _read_note(fd)

  def _refuse(self, note: dict[str, Any] | None, why: str = ""):
    raise UserError(
        f"workdir {self.workdir} is in use by another training run: "
        f"{_describe(note)}{why}; wait for it to end, or pass another --workdir")

  def release(self):
    if self._fd is None:
      return
    # The note goes first, while the lock is still held, so that it never
    # erases the note of a run that takes the lock next.
    with contextlib.suppress(OSError):
      os.ftruncate(self._fd, 0)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self if self._fd is not None else self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def for_run(workdir: Path) -> contextlib.AbstractContextManager:
  """The workdir's lock, for a training run: taken, or a UserError.

  Only process 0 writes files (distributed.is_main_process), so only it
  locks; in a multi-process run every process then learns whether it got
  the lock, so that all of them stop when it did not (the others would
  otherwise wait for process 0 in their first collective).
  """
  lock, refusal = None, None
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except UserError as e:
      refusal = e
  if jax.process_count() > 1:
    try:
      refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)))
    except BaseException:
      if lock:
        lock.release()
      raise
    if refused and refusal is None:
      refusal = UserError(f"workdir {workdir} is in use by another training "
                          f"run (process 0 names it); wait for it to end, or "
                          f"pass another --workdir")
  if refusal is not None:
    raise refusal
  return lock or contextlib.nullcontext()


def _describe(note: dict[str, Any] | None) -> str:
  if not note:  # Locked, but the note not yet written: a run just starting.
    return "a run that is starting (its note in .lock not yet written)"
  return (f"pid {note.get('pid')} on {note.get('host')}, started "
          f"{note.get('started')}")


def _certainly_dead(note: dict[str, Any]) -> bool:
  """True when the note names a pid of this host that no longer exists."""
  if note.get("host") != socket.gethostname() or not isinstance(note.get("pid"), int):
    return False
  try:
    os.kill(note["pid"], 0)  # Signal 0: only asks whether the pid exists.
  except ProcessLookupError:
    return True
  except PermissionError:  # Exists, owned by someone else.
    return False
  return False


def _read_note(fd: int, wait: bool = False) -> dict[str, Any] | None:
  """The note in the lock file, or None if it is empty or unreadable.

  With `wait`, a holder may be between taking the lock and writing its
  note: give it a moment.
  """
  for attempt in range(6 if wait else 1):
    if attempt:
      time.sleep(0.1)
    try:
      text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
      note = json.loads(text)
      if isinstance(note, dict):
        return note
    except (OSError, ValueError):
      pass
  return None


def _write_note(fd: int, note: dict[str, Any]):
  data = (json.dumps(note) + "\n").encode()
  os.ftruncate(fd, 0)
  os.pwrite(fd, data, 0)
