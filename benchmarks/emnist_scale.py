"""EMNIST byclass at full size: load time, host and device memory, one epoch.

No EMNIST file is needed: the split is synthesized in EMNIST's own format
(`sources.emnist.write_emnist_files`: transposed, gzipped IDX) at NIST's
sizes, 697,932 training and 116,323 test images, from MNIST's 70,000 real
digit images repeated in order, with labels cycling over the 62 classes
(`i % 62`: arbitrary, so the accuracy means nothing; this measures scale) and
the real byclass mapping file. The files go in a temporary folder outside the
repo, deleted at the end. Then, each in a fresh process:
  - loading: `data.load("emnist_byclass", ...)` twice (read the gz IDX files,
    transpose, check), the two parts of the first load timed again alone,
    the arrays' bytes, and the process's RSS before and after each step with
    its peak during that step (getrusage, the mark reset before each step),
    then the run assembled as a training run's (`assembly.assemble`: its
    plan and initial state) and its data placed (`Run.placed`) on the mesh
    a training run makes (same device count): the bytes on device (sum of
    its leaves' nbytes, and of every device's shards) and `memory_stats()` where the backend reports it;
  - training: `training.train_and_evaluate` with `config.defaults()` (the cnn,
    batch 128), dataset emnist_byclass, 1 epoch, no plots, the compilation
    cache in the temporary folder (so compilation is a first run's): its
    summary, metrics.jsonl (eval_seconds) and peak RSS. The process picks its
    CPU device count as a user's run does.
The files were just written, so they are in the OS page cache: load times are
decompression and copies, not cold-disk reads.

Command (from the repo root):
  python benchmarks/emnist_scale.py --data_dir=../shared/datasets [--note="shared machine"]
writes benchmarks/results/<backend>-<device kind>/emnist-byclass-scale.json.
"""

import argparse
import dataclasses
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_args as ba
from mnist_jax import data, timing
from mnist_jax.errors import UserError
from mnist_jax.sources import emnist, idx

SPLIT = "byclass"
NUM_TRAIN, NUM_TEST = 697_932, 116_323  # NIST's byclass sizes.


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "datasets"),
                      help="holds emnist_mappings/emnist-byclass-mapping.txt, "
                      "and mnist/ (the four IDX files) for --pool_dataset=mnist")
  parser.add_argument("--pool_dataset", default="mnist",
                      help="the 28x28 grayscale images repeated (train, then "
                      "test), loaded by data.load; e.g. mnist160 for a quick check")
  parser.add_argument("--scale", type=ba.positive_float, default=1.0,
                      help="fraction of NIST's sizes to synthesize (a quick check)")
  parser.add_argument("--note", default="", help="e.g. that the machine was shared")
  parser.add_argument("--name", default="emnist-byclass-scale")
  parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
  # A child's stage: "load" or "train", on the synthetic files in --folder.
  parser.add_argument("--stage", help=argparse.SUPPRESS)
  parser.add_argument("--folder", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  mapping = Path(args.data_dir) / "emnist_mappings" / emnist.file_names(SPLIT)[4]
  if args.stage in (None, "write") and not mapping.is_file():
    parser.error(f"argument --data_dir: {mapping} does not exist; the real "
                 f"byclass mapping file is needed (NIST's gzip.zip has it)")
  # Every class trains (data.checked), in at least one batch of the run.
  from mnist_jax import config as config_lib
  need = max(emnist.SPLITS[SPLIT], config_lib.defaults().batch_size)
  if round(NUM_TRAIN * args.scale) < need or round(NUM_TEST * args.scale) < 1:
    parser.error(f"argument --scale: {args.scale} synthesizes fewer than "
                 f"{need} training images (every class, one batch); pass "
                 f"{need / NUM_TRAIN:.5f} or more")
  return args


def memory() -> dict:
  """The process's peak RSS (getrusage) and its RSS now, bytes.

  On Linux getrusage's peak is the larger of the address space's high-water
  mark, which `reset_peak()` restarts, and the peak of the process that
  started this one (carried across exec): so each stage runs in a child of
  a small parent, and a reading after `reset_peak()` is the peak since then.
  """
  current = None
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmRSS:"):
      current = int(line.split()[1]) * 1024
  # ru_maxrss is in KiB on Linux.
  return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "rss_bytes": current}


def reset_peak():
  """Restarts the high-water mark from the RSS now (Linux: clear_refs 5)."""
  try:
    Path("/proc/self/clear_refs").write_text("5")
  except OSError:
    pass


