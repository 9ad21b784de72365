"""A fresh install as a user meets it: every documented console command, run
end to end through the `mnist-jax` script, offline and with no data folder
(mnist160 ships inside the package), printing only what it means to."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import REPO, toy_config
from PIL import Image
import tolerances

from configs import default
from mnist_jax import config as config_lib
from mnist_jax import config_reference, data, fields, training
from mnist_jax.errors import UserError

SCRIPT = Path(sys.executable).parent / "mnist-jax"
# Each command's own flags, all that its --help lists.
OWN_FLAGS = {
    "train": {"config", "workdir", "show_config"},
    "evaluate": {"workdir", "member", "checkpoint", "data_dir", "ema", "plots"},
    "predict": {"workdir", "member", "checkpoint", "invert", "fit", "top", "out"},
    "export": {"workdir", "member", "checkpoint", "out", "platforms"},
    "compare": {"seeds", "workdir", "override", "seeds_as", "tune"},
}
# What a training run logs, each line after its time stamp.
TRAIN_LINES = ("backend cpu", "config: ", "mnist160: 80 train / 80 test images",
               "each epoch: ", "compiled in ", "epoch 1/1 ", "final test accuracy ")


def _env(tmp: Path) -> dict[str, str]:
  """No data folder, and a proxy nobody listens on: a download would fail."""
  empty = tmp / "no_data"
  empty.mkdir(exist_ok=True)
  return {**os.environ, "PYTHONPATH": str(REPO), "MNIST_JAX_DATA": str(empty),
          "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def _command(*args) -> list[str]:
  """`mnist-jax ARGS`: the installed script, else `python -m mnist_jax`."""
  if not SCRIPT.exists() and os.environ.get("CI"):
    pytest.fail("pip install -e . should have installed the mnist-jax script")
  head = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "mnist_jax"]
  return [*head, *map(str, args)]


def mnist_jax(tmp: Path, *args) -> subprocess.CompletedProcess:
  result = subprocess.run(_command(*args), cwd=tmp, env=_env(tmp),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return result


def logged(stderr: str, allowed: tuple[str, ...]) -> list[str]:
  """The log lines without their time stamps; fails on any line that is
  not one of `allowed` (a library's chatter, a warning, a traceback)."""
  messages = []
  for line in stderr.splitlines():
    match = re.fullmatch(r"\d\d:\d\d:\d\d (.*)", line)
    assert match and match.group(1).startswith(allowed), f"unexpected line: {line!r}"
    messages.append(match.group(1))
  return messages


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
  """`mnist-jax train --config=configs/mnist160.py`, 1 epoch, offline."""
  tmp = tmp_path_factory.mktemp("console")
  result = mnist_jax(tmp, "train", f"--config={REPO}/configs/mnist160.py",
                     "--config.num_epochs=1", "--config.plots=False",
                     "--workdir=run")
  assert result.stdout == ""
  messages = logged(result.stderr, TRAIN_LINES)
  assert [m.split(" ")[0] for m in messages] == [l.split(" ")[0] for l in TRAIN_LINES]
  return tmp


def test_evaluate_prints_the_run_s_accuracy(run):
  result = mnist_jax(run, "evaluate", "--workdir=run")
  summary = json.loads((run / "run" / "summary.json").read_text())
  lines = result.stdout.splitlines()
  assert lines[0] == "mnist160, checkpoint of epoch 1: 80 test images"
  assert f"accuracy {100 * summary['final_test_accuracy']:.2f}%" in lines[1]
  assert "confusion matrix (rows: true, columns: predicted):" in lines
  # Which checkpoint: the run had no validation split, so its newest.
  assert logged(result.stderr, ("wrote ", "the checkpoint ")) == [
      "the checkpoint of epoch 1 (the newest)", "wrote run/eval.json"]


def test_export_then_predict_agree_on_an_image(run):
  exported = mnist_jax(run, "export", "--workdir=run")
  size = (run / "run" / "model.jax_export").stat().st_size
  assert exported.stdout == (f"wrote run/model.jax_export ({size:,} bytes) and "
                             f"run/model.jax_export.json\n")
  assert logged(exported.stderr, ("exported ", "the checkpoint ")) == [
      "the checkpoint of epoch 1 (the newest)", "exported the checkpoint of epoch 1"]

  image = data.load("mnist160").test_images[0, ..., 0]
  Image.fromarray(image).save(run / "digit.png")
  predicted = mnist_jax(run, "predict", "--workdir=run", "--top=10", "digit.png")
  # Which checkpoint it used; not even orbax's read-only notes.
  assert logged(predicted.stderr, ("the checkpoint ",)) == [
      "the checkpoint of epoch 1 (the newest)"]
  path, *ranked = predicted.stdout.rstrip("\n").split("\t")
  assert path == "digit.png" and len(ranked) == 10
  printed = {name: float(p.rstrip("%")) for name, p in (r.split(" ") for r in ranked)}
  # The exported model, fed the image the way predict frames it, gives the
  # same probabilities (to the printed 0.1%).
  from mnist_jax.predict import to_mnist_format  # pylint: disable=g-import-not-at-top
  from mnist_jax.trained import load_trained  # pylint: disable=g-import-not-at-top
  model = jax.export.deserialize(bytearray((run / "run" / "model.jax_export").read_bytes()))
  framed = to_mnist_format(run / "digit.png", "auto", "digit")
  logits = np.asarray(model.call(framed[None]))
  probabilities = np.asarray(jax.nn.softmax(logits))
  # Printed to 0.1% (so off by half of it), from predict's own program
  # (tolerances.probabilities, in %).
  slack = 0.05 + 100 * tolerances.probabilities(probabilities, tolerances.logits(
      logits, load_trained(run / "run").state.params))[0]
  for k, p in enumerate(probabilities[0]):
    assert abs(printed[str(k)] - 100 * p) <= slack[k]
  assert ranked[0].split(" ")[0] == str(int(np.argmax(probabilities)))
  # --verbosity=1 asks for the libraries' lines too.
  verbose = mnist_jax(run, "predict", "--workdir=run", "--verbosity=1", "digit.png")
  assert "Restoring checkpoint from" in verbose.stderr  # orbax's INFO.


def test_compare_prints_its_table(run):
  (run / "mlp160.py").write_text(
      "from configs import mnist160\n\n\ndef get_config():\n"
      "  config = mnist160.get_config()\n  config.model = 'mlp'\n  return config\n")
  result = mnist_jax(run, "compare", f"{REPO}/configs/mnist160.py", "mlp160.py",
                     "--seeds=1", "--override=num_epochs=1", "--override=plots=False",
                     "--workdir=compared")
  table = (run / "compared" / "comparison-mnist160-vs-mlp160.md").read_text()
  assert result.stdout == table
  rows = [l for l in table.splitlines() if l.startswith("| mnist160 ") or l.startswith("| mlp160 ")]
  assert [r.split(" | ")[2] for r in rows] == ["cnn", "mlp"]
  messages = logged(result.stderr, ("comparing: ", "wrote ", *TRAIN_LINES,
                                    "Selection and ranking were on the TEST set",
                                    "Warning: only 1 seed(s)"))
  assert any(m.startswith("Selection and ranking were on the TEST set") for m in messages)
  assert [m for m in messages if m.startswith("comparing")] == [
      "comparing: mnist160, seed0 (run 1 of 1, one per seed), in compared/mnist160/seed0",
      "comparing: mlp160, seed0 (run 1 of 1, one per seed), in compared/mlp160/seed0"]
  assert messages[-1] == "wrote compared/comparison-mnist160-vs-mlp160.{md,json,png}"
  # Its runs start JAX as train does: mnist160's CNN at batch 16 over the
  # virtual CPU devices train picks, not over the 1 that JAX would start
  # with had compare asked for the backend first (to choose --seeds_as).
  from mnist_jax import runtime  # pylint: disable=g-import-not-at-top
  summary = json.loads((run / "compared" / "mnist160" / "seed0" / "summary.json").read_text())
  assert summary["device_count"] == runtime.auto_cpu_devices(16, len(os.sched_getaffinity(0)))


def test_help_of_each_command_lists_its_own_flags(tmp_path):
  procs = {c: subprocess.Popen(_command(c, "--help"), cwd=tmp_path, env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for c in OWN_FLAGS}
  outputs = {}
  for command, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    outputs[command] = stdout
    assert proc.returncode == 0 and stderr == "", stderr
    assert stdout.startswith(f"usage: mnist-jax {command} [flags]\n")
    listed = set(re.findall(r"^  --(\w+):", stdout, re.MULTILINE))
    assert listed == OWN_FLAGS[command]  # Not JAX's and absl's hundred.
    assert "--helpfull" in stdout
  # train's says how to see every config field, its default and meaning.
  assert "mnist-jax train --config=configs/mnist.py --show_config" in outputs["train"]


def test_show_config_prints_every_field_its_default_and_meaning(tmp_path):
  result = mnist_jax(tmp_path, "train", f"--config={REPO}/configs/mnist160.py",
                     "--config.num_epochs=3", "--show_config")
  lines = result.stdout.splitlines()
  assert "num_epochs = 3  (default 10)" in lines
  assert "dataset = 'mnist160'  (default 'mnist')" in lines
  assert "seed = 0  (default)" in lines
  assert lines[lines.index("num_epochs = 3  (default 10)") + 1] == "    epochs to train"
  shown = [l.split(" = ")[0] for l in lines if not l.startswith(" ")]
  assert sorted(shown) == sorted(config_lib.flat(default.get_config()))
  assert result.stderr == "" and not (tmp_path / "runs").exists()  # Nothing trained.


def test_docs_config_md_is_the_field_table_as_written():
  # Catches an edit of the table (a default, a meaning, a new field) without
  # `python -m mnist_jax.config_reference`, and a hand edit of the page.
  written = config_reference.PAGE.read_text()
  assert written == config_reference.page(), (
      "docs/config.md differs from mnist_jax/fields.py: run "
      "python -m mnist_jax.config_reference")
  rows = [l for l in written.splitlines() if l.startswith("| `")]
  defaults = config_lib.flat(config_lib.defaults())
  assert sorted(r.split("`")[1] for r in rows) == sorted(defaults)
  assert all(r.split("`")[3] == repr(defaults[r.split("`")[1]]) for r in rows)
  assert all(f.doc.strip() for f in fields.FIELDS), "fields without a meaning"
  assert "](docs/config.md)" in (REPO / "README.md").read_text()


def test_resuming_reports_only_the_fields_that_changed(synthetic_data, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=1), tmp_path)
  training.train_and_evaluate(toy_config(synthetic_data, num_epochs=2), tmp_path)
  resumed = [m for m in caplog.messages if m.startswith("resuming from")]
  assert len(resumed) == 1
  assert resumed[0].endswith("; changed fields: {'num_epochs': (1, 2)}")


def test_mnist160_ships_in_the_package_as_derived_from_mnist(shared_data, tmp_path,
                                                             monkeypatch):
  monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # Never download.
  shipped = data.load("mnist160", tmp_path)  # An empty data folder.
  assert list(tmp_path.iterdir()) == []  # Nothing downloaded or written.
  derived = data._class_slice(data.load("mnist", shared_data), "mnist160", 8)
  for field in ("train_images", "train_labels", "test_images", "test_labels"):
    np.testing.assert_array_equal(getattr(shipped, field), getattr(derived, field))
    assert getattr(shipped, field).dtype == getattr(derived, field).dtype
  assert shipped.class_names == derived.class_names
  # The file is what write_packaged makes from MNIST's files, byte for byte.
  assert data.write_packaged("mnist160", shared_data, tmp_path) == data.PACKAGED["mnist160"]


def test_a_damaged_packaged_file_is_a_one_line_error(tmp_path, monkeypatch):
  raw = bytearray((data.PACKAGED_DIR / "mnist160.npz").read_bytes())
  raw[len(raw) // 2] ^= 0x10
  (tmp_path / "mnist160.npz").write_bytes(bytes(raw))
  monkeypatch.setattr(data, "PACKAGED_DIR", tmp_path)
  with pytest.raises(UserError, match="does not match its sha256 checksum") as e:
    data.load("mnist160")
  assert "\n" not in str(e.value) and "reinstall mnist_jax" in str(e.value)
  (tmp_path / "mnist160.npz").unlink()
  with pytest.raises(UserError, match="cannot be read"):
    data.load("mnist160")
