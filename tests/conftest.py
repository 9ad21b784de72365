"""Shared fixtures: tiny synthetic IDX datasets, the real data, configs."""

import gzip
import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Start JAX's CPU backend now, with the devices $XLA_FLAGS gives (1 by
# default): runs inside this process then keep them, instead of the first
# one choosing a count for all the others (runtime.configure_cpu_devices).
# Runs in subprocesses choose as a user's would.
jax.devices()


# Tests that need an install extra carry its marker (registered in
# pyproject.toml). A core install (the README's test command) skips them,
# naming the extra; CI's second environment sets MNIST_JAX_REQUIRE_EXTRAS=1,
# where any skip of a marked test is a failure, so an extra that did not
# install, or a test that skips for another reason, cannot pass unnoticed.
EXTRAS = {  # marker: (extra, the modules it installs)
    "tfds": ("tfds", ("tensorflow", "tensorflow_datasets")),
    "torch": ("benchmark", ("torch",)),
}


def pytest_runtest_setup(item):
  for marker, (extra, modules) in EXTRAS.items():
    if item.get_closest_marker(marker) is None:
      continue
    # find_spec, not import: importing TensorFlow takes seconds.
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
      pytest.skip(f"needs the {extra} extra ({', '.join(missing)} not installed): "
                  f"pip install -e '.[{extra}]'")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  report = (yield).get_result()
  if (report.skipped and os.environ.get("MNIST_JAX_REQUIRE_EXTRAS") == "1"
      and any(item.get_closest_marker(m) for m in EXTRAS)):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"MNIST_JAX_REQUIRE_EXTRAS=1, yet this test skipped: {reason}"


def real_data_dir() -> Path | None:
  """The official MNIST/Fashion-MNIST files: $MNIST_JAX_TEST_DATA or ../shared/datasets."""
  path = Path(os.environ.get("MNIST_JAX_TEST_DATA", REPO.parent / "shared" / "datasets"))
  return path if (path / "mnist").is_dir() else None


def require_real_data() -> Path:
  """The real data folder; skips the test where there is none, fails under CI."""
  path = real_data_dir()
  if path is None:
    if os.environ.get("CI"):
      pytest.fail("CI must have the real datasets in ../shared/datasets")
    pytest.skip("real datasets not found; set MNIST_JAX_TEST_DATA")
  return path


@pytest.fixture
def shared_data() -> Path:
  return require_real_data()


def write_idx(path: Path, array: np.ndarray, magic: int | None = None):
  array = np.asarray(array, np.uint8)
  magic = magic if magic is not None else {1: 2049, 3: 2051}[array.ndim]
  header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.tobytes())


def write_dataset(folder: Path, train_images, train_labels, test_images,
                  test_labels) -> Path:
  folder.mkdir(parents=True, exist_ok=True)
  write_idx(folder / "train-images-idx3-ubyte.gz", train_images)
  write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels)
  write_idx(folder / "t10k-images-idx3-ubyte.gz", test_images)
  write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_labels)
  return folder


