"""Many models in one compiled run: `num_seeds` seeds times a `sweep`.

A run of M > 1 members stacks M training states along a new leading axis and
maps the training and evaluation steps over it (`map_members`: `jax.vmap`, or
each member's step written out, on CPU): one compiled program and one
dispatch per step for all of them, its batches split over the devices as a
single run's are. Each member derives its initialisation,
data order, augmentation and dropout keys from its own seed exactly as a
single run with that seed does, and keeps its own optimizer hyperparameters
as arrays in its optimizer state (`optax.inject_hyperparams`).

Member `p * num_seeds + s` trains sweep point p with seed `config.seed + s`.
The points are every combination of the swept fields' values.
"""

import dataclasses
import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from mnist_jax import registry
from mnist_jax.errors import UserError

# Optimizer hyperparameters a sweep may vary: the ones held as arrays in the
# optimizer state, so that the members share one compiled program. Every
# optimizer takes a learning rate; the others, those it registers
# (optim.register's `hyperparameters`).
SWEEPABLE = ("learning_rate", "weight_decay", "momentum")


@dataclasses.dataclass(frozen=True)
class Members:
  seeds: tuple[int, ...]
  # One {field: value} per sweep point; a single {} without a sweep.
  points: tuple[dict[str, float], ...] = ({},)

  @classmethod
  def from_config(cls, config) -> "Members":
    """The members of `config` (every field present: config.with_defaults)."""
    num_seeds = config.num_seeds
    if not isinstance(num_seeds, int) or num_seeds < 1:
      raise UserError(f"config.num_seeds must be a positive integer, got "
                      f"{num_seeds!r}")
    sweep = {field: _values(field, text)
             for field, text in config.sweep.items() if text != ""}
    for field in sweep:
      _check_sweepable(field, config)
    points = tuple(dict(zip(sweep, values))
                   for values in itertools.product(*sweep.values()))
    return cls(tuple(config.seed + s for s in range(num_seeds)), points)

  @property
  def count(self) -> int:
    return len(self.points) * len(self.seeds)

  @property
  def swept(self) -> tuple[str, ...]:
    return tuple(self.points[0])

  def describe(self, member: int) -> dict[str, Any]:
    """{"seed": s, field: value, ...} of member `member`."""
    point, seed = divmod(member, len(self.seeds))
    return {"seed": self.seeds[seed], **self.points[point]}

  def configs(self, config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
    """Each member's config: `config` with the member's seed and point."""
    configs = []
    for member in range(self.count):
      member_config = config.copy_and_resolve_references()
      with member_config.unlocked():
        member_config.update(self.describe(member))
      configs.append(member_config)
    return configs


def _values(field: str, text) -> tuple[float, ...]:
  if field not in SWEEPABLE:
    raise UserError(f"config.sweep.{field}: only {', '.join(SWEEPABLE)} can be "
                    f"swept in one compiled run")
  try:
    values = tuple(float(v) for v in str(text).split(",") if v.strip())
  except ValueError:
    values = ()
  if not values:
    raise UserError(f"config.sweep.{field}={text!r}: expected numbers separated "
                    f"by commas, e.g. '0.01,0.03,0.1'")
  if field == "learning_rate" and min(values) <= 0:
    raise UserError(f"config.sweep.learning_rate={text!r}: learning rates must "
                    f"be positive")
  if min(values) < 0:
    raise UserError(f"config.sweep.{field}={text!r}: values must not be negative")
  return values


def _check_sweepable(field: str, config: ml_collections.ConfigDict):
  optimizer = config.optimizer
  if field == "learning_rate" or field in registry.resolve(
      "optimizer", optimizer).hyperparameters:
    return
  takers = [e.name for e in registry.entries("optimizer").values()
            if field in e.hyperparameters]
  if field == "weight_decay":
    raise UserError(f"config.sweep.weight_decay: optimizer '{optimizer}' has no "
                    f"weight decay; use adamw (decoupled) or sgd")
  raise UserError(f"config.sweep.{field}: only {', '.join(takers[:-1])} and "
                  f"{takers[-1]} take config.{field}, not '{optimizer}'")


def stack(trees: list[Any]) -> Any:
  """Pytrees of equal structure stacked along a new leading (member) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def select(tree: Any, member: int) -> Any:
  """Member `member` of a stacked pytree."""
  return jax.tree.map(lambda x: x[member], tree)



# How the steps are mapped over members: "vmap" batches them into one
# computation; "unroll" writes out each member's step in the one program.
# Measured on XLA:CPU (benchmarks/results/cpu-cpu/harness-1dev-20261121T0747.json):
# 2 or 4 vmapped members, their convolutions grouped, trained at 0.14x to
# 0.27x the images/s of as many sequential runs, unrolled ones at 0.70x to
# 1.12x, so CPU unrolls; GPUs and TPUs batch.
MEMBER_LOOPS = ("auto", "vmap", "unroll")


def member_loop(setting: str, backend: str) -> str:
  if setting not in MEMBER_LOOPS:
    raise UserError(f"config.member_loop={setting!r}: choose one of "
                    f"{', '.join(MEMBER_LOOPS)}")
  if setting != "auto":
    return setting
  return "unroll" if backend == "cpu" else "vmap"


def map_members(fn: Callable, num_members: int, loop: str,
                in_axes: tuple[int | None, ...] | int = 0) -> Callable:
  """`fn` mapped over the leading member axis of its arguments (those of
  `in_axes` 0; None: shared), by `jax.vmap` or written out member by member."""
  if loop == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def unrolled(*args):
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    outs = [fn(*(arg if axis is None else select(arg, k)
                 for arg, axis in zip(args, axes)))
            for k in range(num_members)]
    return stack(outs)
  return unrolled
