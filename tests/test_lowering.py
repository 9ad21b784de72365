"""The programs mnist_jax runs on GPU/TPU lower for `cuda` and `tpu` here.

`jax.export.export(jitted, platforms=("cuda", "tpu"))` lowers to StableHLO
for those platforms on a machine that has neither: lowering needs no device.
For every model, in float32 and bfloat16, the training chunk as GPU/TPU run
it (the whole epoch in one `lax.scan`, `loop.default_steps_per_call`), the
evaluation, and the vmapped multi-member step and evaluation
(`member_loop="vmap"`, what GPU/TPU use) are lowered, and each module must
hold no host callback or host transfer and only custom calls that GPU/TPU
compile. (An unsupported callback already makes the export raise; the text
check also catches CPU-only library calls, e.g. LAPACK, and any target not
allowed below.)

The mesh is an `AbstractMesh` of 2 devices: the lowered module then carries
the batch's sharding constraint as a multi-device GPU/TPU run's does,
whatever CPU devices this process has (export binds no concrete devices).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mnist_jax import config as config_lib
from mnist_jax import feed, loop, registry, steps
from mnist_jax import state as state_lib

PLATFORMS = ("cuda", "tpu")
# Custom-call targets GPU and TPU compile: GSPMD's sharding annotations (with
# Shardy, the default, they are `sdy` ops instead and no custom call at all).
ALLOWED_TARGETS = frozenset({"Sharding", "SPMDFullToShardShape",
                             "SPMDShardToFullShape"})
_CUSTOM_CALL = re.compile(r'custom_call\s*@([\w.$-]+)|call_target_name\s*=\s*"([^"]+)"')
_HOST_OPS = re.compile(r"\b(?:stablehlo|mhlo)\.(send|recv|infeed|outfeed)\b")
_HOST_TARGET = re.compile(r"callback|host", re.IGNORECASE)
_CPU_TARGET = re.compile(r"lapack|cpu|ducc", re.IGNORECASE)

# Tiny shapes: lowering time grows with the program, not the data.
NUM_TRAIN, NUM_TEST, BATCH, EVAL_BATCH = 64, 32, 16, 16
MESH = jax.sharding.AbstractMesh((2,), ("data",),
                                 axis_types=(jax.sharding.AxisType.Auto,))


def custom_call_targets(mlir_text: str) -> set[str]:
  """The custom-call targets of a module's text (pretty or generic form)."""
  return {a or b for a, b in _CUSTOM_CALL.findall(mlir_text)}


def accelerator_problems(mlir_text: str) -> list[str]:
  """Why a module would not run as compiled GPU/TPU code; [] if it would."""
  problems = [f"host transfer op {op}" for op in sorted(set(_HOST_OPS.findall(mlir_text)))]
  for target in sorted(custom_call_targets(mlir_text)):
    if _HOST_TARGET.search(target):
      problems.append(f"host callback {target}")
    elif _CPU_TARGET.search(target):
      problems.append(f"CPU-only custom call {target}")
    elif target not in ALLOWED_TARGETS:
      problems.append(f"custom call {target} not known to compile on GPU and TPU")
  return problems


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype),
                      tree)


def _device_data() -> feed.DeviceData:
  s = jax.ShapeDtypeStruct
  # The layout data.checked gives every dataset: uint8 [N, H, W, C], int32 labels.
  return feed.DeviceData(s((NUM_TRAIN, 28, 28, 1), jnp.uint8), s((NUM_TRAIN,), jnp.int32),
                         s((NUM_TEST, 28, 28, 1), jnp.uint8), s((NUM_TEST,), jnp.int32),
                         s((NUM_TEST,), jnp.bool_))


