"""Timing helpers for benchmarks: timed windows on the device's own clock."""

import datetime
import os
import re
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import jax

from mnist_jax import fileio


def time_windows(run_window: Callable[[], object], repeats: int,
                 warmup: int = 1) -> list[float]:
  """Seconds per call of `run_window`, waiting for its result on the device.

  `run_window` dispatches work and returns arrays; each window is timed until
  those arrays are ready, so asynchronous dispatch cannot hide device time.
  """
  for _ in range(warmup):
    jax.block_until_ready(run_window())
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run_window())
    seconds.append(time.perf_counter() - start)
  return seconds


def interleaved_windows(run_windows: dict[str, Callable[[], object]],
                        repeats: int) -> dict[str, list[float]]:
  """Seconds per window of each runner, the runners taking turns.

  One warm-up window each, then `repeats` rounds of one window per runner: a
  slow drift of the machine (another process, its thermal state) then
  affects all of them alike instead of whichever ran last.
  """
  for run_window in run_windows.values():
    time_windows(run_window, repeats=1)
  seconds = {name: [] for name in run_windows}
  for _ in range(repeats):
    for name, run_window in run_windows.items():
      seconds[name] += time_windows(run_window, repeats=1, warmup=0)
  return seconds


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
  """Whether two rate_stats spreads overlap: then there is no measurable difference."""
  return not (a["min"] > b["max"] or a["max"] < b["min"])


def timed(fn: Callable[[], object]) -> tuple[object, float]:
  """(result, seconds) of `fn()`, for host-side work such as compilation."""
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def rate_stats(items_per_window: int, seconds: list[float]) -> dict[str, float]:
  """Median rate with its spread (min..max over windows)."""
  rates = [items_per_window / s for s in seconds]
  return {"median": statistics.median(rates), "min": min(rates),
          "max": max(rates), "windows": len(rates)}


def spread(values: list[float]) -> dict[str, float]:
  """Mean, sample standard deviation, min and max of repeated measurements."""
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "min": min(values), "max": max(values)}


def write_record(record: dict, name: str, out: str | os.PathLike | None = None,
                 results_dir: str | os.PathLike = "benchmarks/results") -> Path:
  """Writes a benchmark record as JSON to `out`, by default to
  `<results_dir>/<backend>-<device kind>/<name>.json`; returns the path."""
  machine = record["machine"]
  folder = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                  f"{machine['backend']}-{machine['device_kind']}")
  path = Path(out) if out else Path(results_dir) / folder / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  fileio.write_json_atomic(path, record)
  print(f"wrote {path}")
  return path


def lscpu_model() -> str | None:
  """`lscpu`'s "Model name" ("AMD EPYC", "Intel(R) Xeon(R) ..."): the CPU kind
  a record names, since times and ratios differ between kinds; None where
  lscpu is missing or says none."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  return next((line.split(":", 1)[1].strip() for line in out.splitlines()
               if line.startswith("Model name:")), None)


def machine_info() -> dict[str, object]:
  """Where a measurement came from: hardware, software and code version."""
  import flax  # pylint: disable=g-import-not-at-top
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent,
                            check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = None
  cpu_model = None
  if Path("/proc/cpuinfo").exists():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu_model = line.split(":", 1)[1].strip()
        break
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "cpu": cpu_model or platform.processor(),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "git_commit": commit,
  }