def synthetic_split(num: int, num_classes: int, seed: int):
  """Learnable images: class c lights a horizontal band at rows 2c..2c+2, plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num)
  images = rng.integers(0, 60, (num, 28, 28))
  for i, c in enumerate(labels):
    images[i, 2 * c + 2: 2 * c + 5, 4:24] = 220
  return images.astype(np.uint8), labels.astype(np.uint8)


def small_dataset(num_train: int, num_test: int, image_shape=(28, 28, 1),
                  num_classes: int = 10, seed: int = 0, name: str = "toy"):
  """A Dataset in memory, made as every source makes one: through
  data.checked, so uint8 images [N, H, W, C] and int32 labels [N], every
  class in the train split. Learnable: class c lights a horizontal band of
  its own (rows 2c+2..2c+4 at 28x28 and 10 classes), plus noise."""
  from mnist_jax import data  # pylint: disable=g-import-not-at-top
  h, w, c = image_shape
  band = max(1, (h - 4) // (num_classes + 1))
  rng = np.random.default_rng(seed)

  def split(num, balanced):
    # The train split holds every class (data.checked requires it).
    labels = (rng.permutation(np.arange(num) % num_classes) if balanced
              else rng.integers(0, num_classes, num))
    images = rng.integers(0, 60, (num, h, w, c))
    for i, k in enumerate(labels):
      images[i, 2 + band * k: 2 + band * k + min(band + 1, 3), w // 7: w - w // 7] = 220
    return images.astype(np.uint8), labels

  return data.checked(name, "small_dataset", tuple(map(str, range(num_classes))),
                      *split(num_train, True), *split(num_test, False))


@pytest.fixture
def synthetic_data(tmp_path) -> Path:
  """A data_dir holding `toy/`: 10 classes, 256 train and 100 test images."""
  data_dir = tmp_path / "data"
  write_dataset(data_dir / "toy", *synthetic_split(256, 10, seed=1),
                *synthetic_split(100, 10, seed=2))
  return data_dir


# The colour each class of `rgb_npz` is drawn in: ten distinct ones.
RGB_COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1],
                        [0, 1, 1], [1, .5, 0], [.5, 0, 1], [0, .5, .5], [1, 1, 1]])


@pytest.fixture(scope="session")
def rgb_npz(tmp_path_factory) -> Path:
  """A user's RGB `.npz` in MedMNIST's layout (uint8 [N, 28, 28, 3] images,
  labels [N, 1], train, val and test splits): mnist160's digits, read by
  data.load, each class drawn in a colour of its own. 80 train, 40 val and
  40 test images, 10 classes."""
  from mnist_jax import data  # pylint: disable=g-import-not-at-top
  mnist160 = data.load("mnist160")
  paint = lambda images, labels: (images * RGB_COLOURS[labels][:, None, None, :]
                                  ).astype(np.uint8)
  test_images, test_labels = mnist160.test_images, mnist160.test_labels
  splits = {"train": (mnist160.train_images, mnist160.train_labels),
            "val": (test_images[0::2], test_labels[0::2]),
            "test": (test_images[1::2], test_labels[1::2])}
  arrays = {}
  for split, (images, labels) in splits.items():
    arrays[f"{split}_images"] = paint(images, labels)
    arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None]
  path = tmp_path_factory.mktemp("rgb") / "colours.npz"
  np.savez(path, **arrays)
  return path


def toy_config(data_dir, **overrides):
  from configs import default
  config = default.get_config()
  config.dataset = "toy"
  config.data_dir = str(data_dir)
  config.model = "mlp"
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.batch_size = 32
  config.num_epochs = 3
  config.plots = False  # Rendering takes seconds; tests/test_outputs.py checks them.
  for key, value in overrides.items():
    config[key] = value
  return config


def _test_cache(tmp_path_factory) -> str:
  return os.environ.get("MNIST_JAX_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
  """Caches (JAX's compilation cache) go to a tmp folder, not the user's home."""
  cache = _test_cache(tmp_path_factory)
  monkeypatch.setenv("MNIST_JAX_TEST_CACHE", cache)
  monkeypatch.setenv("XDG_CACHE_HOME", cache)


@pytest.fixture(scope="session")
def script_env(tmp_path_factory) -> dict[str, str]:
  """The environment of a script run as a child process, for fixtures of any
  scope (_cache_in_tmp's, which is per test): caches in the tmp folder."""
  cache = _test_cache(tmp_path_factory)
  return {**os.environ, "MNIST_JAX_TEST_CACHE": cache, "XDG_CACHE_HOME": cache,
          "PYTHONPATH": str(REPO)}


def run_script(path: str, *args, env: dict[str, str], timeout=600,
               check=True) -> subprocess.CompletedProcess:
  """Runs `python <path> args` (a path from the repo root) in a fresh process;
  with `check`, fails the test with the end of its stderr unless it exits 0."""
  result = subprocess.run([sys.executable, str(REPO / path), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def run_module(module: str, *args, env=None, cwd=REPO, timeout=300):
  """Runs `python -m module args` in a fresh process (e.g. with other XLA_FLAGS)."""
  full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
  return subprocess.run([sys.executable, "-m", module, *map(str, args)],
                        cwd=cwd, env=full_env, capture_output=True, text=True,
                        timeout=timeout)


def checkpoint_params(state_path: Path, part=("params",)) -> list[np.ndarray]:
  """A checkpoint's parameters (or another `part` of its state, a path of
  keys: ("ema", "params") for the moving average's), restored onto this
  process's first device whatever devices saved them."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(state_path).item_metadata.tree)
  tree = checkpointer.restore(state_path, target)
  for key in part:
    tree = tree[key]
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
