"""A user's own model and test-time view (plugins.py) after training: the
checkpoint's record of them, resume, evaluate, predict and export from any
working directory, init_from and freeze, --show_config and TensorBoard.

The plugins live in the test's own temporary folder, never in the package.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tolerances
from conftest import REPO, checkpoint_params, run_module, synthetic_split, toy_config
from conftest import write_dataset
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

import mnist_jax
from mnist_jax import data, training
from mnist_jax.errors import UserError
from mnist_jax.trained import load_trained

PLUGIN = textwrap.dedent('''\
    import jax.numpy as jnp
    from flax import nnx


    class TinyMLP(nnx.Module):
      classifier = "out"

      def __init__(self, num_classes, *, rngs, input_shape, width=1.0):
        h, w, c = input_shape
        self.hidden = nnx.Linear(h * w * c, int(32 * width), rngs=rngs)
        self.out = nnx.Linear(int(32 * width), num_classes, rngs=rngs)

      def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x.reshape(x.shape[0], -1))))


    class Headless(TinyMLP):
      classifier = None


    def shifted(images_BHWC):
      return jnp.roll(images_BHWC, 1, axis=2)
    ''')
CONFIG = str(REPO / "configs" / "mnist.py")
# The run's fields on the command line: mnist160, one epoch, the plugins.
FLAGS = ("--config.dataset=mnist160", "--config.batch_size=32",
         "--config.plots=False", "--config.model=mine.py:TinyMLP",
         "--config.tta=mine.py:shifted")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(the plugin's folder, a workdir trained from there for one epoch)."""
  src = tmp_path_factory.mktemp("plugin_src")
  (src / "mine.py").write_text(PLUGIN)
  workdir = tmp_path_factory.mktemp("plugin_run") / "run"
  result = run_module("mnist_jax.main", f"--config={CONFIG}", *FLAGS,
                      "--config.num_epochs=1", f"--workdir={workdir}", cwd=src)
  assert result.returncode == 0, result.stderr[-3000:]
  return src, workdir


def _one_line_error(result, status: int) -> str:
  assert result.returncode == status, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  return result.stderr.strip().splitlines()[-1]


def test_the_checkpoint_records_each_plugins_spec_path_and_source(run):
  src, workdir = run
  meta = json.loads((workdir / "checkpoints" / "1" / "meta" / "metadata").read_text())
  sha = hashlib.sha256((src / "mine.py").read_bytes()).hexdigest()
  where = {"path": str((src / "mine.py").resolve()), "sha256": sha}
  assert meta["plugins"] == {"model": {"spec": "mine.py:TinyMLP", **where},
                             "tta[0]": {"spec": "mine.py:shifted", **where}}


def test_evaluate_predict_and_export_from_another_directory(run, tmp_path):
  src, workdir = run
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  result = run_module("mnist_jax.evaluate", f"--workdir={workdir}", cwd=elsewhere)
  assert result.returncode == 0, result.stderr[-3000:]
  # The same model and view as training's evaluation: the same accuracy.
  summary = json.loads((workdir / "summary.json").read_text())
  assert json.loads((workdir / "eval.json").read_text())["test_accuracy"] == (
      summary["final_test_accuracy"])

  images_NHW = data.load("mnist160").test_images[:3, ..., 0]
  for i, image in enumerate(images_NHW):
    Image.fromarray(image).save(elsewhere / f"digit{i}.png")
  result = run_module("mnist_jax.predict", f"--workdir={workdir}", "--fit=whole",
                      "digit0.png", "digit1.png", cwd=elsewhere)
  assert result.returncode == 0, result.stderr[-3000:]
  assert [l.split()[0] for l in result.stdout.splitlines()] == [
      "digit0.png", "digit1.png"]

  out = elsewhere / "model.jax_export"
  result = run_module("mnist_jax.export", f"--workdir={workdir}", f"--out={out}",
                      "--platforms=cpu", cwd=elsewhere)
  assert result.returncode == 0, result.stderr[-3000:]
  trained = load_trained(workdir)  # From the repository: by the recorded path.
  expected = np.asarray(trained.logits_fn(trained.state, images_NHW[..., None]))
  np.save(elsewhere / "images.npy", images_NHW)
  (src / "mine.py").rename(src / "mine.py.away")
  try:
    # The exported module needs neither the plugin nor this package.
    subprocess.run([sys.executable, "-c", textwrap.dedent("""\
        import jax, numpy as np
        exported = jax.export.deserialize(bytearray(open("model.jax_export", "rb").read()))
        np.save("logits.npy", np.asarray(exported.call(np.load("images.npy"))))
        """)], cwd=elsewhere, check=True, timeout=300)
    # evaluate, though, imports it: one line naming the spec and the fix.
    line = _one_line_error(run_module("mnist_jax.evaluate", f"--workdir={workdir}",
                                      cwd=elsewhere), 2)
  finally:
    (src / "mine.py.away").rename(src / "mine.py")
  assert line == (f"error: model='mine.py:TinyMLP': its file was {src / 'mine.py'}, "
                  f"which no longer exists, and there is no mine.py in {elsewhere}; "
                  f"put it back, or run from the folder that holds mine.py")
  logits = np.load(elsewhere / "logits.npy")
  tolerances.assert_within(logits, expected,
                           tolerances.logits(expected, trained.state.params))


def test_a_changed_plugin_source_is_one_warning_naming_the_file(run, tmp_path):
  src, workdir = run
  original = (src / "mine.py").read_bytes()
  (src / "mine.py").write_bytes(original + b"# edited since\n")
  try:
    result = run_module("mnist_jax.evaluate", f"--workdir={workdir}", cwd=tmp_path)
  finally:
    (src / "mine.py").write_bytes(original)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [l for l in result.stderr.splitlines() if "has changed" in l]
  assert len(warnings) == 1 and warnings[0].endswith(
      f"model='mine.py:TinyMLP': {src / 'mine.py'} has changed since the "
      f"checkpoint was saved; using the file as it is now")


