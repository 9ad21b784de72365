"""Class probabilities of host-side images, in batches: the one inference
path of predict, evaluate's and training's plots, and `mnist_jax.load(...)
.predict(images)`.

Every batch is padded to `batch_size` images, so a model compiles once
whatever the number of images. Batches are dispatched one ahead of the
result read back, so the host prepares (decodes, pads) the next batch
while the device computes the current one.

A room of its own: it imports no other module of the package, and only the
edges that show or return predictions import it (tests/test_layout.py).
"""

import functools
from typing import Callable, Iterable, Iterator, TypeVar

import jax
import numpy as np

# uint8 images [B, H, W, C] -> logits [B, K]; jitted, compiled per shape.
LogitsFn = Callable[[np.ndarray], jax.Array]
Key = TypeVar("Key")

# Images per compiled call by default. On one CPU device the CNN's forward
# pass costs more per image in larger batches: MNIST's 10,000 test images
# took 3.2 to 3.4 s at 64, 128 and 256 a batch, 4.6 s at 512 (2-core AMD EPYC,
# shared; model_seconds_by_batch_size in
# benchmarks/results/cpu-cpu/predict-folder-10k.json, benchmarks/README item 17).
BATCH_SIZE = 256


def bound_logits_fn(trained) -> LogitsFn:
  """f(images) -> logits of a trained run (trained.Trained), its state bound."""
  return functools.partial(trained.logits_fn, trained.state)


def _padded(images_BHWC: np.ndarray, batch_size: int) -> np.ndarray:
  missing = batch_size - len(images_BHWC)
  if missing == 0:
    return images_BHWC
  return np.pad(images_BHWC, ((0, missing),) + ((0, 0),) * (images_BHWC.ndim - 1))


def stream(logits_fn: LogitsFn, batches: Iterable[tuple[Key, np.ndarray]],
           batch_size: int) -> Iterator[tuple[Key, np.ndarray]]:
  """(key, probabilities [B, K]) of each (key, uint8 images [B, H, W, C])
  of `batches`, in order; B at most `batch_size`."""
  pending = None
  for key, images_BHWC in batches:
    if not 0 < len(images_BHWC) <= batch_size:
      raise ValueError(f"a batch of {len(images_BHWC)} images; 1 to {batch_size}")
    # Softmax on the whole padded batch: one compiled shape, and its rows
    # do not depend on the padding's.
    dispatched = jax.nn.softmax(logits_fn(_padded(images_BHWC, batch_size)), axis=-1)
    if pending is not None:
      yield _fetched(*pending)
    pending = (key, dispatched, len(images_BHWC))
  if pending is not None:
    yield _fetched(*pending)


def _fetched(key, probabilities_BK: jax.Array, count: int):
  return key, np.asarray(probabilities_BK)[:count]


def probabilities(logits_fn: LogitsFn, images_NHWC: np.ndarray,
                  batch_size: int = BATCH_SIZE) -> np.ndarray:
  """Class probabilities [N, K] of uint8 images [N, H, W, C], N >= 1, in
  batches of min(batch_size, N)."""
  batch_size = min(batch_size, len(images_NHWC))
  batches = ((None, images_NHWC[start:start + batch_size])
             for start in range(0, len(images_NHWC), batch_size))
  return np.concatenate([p for _, p in stream(logits_fn, batches, batch_size)])