def _lowered(model_name: str, dtype: str, num_seeds: int = 1) -> dict[str, str]:
  """{"chunk": text, "evaluate": text}: the modules lowered for PLATFORMS."""
  config = default.get_config()
  config.model, config.dtype, config.batch_size = model_name, dtype, BATCH
  config.num_seeds, config.member_loop = num_seeds, "vmap"
  config.width = 0.25
  steps_per_epoch = NUM_TRAIN // BATCH
  built = state_lib.build(config, 10, steps_per_epoch)
  graphs, recipe, state = built.graphs, built.recipe, built.state
  assert recipe.members == num_seeds and recipe.dtype == config_lib.DTYPES[dtype]
  num_steps = loop.default_steps_per_call("cuda", steps_per_epoch)
  assert num_steps == loop.default_steps_per_call("tpu", steps_per_epoch) == steps_per_epoch
  perm = jax.ShapeDtypeStruct((num_seeds,) * (num_seeds > 1) + (num_steps, BATCH), jnp.int32)
  export = lambda fn: jax.export.export(fn, platforms=PLATFORMS)
  chunk = export(steps.make_train_chunk(graphs, recipe, built.tx, MESH, num_steps))(
      _abstract(state), _abstract(steps.Totals.zeros(state.step.shape)),
      _device_data(), perm)
  evaluate = export(steps.make_evaluate(graphs, recipe, MESH, EVAL_BATCH,
                                        NUM_TEST // EVAL_BATCH))(
      _abstract(state), _device_data())
  for exported in (chunk, evaluate):
    assert exported.platforms == PLATFORMS
  return {"chunk": chunk.mlir_module(), "evaluate": evaluate.mlir_module()}


def _check(texts: dict[str, str], dtype: str):
  for name, text in texts.items():
    assert accelerator_problems(text) == [], name
    # The batch's sharding constraint reached the module.
    assert "sharding_constraint" in text or "Sharding" in custom_call_targets(text), name
    if dtype == "bfloat16":  # The model computes in bf16, not only the casts' types.
      assert re.search(r"stablehlo\.(convolution|dot_general)[^\n]*bf16", text), name
  # The whole epoch is one scan (a while loop), as GPU/TPU run it.
  assert "stablehlo.while" in texts["chunk"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("model_name", registry.names("model"))
def test_epoch_scan_and_evaluation_lower_for_gpu_and_tpu(model_name, dtype):
  _check(_lowered(model_name, dtype), dtype)


@pytest.mark.parametrize("model_name", registry.names("model"))
def test_vmapped_members_lower_for_gpu_and_tpu(model_name):
  texts = _lowered(model_name, "bfloat16", num_seeds=2)
  _check(texts, "bfloat16")
  # Vmapped: the members' layers batched into the single model's matrix
  # products and convolutions, not a copy of them per member (unrolled).
  count = lambda text: len(re.findall(r"stablehlo\.(?:convolution|dot_general)", text))
  single = _lowered(model_name, "bfloat16")
  assert count(texts["chunk"]) == count(single["chunk"]) > 0
  assert count(texts["evaluate"]) == count(single["evaluate"]) > 0


def test_the_check_flags_host_callbacks_and_cpu_only_calls():
  """What accelerator_problems must catch, from real lowerings."""
  def with_callback(x):
    return jax.pure_callback(lambda a: np.asarray(a) * 2,
                             jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1
  callback_text = jax.jit(with_callback).lower(jnp.ones(3)).as_text()
  assert any(p.startswith("host callback") for p in accelerator_problems(callback_text))

  singular_values = jax.jit(lambda a: jnp.linalg.svd(a)[1])
  square = jax.ShapeDtypeStruct((3, 3), jnp.float32)
  cpu_text = jax.export.export(singular_values, platforms=("cpu",))(square).mlir_module()
  assert any(p.startswith("CPU-only custom call lapack")
             for p in accelerator_problems(cpu_text))
  gpu_text = jax.export.export(singular_values, platforms=PLATFORMS)(square).mlir_module()
  assert any("not known to compile" in p for p in accelerator_problems(gpu_text))

  plain = jax.export.export(jax.jit(jnp.sin), platforms=PLATFORMS)(square).mlir_module()
  assert accelerator_problems(plain) == []