def test_resume_from_another_directory(run, tmp_path):
  _, source = run
  workdir = tmp_path / "copy"
  shutil.copytree(source, workdir)
  # Neither this folder nor the config's (configs/) holds mine.py.
  result = run_module("mnist_jax.main", f"--config={CONFIG}", *FLAGS,
                      "--config.num_epochs=2", f"--workdir={workdir}", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resuming from the checkpoint of epoch 1" in result.stderr
  epochs = [json.loads(l)["epoch"]
            for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2]


def _notebook_class(monkeypatch, where: str):
  """TinyMLP as a notebook defines it ("main": in `__main__`) or as a
  function's body does ("local")."""
  if where == "main":
    namespace = {"__name__": "__main__"}
    exec(PLUGIN, namespace)  # pylint: disable=exec-used
    monkeypatch.setattr(sys.modules["__main__"], "TinyMLP", namespace["TinyMLP"],
                        raising=False)
    return namespace["TinyMLP"]
  namespace = {"__name__": __name__}
  exec(PLUGIN, namespace)  # pylint: disable=exec-used

  class TinyMLP(namespace["TinyMLP"]):  # pylint: disable=redefined-outer-name
    pass
  return TinyMLP


@pytest.mark.parametrize("where, spec", [("main", "__main__:TinyMLP"),
                                         ("local", f"{__name__}:_notebook_class.TinyMLP@")])
def test_a_notebooks_model_in_a_later_evaluate_is_one_line(tmp_path, monkeypatch,
                                                           where, spec):
  workdir = tmp_path / "run"
  mnist_jax.train(CONFIG, workdir, dataset="mnist160", num_epochs=1, batch_size=32,
                  plots=False, model=_notebook_class(monkeypatch, where))
  meta = json.loads((workdir / "checkpoints" / "1" / "meta" / "metadata").read_text())
  recorded = meta["plugins"]["model"]["spec"]
  assert recorded.startswith(spec)
  line = _one_line_error(run_module("mnist_jax.evaluate", f"--workdir={workdir}",
                                    cwd=tmp_path), 2)
  assert line == (f"error: model={recorded!r} was defined in a notebook, script or "
                  f"function of the process that trained it, and exists only there; "
                  f"load it in that notebook (mnist_jax.load), or move TinyMLP to a "
                  f"file and train with model='file.py:TinyMLP'")
  assert not (workdir / "eval.json").exists()


@pytest.fixture
def three_classes(tmp_path):
  data_dir = tmp_path / "data"
  write_dataset(data_dir / "three", *synthetic_split(96, 3, 5),
                *synthetic_split(30, 3, 6))
  return data_dir


def test_init_from_other_classes_with_freeze_keeps_a_plugins_features(
    run, three_classes, tmp_path, monkeypatch):
  src, source = run
  config = toy_config(three_classes, dataset="three", model="mine.py:TinyMLP",
                      num_epochs=1, init_from=str(source), freeze="features")
  monkeypatch.chdir(src)
  training.train_and_evaluate(config, tmp_path / "probe")
  before = checkpoint_params(source / "checkpoints" / "1" / "state")
  after = checkpoint_params(tmp_path / "probe" / "checkpoints" / "1" / "state")
  # Leaves in order: hidden (bias, kernel), out (bias, kernel).
  for old, new in zip(before[:2], after[:2], strict=True):
    np.testing.assert_array_equal(old, new)  # The source's features, kept.
  assert after[3].shape == (before[3].shape[0], 3)  # A head for 3 classes...
  assert not np.array_equal(after[2], np.zeros_like(after[2]))  # ...that trained.


@pytest.mark.parametrize("freeze, message", [
    ("features", "config.freeze=features: model 'mine.py:Headless' names no "
                 "classifier; declare classifier = '<its last layer's attribute>' "
                 "on the class"),
    ("none", "config.init_from={source}: 10 classes there, 3 here, so its "
             "classifier starts afresh, but model 'mine.py:Headless' names no "
             "classifier; declare classifier = '<its last layer's attribute>' on "
             "the class"),
])
def test_a_plugin_without_a_classifier_says_so(run, three_classes, tmp_path,
                                               monkeypatch, freeze, message):
  src, source = run
  config = toy_config(three_classes, dataset="three", model="mine.py:Headless",
                      num_epochs=1, init_from=str(source), freeze=freeze)
  monkeypatch.chdir(src)
  with pytest.raises(UserError) as raised:
    training.train_and_evaluate(config, tmp_path / "headless")
  assert str(raised.value) == message.format(source=source)
  assert not list((tmp_path / "headless").glob("checkpoints/[0-9]*"))


def test_show_config_and_tensorboard_name_the_plugins(run):
  src, workdir = run
  result = run_module("mnist_jax.main", f"--config={CONFIG}", *FLAGS,
                      "--show_config", cwd=src)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  at = lines.index("model = 'mine.py:TinyMLP'  (default 'cnn')")
  assert lines[at + 1] == f"    your own mine.py:TinyMLP: {src / 'mine.py'}"
  assert f"    your own mine.py:shifted: {src / 'mine.py'}" in lines

  accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard" / "hparams"))
  accumulator.Reload()
  content = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
  start = hparams_metadata.parse_session_start_info_plugin_data(
      content[hparams_metadata.SESSION_START_INFO_TAG])
  assert start.hparams["model"].string_value == "mine.py:TinyMLP"
  assert start.hparams["tta"].string_value == "mine.py:shifted"
