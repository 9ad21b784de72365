"""Writing files whole: every file the package writes (a run's summary and
metrics, eval.json, predictions, exported models, downloads) goes through
`atomic_file`, so that a reader never sees half a file, even after a kill.

A leaf: the standard library only, so that host-side code (datasets,
downloads, predict's CSV) writes files without importing JAX or the models.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from mnist_jax.errors import UserError

_DOWNLOAD_TIMEOUT_S = 30


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
  """A file opened for writing beside `path` and renamed onto it when the
  block ends without an exception; removed when it raises. A reader sees the
  old file or the whole new one, never half of it."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def write_atomic(path: str | os.PathLike, content: str | bytes):
  with atomic_file(path, "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)


def write_json_atomic(path: str | os.PathLike, obj: Any):
  write_atomic(path, json.dumps(obj, indent=2) + "\n")


def fetch(url: str, target: Path, algorithm: str, expected: str, size: int | None,
          missing: str, fix: str) -> Path:
  """Downloads `url` to `target`, checked against its registered `algorithm`
  digest (and `size`, where known), written atomically: a failed or bad
  download leaves nothing behind. Offline, the error says what is `missing`
  and how to `fix` it."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create data folder {target.parent} ({e.strerror}); "
                    f"set data_dir or MNIST_JAX_DATA to a writable folder") from None
  try:
    with atomic_file(target, "wb") as out:
      digest, got_size = hashlib.new(algorithm, usedforsecurity=False), 0
      with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        while chunk := response.read(1 << 20):
          digest.update(chunk)
          got_size += out.write(chunk)
      if digest.hexdigest() != expected or size not in (None, got_size):
        raise UserError(
            f"download of {url} does not match its checksum (got {got_size} "
            f"bytes, {algorithm.upper()} {digest.hexdigest()[:12]}..., expected "
            f"{size or 'any number of'} bytes, {expected[:12]}...); it was "
            f"removed, try again")
  except (urllib.error.URLError, OSError) as e:
    raise UserError(f"{missing} and downloading {url} failed "
                    f"({getattr(e, 'reason', e)}); {fix}") from None
  return target
