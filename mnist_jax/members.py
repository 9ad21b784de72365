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
The points are every combination of the swept fields' comma-separated
values (a grid), or, with `config.sweep_samples` = N > 0 (random search), N
points drawn from the fields' distributions (`loguniform(a, b)`,
`uniform(a, b)`, `choice(x, y, ...)`) by a numpy Generator seeded with
`config.sweep_seed`: the same points for a run and its resume, whatever
`config.seed`. `parse_sweep` is the one parser of a `sweep.<field>`, for
its field check and for the points.
"""

import dataclasses
import itertools
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnist_jax import registry
from mnist_jax.errors import UserError

# Optimizer hyperparameters a sweep may vary: the ones held as arrays in the
# optimizer state, so that the members share one compiled program. Every
# optimizer takes a learning rate; the others, those it registers
# (optim.register's `hyperparameters`).
SWEEPABLE = ("learning_rate", "weight_decay", "momentum")


# The distributions a field of `sweep` may be drawn from (with
# config.sweep_samples > 0), as a message shows them.
DISTRIBUTIONS = {"loguniform": "loguniform(a, b)", "uniform": "uniform(a, b)",
                 "choice": "choice(x, y, ...)"}
_FORMS = ", ".join(DISTRIBUTIONS.values())
_EXAMPLES = {"loguniform": "loguniform(1e-4, 1e-1)", "uniform": "uniform(0.01, 0.1)",
             "choice": "choice(0.01, 0.03, 0.1)"}
# name(arguments): a distribution; text without parentheses is a grid.
_CALL = re.compile(r"\s*(\w*)\s*\((.*)\)\s*", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Members:
  """The members of a run: `seeds` times `points`.

  `points` holds each sweep point's {field: value}, Python floats (drawn ones
  too), in member order; `describe(k)` gives member k's seed and point, which
  metrics.jsonl, summary.json, the members' table and TensorBoard's hparams
  record. `configs()` gives each member's config.
  """
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
    return cls(tuple(config.seed + s for s in range(num_seeds)),
               sweep_points(config))

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


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A `sweep.<field>` parsed: a grid of `values`, or a distribution
  (`kind`, one of DISTRIBUTIONS) of `values`, its bounds or its choices."""
  kind: str  # "grid", or a key of DISTRIBUTIONS.
  values: tuple[float, ...]

  @property
  def drawn(self) -> bool:
    return self.kind != "grid"

  def draw(self, rng: np.random.Generator) -> float:
    """One value, a Python float (JSON and the HParams tab take it as is)."""
    if self.kind == "choice":
      return self.values[int(rng.integers(len(self.values)))]
    low, high = self.values
    if self.kind == "uniform":
      value = rng.uniform(low, high)
    else:  # Uniform in the logarithm: as many draws per decade.
      value = math.exp(rng.uniform(math.log(low), math.log(high)))
    # exp(log(a)) and a + (b - a) * u may round a step outside [a, b].
    return float(min(max(value, low), high))


def parse_sweep(name: str, text) -> Sweep | None:
  """config.<name> (`sweep.<field>`, or just `<field>`) parsed: None for ''
  (not swept). The check of the sweep.* fields and `sweep_points` both read
  a sweep through this."""
  field = name.removeprefix("sweep.")
  if field not in SWEEPABLE:
    raise UserError(f"config.sweep.{field}: only {', '.join(SWEEPABLE)} can be "
                    f"swept in one compiled run")
  label = f"config.sweep.{field}={text!r}"
  if isinstance(text, str) and not text.strip():
    return None
  if not isinstance(text, str) or ("(" not in text and ")" not in text):
    values = _numbers(text, grid=True)
    if not values:
      raise UserError(f"{label}: expected numbers separated by commas, e.g. "
                      f"'0.01,0.03,0.1', or one of {_FORMS}")
    return Sweep("grid", _in_range(label, field, values))
  call = _CALL.fullmatch(text)
  if call is None:
    raise UserError(f"{label}: expected one of {_FORMS}, e.g. "
                    f"'{_EXAMPLES['loguniform']}', or numbers separated by commas")
  kind, arguments = call.groups()
  if kind not in DISTRIBUTIONS:
    raise UserError(f"{label}: unknown distribution '{kind}'; choose one of {_FORMS}")
  values = _numbers(arguments, grid=False)
  if values is None:
    raise UserError(f"{label}: {kind}'s arguments must be numbers separated by "
                    f"commas, e.g. '{_EXAMPLES[kind]}'")
  if kind == "choice" and not values:
    raise UserError(f"{label}: choice needs at least one value, e.g. "
                    f"'{_EXAMPLES['choice']}'")
  if kind != "choice":
    if len(values) != 2:
      raise UserError(f"{label}: {kind} takes two numbers, its bounds a < b, "
                      f"e.g. '{_EXAMPLES[kind]}'")
    if values[0] >= values[1]:
      raise UserError(f"{label}: the lower bound must come first and be less "
                      f"than the upper, e.g. '{_EXAMPLES[kind]}'")
    if kind == "loguniform" and values[0] <= 0:
      raise UserError(f"{label}: loguniform's bounds must be positive (it draws "
                      f"their logarithms), e.g. '{_EXAMPLES['loguniform']}'")
  return Sweep(kind, _in_range(label, field, values))


