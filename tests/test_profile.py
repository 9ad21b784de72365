"""config.profile_steps: a JAX profiler trace of some training steps, through
the real path (configs/mnist160.py: 5 steps of 16 images an epoch)."""

import gzip
import json

import pytest
from conftest import REPO, run_module

from configs import mnist160
from mnist_jax import loop, training


def _run(workdir, **overrides):
  config = mnist160.get_config()
  config.num_epochs, config.plots = 2, False
  for key, value in overrides.items():
    config[key] = value
  training.train_and_evaluate(config, workdir)
  return [{k: v for k, v in json.loads(line).items()
           if "seconds" not in k and "per_sec" not in k}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _trace(workdir) -> tuple[list[int], int]:
  """(the step numbers of the trace's "train" rows in order, how many of
  them hold a call of the compiled chunk) of the run's one trace, read as
  Perfetto reads it."""
  runs = list((workdir / "profile" / "plugins" / "profile").iterdir())
  assert len(runs) == 1
  assert list(runs[0].glob("*.xplane.pb"))  # What TensorBoard's plugin reads.
  with gzip.open(runs[0] / "perfetto_trace.json.gz") as f:
    events = json.load(f)["traceEvents"]
  train_rows = sorted((e for e in events if e.get("name") == "train"),
                      key=lambda e: e["ts"])
  # The chunk's jitted call, as one device's trace names it (several
  # devices' also name its executable "jit_chunk").
  calls = [e["ts"] for e in events if e.get("name") == "PjitFunction(jit(chunk))"]
  return ([int(e["args"]["step_num"]) for e in train_rows],
          sum(any(r["ts"] <= t <= r["ts"] + r["dur"] for t in calls)
              for r in train_rows))


def test_traces_the_steps_after_the_first_call_across_epochs_changing_no_result(
    tmp_path):
  plain = _run(tmp_path / "plain")
  # One step per call on CPU: the first call (step 0) is left out, then 5
  # steps, the last of them in epoch 2.
  profiled = _run(tmp_path / "profiled", profile_steps=5)
  assert not (tmp_path / "plain" / "profile").exists()
  steps, annotated_calls = _trace(tmp_path / "profiled")
  assert steps == [1, 2, 3, 4, 5]
  assert annotated_calls == 5  # Each row holds its compiled call.
  assert profiled == plain  # Bit for bit, times aside.


def test_traces_whole_calls_and_stops_when_the_run_ends_first(tmp_path):
  # One call per epoch (as on GPU/TPU): epoch 1's call is the untraced
  # first one; epoch 2's, steps 5 to 9, is traced whole, and the run ends
  # before 100 steps have run.
  _run(tmp_path / "run", profile_steps=100, steps_per_call=5)
  assert _trace(tmp_path / "run")[0] == [5]


def test_nothing_is_wrapped_without_steps_to_trace_or_off_the_main_process(
    tmp_path):
  chunks = [loop.Chunk(lambda *args: args, 1)]
  assert loop.Profile(tmp_path, 0).wrap(chunks, 0) is chunks
  assert loop.Profile(None, 5).wrap(chunks, 0) is chunks  # Not process 0.
  assert loop.Profile(tmp_path, 5).wrap(chunks, 0) is not chunks


@pytest.mark.parametrize("value", ["-1", "1.5"])
def test_a_bad_value_is_one_line(tmp_path, value):
  result = run_module("mnist_jax.main", f"--config={REPO}/configs/mnist160.py",
                      f"--workdir={tmp_path / 'run'}",
                      f"--config.profile_steps={value}")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "profile_steps" in errors[0], result.stderr
  assert not (tmp_path / "run").exists()
