"""TensorBoard scalar summaries, written without TensorFlow or `tensorboard`.

An event file is a TFRecord file of `Event` protocol buffers. Scalars need
only a handful of protobuf fields, so they are encoded here by hand: the run
can be watched in TensorBoard without a dependency of hundreds of megabytes.

  with SummaryWriter(workdir / "tensorboard") as writer:
    writer.scalar("test/accuracy", 0.98, step=epoch)
"""

import operator
import os
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum of TFRecord; zlib has only CRC-32."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: a CRC of data holding CRCs is then still strong."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data +
          struct.pack("<I", masked_crc32c(data)))


# Protobuf wire format: each field is a varint key (field << 3 | wire type)
# and a value; wire types 0 varint, 1 fixed 64-bit, 2 length-delimited,
# 5 fixed 32-bit.

def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # Negative int64s are ten bytes of two's complement.
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _length_delimited(field: int, data: bytes) -> bytes:
  return _key(field, 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           summary: bytes | None = None) -> bytes:
  """An `Event`: wall_time (1, double), step (2, int64), file_version (3), summary (5)."""
  out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
  if file_version is not None:
    out += _length_delimited(3, file_version.encode())
  if summary is not None:
    out += _length_delimited(5, summary)
  return out


def _summary_value(tag: str, simple_value: float) -> bytes:
  """A `Summary.Value`: tag (1, string), simple_value (2, float)."""
  return (_length_delimited(1, tag.encode()) + _key(2, 5) +
          struct.pack("<f", simple_value))


class SummaryWriter:
  """Appends scalars to a new event file in `logdir`, created if need be.

  Each call writes and flushes at once (the records are a few dozen bytes),
  so TensorBoard shows a running training up to its last epoch, and a killed
  run loses nothing.
  """

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}"
    self.path = self.logdir / name
    # Two writers in the same second must not share (and interleave) a file.
    for n in range(1, 1000):
      try:
        self._file = self.path.open("xb")
        break
      except FileExistsError:
        self.path = self.logdir / f"{name}.{n}"
    else:
      raise FileExistsError(f"{self.logdir} already holds 1000 event files "
                            f"named {name}.*")
    self._write(_event(now, 0, file_version=FILE_VERSION))

  def _write(self, event: bytes):
    if self._file is None:
      raise ValueError(f"the SummaryWriter of {self.path} is closed")
    self._file.write(tfrecord(event))
    self._file.flush()

  def scalar(self, tag: str, value: float, step: int):
    """Records `value` (anything float() takes) under `tag` at `step`."""
    self.scalars({tag: value}, step)

  def scalars(self, values: dict[str, float], step: int):
    """Records several scalars of one step as one event."""
    if not all(isinstance(tag, str) and tag for tag in values):
      raise TypeError(f"tags must be non-empty strings, got {list(values)}")
    summary = b"".join(
        _length_delimited(1, _summary_value(tag, float(value)))
        for tag, value in values.items())
    # operator.index: numpy and JAX integers are steps, 1.5 is a mistake.
    self._write(_event(time.time(), operator.index(step), summary=summary))

  def flush(self):
    if self._file is not None:
      self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc_info):
    self.close()
