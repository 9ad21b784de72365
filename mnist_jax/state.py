"""The model and its training state: what a run builds from its config once.

The model is split once into static graphs (training and evaluation mode)
and its variables (`nnx.split`); the steps merge them back inside `jax.jit`.
Besides the graphs, the steps need a `StepRecipe`: how a batch is augmented
and mixed, the loss's smoothing, the dtype, the test-time views, the moving
average and the members. `build` makes all of these, with the optimizer and
its schedule, from a config: the rooms after it take those pieces.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx, struct

from mnist_jax import augment, models, optim, protocols
from mnist_jax import config as config_lib
from mnist_jax import members as members_lib


@struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  rest: nnx.State  # Model variables that are not parameters (e.g. batch stats).
  opt_state: optax.OptState
  # For stochastic layers. Raw key data (uint32), not a typed key, so that the
  # state is plain arrays that checkpoint libraries can save.
  rng: jax.Array
  # With config.ema_decay > 0: {"count", "params", "rest"}, the moving average
  # of the weights and of the batch statistics that go with them; else None.
  ema: Any = None


@dataclasses.dataclass(frozen=True)
class Graphs:
  """The static half of a split NNX model, in training and evaluation mode."""
  train: nnx.GraphDef
  eval: nnx.GraphDef


@dataclasses.dataclass(frozen=True)
class StepRecipe:
  """What the steps do besides running the model (see `from_config`)."""
  augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  # f(key, float images) -> images: the user's own augmentations (plugins),
  # after normalisation, before mixing; or None.
  augment_floats: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  # f(key, float images) -> (mixed images, lam): mixup / cutmix, or None.
  mix: Callable | None = None
  label_smoothing: float = 0.0  # Of the training loss only.
  # The training loss, a registered name or a user's spec (config.loss;
  # evaluation always reports cross-entropy).
  loss: str = "cross_entropy"
  # Test-time views: "flip", "translate", or a user's own (a spec).
  tta: tuple[str, ...] = ()
  # Computation dtype; parameters, optimizer state and loss stay float32.
  dtype: Any = jnp.float32
  # Inputs are (pixel / 255 - pixel_mean) / pixel_std (models.normalize).
  pixel_mean: float = 0.0
  pixel_std: float = 1.0
  ema_decay: float = 0.0
  # Whether the model's call is given a `dropout_key`: a built-in's when its
  # rate is above 0, a user's model's when its call takes one.
  dropout_key: bool = False
  # Members of the run (states stacked on a leading axis, steps mapped over
  # it when > 1), and seeds per sweep point: their ensembles are evaluated.
  members: int = 1
  seeds_per_point: int = 1
  member_loop: str = "vmap"  # members.map_members: "vmap" or "unroll".

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  members: members_lib.Members, backend: str) -> "StepRecipe":
    names = augment.parse(config.augment, config.dataset)
    return cls(augment=augment.make(names, config.translate_pixels),
               augment_floats=augment.make_floats(names),
               loss=config.loss,
               mix=augment.make_mix(names, config.mix_alpha),
               label_smoothing=config.label_smoothing,
               tta=augment.parse_tta(config.tta, config.dataset),
               dtype=config_lib.DTYPES[config.dtype],
               pixel_mean=config.pixel_mean, pixel_std=config.pixel_std,
               ema_decay=config.ema_decay,
               dropout_key=models.takes_dropout_key(config.model, config.dropout),
               members=members.count, seeds_per_point=len(members.seeds),
               member_loop=members_lib.member_loop(config.member_loop, backend))


@dataclasses.dataclass(frozen=True)
class Built:
  """A run's pieces, built from its config in one place."""
  members: members_lib.Members
  graphs: Graphs
  recipe: StepRecipe
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state: TrainState  # The initial state, stacked when there are members.