def synthesize(data_dir: Path, folder: Path, scale: float,
               pool_dataset: str = "mnist") -> dict:
  """Writes EMNIST byclass's five files into `folder`/emnist from the
  images of `pool_dataset` (MNIST's)."""
  source = data.load(pool_dataset, data_dir)
  if source.image_shape != (28, 28, 1):
    raise UserError(f"--pool_dataset={pool_dataset}: its images are "
                    f"{'x'.join(map(str, source.image_shape))}; EMNIST's are "
                    f"28x28x1 (grayscale)")
  pool = np.concatenate([source.train_images, source.test_images])[..., 0]
  num_train, num_test = round(NUM_TRAIN * scale), round(NUM_TEST * scale)
  # Test images continue where the training images stop in MNIST's 70,000.
  train_index = np.arange(num_train) % len(pool)
  test_index = (num_train + np.arange(num_test)) % len(pool)
  classes = emnist.SPLITS[SPLIT]
  mapping = (data_dir / "emnist_mappings" / emnist.file_names(SPLIT)[4]).read_text()
  start = time.perf_counter()
  emnist.write_emnist_files(folder / "emnist", SPLIT, pool[train_index],
                            (np.arange(num_train) % classes).astype(np.uint8),
                            pool[test_index],
                            (np.arange(num_test) % classes).astype(np.uint8),
                            mapping.splitlines())
  files = {name: (folder / "emnist" / name).stat().st_size
           for name in emnist.file_names(SPLIT)}
  return {"train_images": num_train, "test_images": num_test,
          "write_seconds": time.perf_counter() - start, "file_bytes": files,
          "source": f"{source.name}'s {len(source.train_images):,} + "
                    f"{len(source.test_images):,} images repeated in order; "
                    f"labels i % 62 (arbitrary)"}


def run_config(folder: Path):
  from mnist_jax import config as config_lib
  config = config_lib.defaults()
  config.dataset = f"emnist_{SPLIT}"
  config.data_dir = str(folder)
  config.num_epochs = 1
  config.plots = False
  # A first run's compilation, and nothing left in the user's cache.
  config.compilation_cache_dir = str(folder / "jax_cache")
  return config


def stage_load(folder: Path) -> dict:
  """Load twice, time the parts, place on device; in its own process, so
  that its peak RSS is the loading's."""
  import jax
  from mnist_jax import assembly, runtime
  config = run_config(folder)
  run = runtime.start(config)  # The device count a training run would use.
  machine = timing.machine_info()
  before = memory()
  reset_peak()
  load = lambda: data.load(config.dataset, config.data_dir)
  dataset, first_s = timing.timed(load)
  after_first = memory()
  reset_peak()
  second, second_s = timing.timed(load)
  assert (second.train_images == dataset.train_images).all()
  del second
  gc.collect()
  after_second = memory()  # Its peak: the first dataset held, and a second.
  reset_peak()

  # The first load's parts, again: reading the gz files, then the transpose.
  names = emnist.file_names(SPLIT)
  read = lambda: [idx.read_idx(folder / "emnist" / n, d)
                  for n, d in zip(names[:4], (3, 1, 3, 1))]
  raw, read_s = timing.timed(read)
  _, upright_s = timing.timed(lambda: (emnist.upright(SPLIT, raw[0], raw[1]),
                                       emnist.upright(SPLIT, raw[2], raw[3])))
  del raw, _
  gc.collect()

  arrays = {"train_images": dataset.train_images, "train_labels": dataset.train_labels,
            "test_images": dataset.test_images, "test_labels": dataset.test_labels}
  host = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "bytes": v.nbytes}
          for k, v in arrays.items()}
  host_total = sum(v.nbytes for v in arrays.values())

  # As a training run assembles it (its plan and initial state), unplaced.
  assembled = assembly.assemble(config, dataset, run, place=False)
  plan = assembled.plan
  before_place = memory()  # Its peak: the parts timed again.
  reset_peak()
  placed, place_s = timing.timed(lambda: jax.block_until_ready(
      assembled.placed().device_data))
  after_place = memory()
  leaves = jax.tree.leaves(placed)
  shards = [s for leaf in leaves for s in leaf.addressable_shards]
  per_device = {}
  for shard in shards:
    key = str(shard.device)
    per_device[key] = per_device.get(key, 0) + shard.data.nbytes
  stats = {}
  for device in jax.local_devices():
    reported = device.memory_stats()
    stats[str(device)] = reported if reported else (
        f"not reported by the {jax.default_backend()} backend")
  return {
      "machine": machine,
      "load": {"first_seconds": first_s, "second_seconds": second_s,
               "parts_timed_again": {"read_gz_idx_seconds": read_s,
                                     "transpose_seconds": upright_s}},
      "host": {"arrays": host, "arrays_bytes": host_total,
               "memory_before_load": before, "memory_after_first_load": after_first,
               "memory_after_second_load": after_second,
               "memory_before_place_data": before_place,
               "memory_after_place_data": after_place},
      "device": {"devices": len(run.mesh.devices.flat),
                 "eval_batch_size": plan.eval_batch_size,
                 "place_data_seconds": place_s,
                 "dataset_bytes": sum(leaf.nbytes for leaf in leaves),
                 "leaves": {f.name: getattr(placed, f.name).nbytes
                            for f in dataclasses.fields(placed)
                            if getattr(placed, f.name) is not None},
                 "bytes_on_all_devices": sum(per_device.values()),
                 "bytes_per_device": per_device,
                 "memory_stats": stats},
  }


