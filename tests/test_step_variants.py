"""benchmarks/step_variants.py end to end in its --tiny mode (mnist160, a
batch of 16 on the default CPU devices, 4 steps, one round), as a fresh
process; the record goes to a tmp folder. No timing is asserted: the record
only has to hold what the script measures. And a bad flag value is one line
naming the flag (exit status 2), never a traceback.
"""

import json
import sys

import pytest

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "benchmarks"))
# pylint: disable=g-import-not-at-top,wrong-import-position
import bench_args
import step_variants
# pylint: enable=g-import-not-at-top,wrong-import-position

# One of each kind: a convolution rewritten, a custom VJP, a dense layer's
# gradient, unrolled steps, more calls in flight.
VARIANTS = ("xla", "conv1_im2col", "convs_wgrad", "dense_wgrad", "unroll2",
            "in_flight3")


def test_tiny_run_checks_gradients_then_times_each_variant(tmp_path, script_env):
  out = tmp_path / "variants.json"
  run_script("benchmarks/step_variants.py", "--tiny", f"--variants={','.join(VARIANTS)}",
             "--conditions=a test", f"--out={out}", env=script_env)
  record = json.loads(out.read_text())
  assert record["benchmark"] == "step_variants" and record["dataset"] == "mnist160"
  assert record["conditions"] == "a test" and record["machine"]["cpu"]
  assert record["batch_size"] == 16 and record["steps_per_window"] == 4
  assert record["devices"] == record["machine"]["device_count"]
  rows = record["variants"]
  assert tuple(rows) == VARIANTS
  for name, row in rows.items():
    wall, cpu = row["wall_ms_per_step"], row["cpu_ms_per_step"]
    assert wall["windows"] == cpu["windows"] == 1
    assert 0 < wall["min"] <= wall["median"] <= wall["max"]
    # The same division of the same floats (JSON keeps them exactly): equal.
    assert row["wall_ratio_to_xla"] == (
        wall["median"] / rows["xla"]["wall_ms_per_step"]["median"])
    assert row["compile_seconds"] > 0
    # The model variants' gradients match XLA's within their float32 bound;
    # the others run the current model.
    check = row["gradient_check"]
    if name in ("xla", "unroll2", "in_flight3"):
      assert check is None
    else:
      assert check["passed"] and check["max_abs_difference"] <= check["bound"]
  # The same compiled step, dispatched otherwise: the same parameters.
  assert rows["xla"]["params_max_abs_difference_from_xla"] == 0
  assert rows["in_flight3"]["params_max_abs_difference_from_xla"] == 0
  assert all(row["params_max_abs_difference_from_xla"] >= 0 for row in rows.values())
  assert rows["unroll2"]["steps_per_call"] == 2
  assert rows["in_flight3"]["max_calls_in_flight"] == 3
  assert rows["xla"]["wall_ratio_to_xla"] == 1.0


@pytest.mark.parametrize("argv, flag", [
    (["--variants=xla,nope"], "--variants"),
    (["--steps=6", "--variants=xla,unroll4"], "--steps"),
    (["--rounds=0"], "--rounds"),
    (["--override=model=nope"], "--override"),
])
def test_a_bad_flag_value_is_refused_as_it_is_parsed(argv, flag, capsys):
  with pytest.raises(SystemExit) as exit_info:
    bench_args.run_main(step_variants.parse_args, argv)
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert exit_info.value.code == 2 and "error:" in last and flag in last, last