def build(config: ml_collections.ConfigDict, num_classes: int,
          steps_per_epoch: int, backend: str | None = None,
          image_shape: tuple[int, int, int] = models.MNIST_SHAPE) -> Built:
  """The members, model, step recipe, optimizer, schedule and initial state
  of `config` (validated, or filled by config.with_defaults), for images of
  `image_shape` (H, W, C)."""
  # A user's own components, checked against their protocols before
  # anything is traced for training.
  protocols.check(config, num_classes, tuple(image_shape), steps_per_epoch)
  members = members_lib.Members.from_config(config)
  trainable = None
  if config.freeze == "features":  # A linear probe: only the classifier learns.
    trainable = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if models.is_classifier(config.model, path)
        else "freeze", params)
  tx = optim.create(config, steps_per_epoch, injected=members.swept,
                    trainable=trainable)
  graphs, init = _initializer(config, num_classes, tuple(image_shape), tx)
  states = [_member_state(init, members.describe(k)) for k in range(members.count)]
  state = members_lib.stack(states) if members.count > 1 else states[0]
  recipe = StepRecipe.from_config(config, members,
                                  backend or jax.default_backend())
  return Built(members, graphs, recipe, tx,
               optim.schedule(config, steps_per_epoch), state)


def _initializer(config, num_classes: int, image_shape: tuple[int, int, int],
                 tx) -> tuple[Graphs, Callable[[jax.Array], TrainState]]:
  """The graphs of `config`'s model, and `init(key)`: the initial state of
  the model of a seed's key (members differ only in their seeds and optimizer
  hyperparameters, so one `init` serves them all).

  `init` is one compiled program: drawn eagerly, each of the initialisation's
  operations (a draw, a scaling, a split key, each layer's) was compiled as a
  program of its own, 27 for the speedrun model (JAX_LOG_COMPILES=1), before
  the first step. The values are the same bit for bit (tests/test_user_clock.py).
  """
  graphs = []

  def init(key: jax.Array) -> TrainState:
    init_key, rng = jax.random.split(key)
    module = models.create(config.model, num_classes, nnx.Rngs(params=init_key),
                           width=config.width, depth=config.depth or None,
                           dropout=config.dropout, init=config.init,
                           input_shape=image_shape)
    module.eval()
    eval_graph, *_ = nnx.split(module, nnx.Param, ...)
    module.train()
    train_graph, params, rest = nnx.split(module, nnx.Param, ...)
    graphs.append(Graphs(train_graph, eval_graph))  # Static: known once traced.
    return TrainState(step=jnp.int32(0), params=params, rest=rest,
                      opt_state=tx.init(params), rng=jax.random.key_data(rng),
                      ema=({"count": jnp.int32(0), "params": params, "rest": rest}
                           if config.ema_decay else None))

  # Lowering traces it: the graphs. It runs once, so on the CPU with LLVM's
  # lightest optimisation, which compiles the random draws faster than the
  # default level 3, to the same bits (tests/test_user_clock.py).
  lowered = jax.jit(init).lower(jax.random.key(0))
  return graphs[0], lowered.compile(
      compiler_options={"xla_backend_optimization_level": 1}
      if jax.default_backend() == "cpu" else None)


def _member_state(init: Callable[[jax.Array], TrainState],
                  description: dict[str, Any]) -> TrainState:
  """The initial state of the member `description` gives (its seed and
  sweep point); the optimizer's injected hyperparameters set to its point's."""
  # The key made outside: jax.random.key takes any Python int as a seed,
  # which a compiled program's int32 argument would refuse.
  state = init(jax.random.key(description["seed"]))
  injected = {field: description[field] for field in description if field != "seed"}
  if injected:
    state = state.replace(opt_state=optim.set_hyperparameters(state.opt_state,
                                                              injected))
  return state


def with_ema_weights(state: TrainState) -> TrainState:
  """`state` with the moving average as its weights and batch statistics."""
  return state.replace(params=state.ema["params"], rest=state.ema["rest"])