def stage_train(folder: Path) -> dict:
  from mnist_jax import training
  workdir = folder / "run"
  _, wall_s = timing.timed(lambda: training.train_and_evaluate(run_config(folder), workdir))
  summary = json.loads((workdir / "summary.json").read_text())
  metrics = [json.loads(line) for line in
             (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
  return {"wall_seconds": wall_s, "summary": summary, "metrics": metrics,
          "memory_at_end": memory()}


def changed_files() -> list[str] | None:
  """Tracked files that differ from HEAD, taken before the run."""
  try:
    return subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    return None


def child(stage: str, folder: Path, extra=()) -> dict:
  """Runs `stage` in a fresh process (JAX picks its devices as a run does)."""
  out = folder / f"{stage}.json"
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  ba.run_child([sys.executable, __file__, f"--stage={stage}", f"--folder={folder}",
                *extra], cwd=ROOT, env=env)
  return json.loads(out.read_text())


def main(argv=None):
  args = parse_args(argv)
  if args.stage:
    folder = Path(args.folder)
    stages = {"write": lambda f: synthesize(Path(args.data_dir), f, args.scale,
                                            args.pool_dataset),
              "load": stage_load, "train": stage_train}
    result = stages[args.stage](folder)
    (folder / f"{args.stage}.json").write_text(json.dumps(result))
    return
  load_before = os.getloadavg()
  changed = changed_files()
  folder = Path(tempfile.mkdtemp(prefix="mnist_jax_emnist_scale_"))
  try:
    # Each stage in a process of its own: a child started while this process
    # held the synthetic arrays would inherit its peak RSS (memory()).
    synthetic = child("write", folder, [f"--data_dir={args.data_dir}",
                                        f"--scale={args.scale}",
                                        f"--pool_dataset={args.pool_dataset}"])
    loaded = child("load", folder)
    trained = child("train", folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  summary, metrics = trained["summary"], trained["metrics"]
  record = {
      "benchmark": "emnist_scale",
      "machine": loaded.pop("machine"),
      "command": "python benchmarks/emnist_scale.py " + " ".join(
          sys.argv[1:] if argv is None else argv),
      "note": args.note,
      # The code that ran: machine.git_commit plus these uncommitted changes.
      "git_changed_files": changed,
      "load_average_before_after": [load_before, os.getloadavg()],
      "synthetic": synthetic,
      **loaded,
      "train": {
          "config": "config.defaults(): cnn, batch 128, sgd; dataset "
                    "emnist_byclass, num_epochs 1, plots False, compilation "
                    "cache empty",
          "devices": summary["device_count"],
          "train_seconds": summary["train_seconds"],
          "images_per_sec": summary["images_per_sec"],
          "compile_seconds": summary["compile_seconds"],
          "seconds_to_first_step": summary["seconds_to_first_step"],
          "eval_seconds": [m["eval_seconds"] for m in metrics],
          "wall_seconds": trained["wall_seconds"],
          "memory_at_end": trained["memory_at_end"],
          "summary": summary, "metrics": metrics,
      },
  }
  mib = 1 << 20
  print(f"load {record['load']['first_seconds']:.1f} s, again "
        f"{record['load']['second_seconds']:.1f} s; arrays "
        f"{record['host']['arrays_bytes'] / mib:.0f} MiB, peak RSS "
        f"{record['host']['memory_after_first_load']['peak_rss_bytes'] / mib:.0f} MiB; "
        f"on device {record['device']['dataset_bytes'] / mib:.0f} MiB x "
        f"{record['device']['devices']}; epoch {summary['train_seconds']:.0f} s, "
        f"{summary['images_per_sec']:.0f} images/s")
  timing.write_record(record, args.name, results_dir=args.results_dir)


if __name__ == "__main__":
  ba.run_main(main)
