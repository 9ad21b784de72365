"""Fuzzing the readers of user files with truncated, bit-flipped and random bytes.

Each reader is handed corrupted copies of a small valid file written here.
Every case must end in a valid result (a flipped pixel still parses; then
the result's invariants are checked) or in a `UserError` with a one-line
message, within a time limit, leaving the folder it read as it was. Any
other exception fails the test with the input hypothesis shrank it to.

Run with `-s` to see how many inputs each reader was given.
"""

import collections
import contextlib
import gzip
import io
import json
import logging
import re
import shutil
import signal
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import run_module, synthetic_split, toy_config, write_dataset
from hypothesis import HealthCheck, example, given, settings, strategies as st
from PIL import Image

from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import data as data_lib
from mnist_jax import outputs, predict, state as state_lib
from mnist_jax.errors import UserError
from mnist_jax.sources import idx
from mnist_jax.trained import load_trained

KINDS = ("truncated", "bit-flipped", "random")
SECONDS_PER_INPUT = 20  # A reader that takes longer hangs.


def _flip(valid: bytes, bits: list[int]) -> bytes:
  flipped = bytearray(valid)
  for bit in bits:
    flipped[bit // 8] ^= 1 << (bit % 8)
  return bytes(flipped)


def corrupted(valid: bytes) -> st.SearchStrategy:
  """(kind, bytes): `valid` cut short, with 1 to 3 bits flipped, or random bytes."""
  return st.one_of(
      st.integers(0, len(valid) - 1).map(lambda n: ("truncated", valid[:n])),
      st.lists(st.integers(0, 8 * len(valid) - 1), min_size=1, max_size=3,
               unique=True).map(
          lambda bits: ("bit-flipped", _flip(valid, bits))),
      st.binary(max_size=2 * len(valid)).map(lambda b: ("random", b)))


REFUSED = object()  # What read_or_refuse returns for a UserError.
_outcomes = collections.Counter()  # Of read_or_refuse, per fuzz().


def fuzz(reader: str, cases: st.SearchStrategy, check, max_examples: int,
         examples=()):
  """Runs `check(case)` on `examples` (regressions found by longer runs) and
  `max_examples` generated cases."""
  tried = collections.Counter()
  _outcomes.clear()

  def run(case):
    tried[case[0]] += 1
    check(case)

  run = given(cases)(run)
  for case in examples:
    run = example(case)(run)
  settings(max_examples=max_examples, deadline=None, derandomize=True,
           database=None, suppress_health_check=list(HealthCheck))(run)()
  print(f"\n{reader}: {sum(tried.values())} inputs "
        f"({', '.join(f'{tried[k]} {k}' for k in KINDS)}); reads: "
        f"{_outcomes['refused']} refused with a UserError, {_outcomes['read']} valid")
  assert all(tried[k] for k in KINDS), tried  # Each kind was tried.
  assert _outcomes["refused"], "no input was refused: is it fed corrupt bytes?"


class _Hang(Exception):
  pass


@contextlib.contextmanager
def _time_limit(seconds: int):
  def alarm(*_):
    raise _Hang(f"the reader took over {seconds} s")
  previous = signal.signal(signal.SIGALRM, alarm)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _snapshot(folder: Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def read_or_refuse(read, folder: Path):
  """read()'s result, or REFUSED after a one-line UserError that left `folder` as it was."""
  before = _snapshot(folder)
  try:
    with _time_limit(SECONDS_PER_INPUT):
      result = read()
  except UserError as e:
    message = str(e)
    assert message and "\n" not in message and "\r" not in message, message
    assert _snapshot(folder) == before, "a refused read changed its folder"
    _outcomes["refused"] += 1
    return REFUSED
  _outcomes["read"] += 1
  return result


# IDX gzip: `data.load` of a custom dataset, one of its four files corrupted,
# either as file bytes or as the IDX bytes inside a valid gzip stream.

def test_idx_reader(tmp_path):
  source = write_dataset(tmp_path / "valid" / "toy", *synthetic_split(6, 3, 0),
                         *synthetic_split(4, 3, 1))
  files = {name: (source / name).read_bytes() for name in idx.FILES}
  cases = st.tuples(st.sampled_from(idx.FILES), st.booleans()).flatmap(
      lambda f: corrupted(gzip.decompress(files[f[0]]) if f[1] else files[f[0]]
                          ).map(lambda c: (c[0], c[1], *f)))
  data_dir = tmp_path / "data"

  def check(case):
    _, payload, name, inside_gzip = case
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(source, data_dir / "toy")
    (data_dir / "toy" / name).write_bytes(
        gzip.compress(payload, mtime=0) if inside_gzip else payload)
    dataset = read_or_refuse(lambda: data_lib.load("toy", data_dir), data_dir)
    if dataset is not REFUSED:
      for images, labels in ((dataset.train_images, dataset.train_labels),
                             (dataset.test_images, dataset.test_labels)):
        # Any image size is a dataset now; one size for both splits, gray.
        assert images.dtype == np.uint8 and images.shape[1:] == dataset.image_shape
        assert images.shape[-1] == 1 and min(images.shape[1:3]) >= 1
        assert labels.dtype == np.int32 and labels.shape == images.shape[:1]
        assert len(labels) and 0 <= labels.min() and labels.max() < dataset.num_classes

  fuzz("IDX gzip (data.load)", cases, check, max_examples=300)


# The dataset shipped inside the package (mnist160.npz), read on every
# mnist160 run: a damaged install.

def test_packaged_dataset_reader(tmp_path, monkeypatch):
  valid = (data_lib.PACKAGED_DIR / "mnist160.npz").read_bytes()
  folder = tmp_path / "package"
  folder.mkdir()
  monkeypatch.setattr(data_lib, "PACKAGED_DIR", folder)

  def check(case):
    (folder / "mnist160.npz").write_bytes(case[1])
    dataset = read_or_refuse(lambda: data_lib.load("mnist160", tmp_path / "none"), folder)
    assert dataset is REFUSED  # Every changed byte fails its sha256.

  fuzz("packaged mnist160.npz (data.load)", corrupted(valid), check, max_examples=60)
  assert not (tmp_path / "none").exists()


# Image files for `predict`: PNG (gray, RGBA, palette), JPEG, GIF and BMP.

def _image_files() -> dict[str, bytes]:
  pixels = np.zeros((28, 28), np.uint8)
  pixels[6:22, 12:16] = 255  # A "1".
  gray = Image.fromarray(pixels)
  rgba = Image.merge("RGBA", [gray, gray, gray, gray])
  encoded = {}
  for name, image in (("gray.png", gray), ("rgba.png", rgba),
                      ("palette.png", gray.convert("P")), ("gray.jpg", gray),
                      ("gray.gif", gray), ("gray.bmp", gray)):
    out = io.BytesIO()
    image.save(out, name.split(".")[1].replace("jpg", "jpeg"))
    encoded[name] = out.getvalue()
  return encoded


def image_regressions(files: dict[str, bytes]) -> list[tuple]:
  """Flips that longer runs found escaping as other exceptions before the fix."""
  def flip(name, bit):
    return ("bit-flipped", _flip(files[name], [bit]), "digit")
  return [flip("gray.bmp", 8 * 20 + 7),  # Width 2**23 + 28: DecompressionBombError.
          flip("gray.bmp", 8 * 47 + 4),  # 4352 palette colours: ValueError.
          flip("palette.png", 8 * 11 + 2),  # IHDR of 9 bytes: ValueError.
          flip("gray.png", 8 * 36 + 3)]  # IDAT 8 bytes too long: SyntaxError.


def test_predict_image_reader(tmp_path):
  files = _image_files()
  cases = st.tuples(st.sampled_from(list(files.values())),
                    st.sampled_from(["digit", "whole"])).flatmap(
      lambda f: corrupted(f[0]).map(lambda c: (*c, f[1])))
  folder = tmp_path / "images"
  folder.mkdir()

  def check(case):
    _, payload, fit = case
    path = folder / "digit.png"
    path.write_bytes(payload)
    image = read_or_refuse(lambda: predict.to_mnist_format(path, "auto", fit), folder)
    if image is not REFUSED:
      assert image.dtype == np.uint8 and image.shape == (28, 28)
      assert image.max() == 255  # Scaled to the datasets' full range.

  fuzz("image (predict.to_mnist_format)", cases, check, max_examples=400,
       examples=image_regressions(files))


# metrics.jsonl: read on resume (which rewrites it to the checkpoint's epochs)
# and by evaluate and compare.

def _metrics_file(members: int) -> bytes:
  records = []
  for epoch in (1, 2, 3):
    record = {"epoch": epoch, "train_loss": 1.5 / epoch, "train_accuracy": 0.5 + 0.1 * epoch,
              "test_loss": 1.25 / epoch, "test_accuracy": 0.55 + 0.1 * epoch}
    if members > 1:
      record["members"] = [{"seed": k, "test_loss": 1.0 + k, "test_accuracy": 0.5 + 0.01 * k}
                           for k in range(members)]
      record["ensembles"] = [{"seeds": list(range(members)), "test_loss": 0.9,
                              "test_accuracy": 0.6}]
    record.update({"learning_rate": 0.001, "images_per_sec": 12345.6,
                   "epoch_seconds": 0.5, "eval_seconds": 0.1})
    records.append(json.dumps(record) + "\n")
  return "".join(records).encode()


# What summary.json, the plots and the logs read from every record.
REQUIRED_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                    "learning_rate", "epoch_seconds")


def _check_history(history, up_to_epoch):
  epochs = [r["epoch"] for r in history]
  assert all(type(e) is int for e in epochs) and epochs == sorted(set(epochs))
  assert all(1 <= e <= up_to_epoch for e in epochs)
  for record in history:
    for key in REQUIRED_METRICS:
      assert type(record[key]) in (int, float), (key, record)
    for model in (*record.get("members", ()), *record.get("ensembles", ())):
      assert type(model["test_accuracy"]) in (int, float), record
      assert type(model["test_loss"]) in (int, float), record


def metrics_regressions(valid: bytes) -> list[tuple]:
  """Inputs that escaped as other exceptions, or read as bad records, before the fix."""
  def flip(old, new, up_to_epoch):  # `new` is `old` with one bit flipped.
    return ("bit-flipped", valid.replace(old, new, 1), up_to_epoch)
  return [("random", b"\x80", None),  # UnicodeDecodeError.
          ("random", b"2", 3),  # TypeError: a number is not a record.
          flip(b'"epoch": 2', b'"epoci": 2', 3),  # KeyError.
          flip(b'"test_accuracy"', b'"test_accuracq"', None),  # Read without it.
          flip(b'"epoch": 1', b'"epoch": 0', None)]  # Read as epoch 0.


def test_metrics_reader(tmp_path):
  files = [_metrics_file(1), _metrics_file(2)]
  cases = st.tuples(st.sampled_from(files), st.sampled_from([None, 2, 3])).flatmap(
      lambda f: corrupted(f[0]).map(lambda c: (*c, f[1])))
  originals = {file: [json.loads(line) for line in file.splitlines()] for file in files}
  workdir = tmp_path / "run"
  workdir.mkdir()
  path = workdir / "metrics.jsonl"

  def check(case):
    kind, payload, up_to_epoch = case
    path.write_bytes(payload)
    if up_to_epoch is None:  # evaluate, compare
      history = read_or_refuse(lambda: outputs.read_metrics(workdir), workdir)
    else:  # resume, which rewrites the file
      history = read_or_refuse(lambda: outputs.resume_metrics(workdir, up_to_epoch),
                               workdir)
      if history is not REFUSED:
        assert [p.name for p in workdir.iterdir()] == ["metrics.jsonl"]
        assert outputs.read_metrics(workdir) == history
    if history is not REFUSED:
      _check_history(history, up_to_epoch or 3)
    if kind == "truncated":  # As a kill leaves it: the whole lines are read.
      file = next(f for f in files if f.startswith(payload))
      *whole, rest = payload.split(b"\n")
      kept = len(whole) + (rest == file.split(b"\n")[len(whole)])
      assert history == [r for r in originals[file][:kept]
                         if up_to_epoch is None or r["epoch"] <= up_to_epoch]

  fuzz("metrics.jsonl (read_metrics, resume)", cases, check, max_examples=400,
       examples=metrics_regressions(files[1]))


def test_a_corrupt_metrics_line_is_refused_not_dropped_with_the_ones_after(tmp_path):
  valid = _metrics_file(1).decode()
  (tmp_path / "metrics.jsonl").write_text(valid.replace('"epoch": 2,', '"epoch": 2;'))
  with pytest.raises(UserError, match=r"metrics.jsonl is corrupt: line 2 is not JSON"):
    outputs.resume_metrics(tmp_path, 3)
  assert (tmp_path / "metrics.jsonl").read_text() == valid.replace('"epoch": 2,', '"epoch": 2;')


# Checkpoints: the JSON record mnist_jax saves beside the state, and orbax's
# own metadata, read by evaluate/predict/export (load_trained) and on resume.

CHECKPOINT_FILES = ("meta/metadata", "_CHECKPOINT_METADATA", "state/_METADATA")


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A workdir with the checkpoint of epoch 1 of a tiny untrained MLP."""
  workdir = tmp_path_factory.mktemp("fuzz_checkpoint") / "run"
  config = toy_config(workdir.parent / "data", batch_size=16)
  state = state_lib.build(config, 3, 1).state
  checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints")
  checkpoints.save(1, state, {"config": config.to_dict(), "num_classes": 3,
                              "class_names": ["a", "b", "c"], "epoch": 1})
  checkpoints.wait()
  checkpoints.close()
  return workdir, config, state


def checkpoint_regressions(files: dict[str, bytes]) -> list[tuple]:
  """Flips that escaped as other exceptions, or loaded a changed config, before the fix."""
  def flip(name, *changes):  # Each change flips one bit.
    payload = files[name]
    for old, new in changes:
      payload = payload.replace(old, new, 1)
    return ("bit-flipped", payload, name)
  return [flip("meta/metadata", (b'"adam_eps"', b'"qdam_eps"')),  # Loaded, default eps.
          flip("meta/metadata", (b'"config"', b'"confkg"')),  # KeyError.
          flip("meta/metadata", (b'"dataset"', b'"datasEt"')),  # AttributeError.
          flip("_CHECKPOINT_METADATA", (b"item_handlers", b"htem_handlErs"),
               (b"init_timestamp", b"init_thmestamp"))]  # ValueError from orbax.


def test_checkpoint_reader(saved_run, tmp_path):
  source, config, state = saved_run
  files = {name: (source / "checkpoints" / "1" / name).read_bytes()
           for name in CHECKPOINT_FILES}
  cases = st.sampled_from(CHECKPOINT_FILES).flatmap(
      lambda name: corrupted(files[name]).map(lambda c: (*c, name)))
  shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
  workdir = tmp_path / "run"

  def check(case):
    _, payload, name = case
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(source, workdir)
    (workdir / "checkpoints" / "1" / name).write_bytes(payload)
    trained = read_or_refuse(lambda: load_trained(workdir), workdir)
    if trained is not REFUSED:  # evaluate, predict, export
      assert trained.epoch == 1 and trained.class_names == ("a", "b", "c")
      assert trained.config.to_dict() == config.to_dict()
      assert jax.tree.map(lambda x: (x.shape, x.dtype), trained.state) == shapes

    def resume():
      checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints")
      try:
        return checkpoints.restore_latest(state, config, 3)
      finally:
        checkpoints.close()
    restored = read_or_refuse(resume, workdir)
    if restored is not REFUSED:  # None would start over, past a corrupt checkpoint.
      assert restored is not None and restored[1]["epoch"] == 1
      assert jax.tree.map(lambda x: (x.shape, x.dtype), restored[0]) == shapes

  fuzz("checkpoint (load_trained, resume)", cases, check, max_examples=60,
       examples=checkpoint_regressions(files))


def test_a_checkpoint_record_from_before_the_sha256_still_loads(saved_run, tmp_path):
  source, config, _ = saved_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  record = workdir / "checkpoints" / "1" / "meta" / "metadata"
  meta = json.loads(record.read_text())
  del meta["sha256"]
  record.write_text(json.dumps(meta))
  assert load_trained(workdir).config.to_dict() == config.to_dict()
  meta["confkg"] = meta.pop("config")  # Without a sha256, only the keys are checked.
  record.write_text(json.dumps(meta))
  with pytest.raises(UserError, match=r"epoch 1: ValueError: the JSON record has keys"):
    load_trained(workdir)


def test_orbax_s_complaints_about_its_own_metadata_are_not_printed(saved_run, tmp_path,
                                                                   caplog):
  """orbax logs an ERROR for a _CHECKPOINT_METADATA it cannot parse, then goes
  on without it; commands print only their result, or their one-line error."""
  source, _, _ = saved_run
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  unparsable = workdir / "checkpoints" / "1" / "_CHECKPOINT_METADATA"
  unparsable.write_bytes(unparsable.read_bytes()[:40])
  caplog.set_level(logging.WARNING)  # What commands show of a library.
  assert load_trained(workdir).epoch == 1  # orbax needs none of it, nor do we.
  # Nor its notes that a read-only manager is read-only (which a notebook's
  # mnist_jax.load, without the command line's filter, would print).
  assert [r.getMessage() for r in caplog.records if "orbax" in r.pathname] == []
  # Only while mnist_jax opens checkpoints: orbax's own read, later, still logs.
  from orbax.checkpoint._src.metadata import checkpoint as orbax_metadata
  assert orbax_metadata.metadata_store(enable_write=False).read(unparsable) is None
  assert caplog.records[-1].getMessage().startswith("Failed to json parse Metadata file")

  # A second checkpoint, whose metadata orbax refuses: the command's whole
  # stderr is mnist_jax's one line.
  shutil.copytree(workdir / "checkpoints" / "1", workdir / "checkpoints" / "2")
  refused = (source / "checkpoints" / "1" / "_CHECKPOINT_METADATA").read_bytes()
  (workdir / "checkpoints" / "2" / "_CHECKPOINT_METADATA").write_bytes(
      refused.replace(b"item_handlers", b"htem_handlErs").replace(
          b"init_timestamp", b"init_thmestamp"))
  result = run_module("mnist_jax", "evaluate", "--workdir=run", cwd=tmp_path)
  assert result.returncode == 1, result.stderr
  assert re.fullmatch(
      r"error: the checkpoints in \S+ cannot be opened: one's metadata is corrupt "
      r"\(ValueError: [^\n]*\); move that folder away to train from scratch, or "
      r"use another --workdir\n", result.stderr), result.stderr