def _numbers(text, grid: bool) -> tuple[float, ...] | None:
  """The finite numbers of comma-separated `text`, or None. A grid skips
  empty items ('0.1,'); a distribution's arguments may not."""
  try:
    items = [v.strip() for v in text.split(",")]
    if grid or not text.strip():
      items = [v for v in items if v]
    values = tuple(float(v) for v in items)
  except (AttributeError, ValueError):
    return None
  return values if all(map(math.isfinite, values)) else None


def _in_range(label: str, field: str, values: tuple[float, ...]) -> tuple[float, ...]:
  if field == "learning_rate" and min(values) <= 0:
    raise UserError(f"{label}: learning rates must be positive")
  if min(values) < 0:
    raise UserError(f"{label}: values must not be negative")
  return values


def sweep_points(config: ml_collections.ConfigDict) -> tuple[dict[str, float], ...]:
  """The sweep points of `config`: every combination of its grids, or
  `sweep_samples` points drawn from its distributions by a numpy Generator
  seeded with `sweep_seed` (point after point, each point's fields in
  SWEEPABLE's order: N points are the first N of more). Refuses fields its
  optimizer cannot sweep, and grids and draws mixed."""
  sweeps = {}
  for field, text in config.sweep.items():
    if (sweep := parse_sweep(field, text)) is not None:
      _check_sweepable(field, config)
      sweeps[field] = sweep
  samples = config.sweep_samples
  drawn = [field for field, sweep in sweeps.items() if sweep.drawn]
  if samples and not drawn:
    raise UserError(f"config.sweep_samples={samples} draws sweep points, but no "
                    f"sweep.<field> is a distribution: write e.g. "
                    f"sweep.learning_rate='{_EXAMPLES['loguniform']}', or set "
                    f"sweep_samples=0 for the grid")
  if drawn and not samples:
    raise UserError(f"config.sweep.{drawn[0]}={config.sweep[drawn[0]]!r} is drawn "
                    f"at random: set sweep_samples=N, the number of sweep points "
                    f"to draw")
  if not drawn:
    return tuple(dict(zip(sweeps, values)) for values in
                 itertools.product(*(sweep.values for sweep in sweeps.values())))
  for field, sweep in sweeps.items():
    if not sweep.drawn:
      items = ", ".join(v.strip() for v in config.sweep[field].split(",") if v.strip())
      raise UserError(f"config.sweep.{field}={config.sweep[field]!r} is a grid, but "
                      f"sweep_samples={samples} draws the points: write it as "
                      f"'choice({items})' to draw it too")
  rng = np.random.default_rng(config.sweep_seed)
  order = [field for field in SWEEPABLE if field in sweeps]
  return tuple({field: sweeps[field].draw(rng) for field in order}
               for _ in range(samples))

def _check_sweepable(field: str, config: ml_collections.ConfigDict):
  optimizer = config.optimizer
  if field == "learning_rate" or field in registry.resolve(
      "optimizer", optimizer).hyperparameters:
    return
  takers = [e.name for e in registry.entries("optimizer").values()
            if field in e.hyperparameters]
  if ":" in optimizer:  # A user's: it receives what it declares.
    raise UserError(f"config.sweep.{field}: optimizer '{optimizer}' does not "
                    f"declare {field}; set hyperparameters = ({field!r},) on it "
                    f"and take {field}= as a keyword argument")
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
