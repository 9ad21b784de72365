"""The protocols a user's own component follows, checked once before training.

`check(config, num_classes, image_shape, steps_per_epoch)` calls each
plugin the config names (plugins.py) under `jax.eval_shape`: shapes only,
no arithmetic, no compilation. A component that breaks its protocol, or
raises, is then a one-line UserError naming the spec and what was expected
(with the user's own message and the line in their file), not a trace from
inside `jit`. Built-ins are not checked: their tests do that.

The protocols (README, "Your own model, optimizer, loss and augmentation"):
  model         factory(num_classes, *, rngs, input_shape=(H, W, C), [width,
                depth, dropout]) -> nnx.Module; float32 [B, H, W, C] ->
                logits [B, num_classes]
  optimizer     make(learning_rate, config) -> optax.GradientTransformation
  loss          loss(logits_BK, labels_BK) -> loss_B (one-hot labels)
  augmentation  augment(key, images_BHWC) -> images_BHWC (float32)
  tta view      view(images_BHWC) -> images_BHWC (float32)
  lr_schedule   make(config, steps_per_epoch, lr) -> optax.Schedule (step ->
                float learning rate)
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from mnist_jax import members, models, optim, plugins, registry
from mnist_jax.errors import SpecError, UserError

_BATCH = 2  # Images each check feeds: any batch size must work.


def check(config: ml_collections.ConfigDict, num_classes: int,
          image_shape: tuple[int, int, int], steps_per_epoch: int = 1):
  """Raises a one-line UserError where a plugin of `config` breaks its protocol."""
  params = None
  if plugins.is_spec(config.model):
    params = _model(config, num_classes, image_shape)
  if plugins.is_spec(config.lr_schedule):  # Before the optimizer, which takes it.
    _schedule(config, steps_per_epoch)
  if plugins.is_spec(config.optimizer):
    if params is None:
      params = _params(config, num_classes, image_shape)
    _optimizer(config, params, steps_per_epoch)
  if plugins.is_spec(config.loss):
    _loss(config.loss, num_classes)
  for field, kind in (("augment", "augmentation"), ("tta", "tta")):
    for spec in (n.strip() for n in config[field].split(",")):
      if plugins.is_spec(spec):
        _image_map(f"{field}", kind, spec, image_shape)


def _calling(label: str, spec: str, fn, *args):
  """jax.eval_shape(fn, *args), a user's exception turned into one line."""
  return _stage(label, spec, "", jax.eval_shape, fn, *args)


def _stage(label: str, spec: str, doing: str, fn, *args):
  """fn(*args), a user's exception turned into one line saying what it was doing."""
  try:
    return fn(*args)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # nnx.Dropout(rate, rngs=rngs), NNX's own idiom, asks for a stream the
    # model's rngs do not hold (a checkpoint keeps no random streams).
    fix = ("; a model's rngs hold a 'params' stream only: for dropout, make "
           "nnx.Dropout(rate) without rngs and take dropout_key=None in __call__ "
           "(a fresh key each training step): self.drop(x, rngs=nnx.Rngs("
           "dropout=dropout_key)) when dropout_key is not None"
           if label == "model" and isinstance(e, KeyError) and "RngStream" in str(e)
           else "")
    raise SpecError(f"{label}={spec!r} raised "
                    f"{plugins.raised(e, plugins.file_path(spec))}"
                    f"{' ' + doing if doing else ''}{fix}") from None


def _build(config, num_classes: int, image_shape, key):
  return models.create(config.model, num_classes, nnx.Rngs(params=key),
                       width=config.width, depth=config.depth or None,
                       dropout=config.dropout, init=config.init,
                       input_shape=image_shape)


def _model(config, num_classes: int, image_shape) -> nnx.State:
  spec = config.model

  images = f"float32 images [{_BATCH}, {', '.join(map(str, image_shape))}]"

  def build_and_call(key):
    module = _stage("model", spec, "when built", _build, config, num_classes,
                    image_shape, key)
    if not isinstance(module, nnx.Module):  # Raised here: eval_shape returns arrays only.
      what = ("an array" if isinstance(module, jax.Array)
              else f"a {type(module).__name__}")
      raise SpecError(f"model={spec!r} returned {what}, not an nnx.Module; "
                      f"expected {plugins.PROTOCOLS['model']}")
    _check_classifier(spec, module)
    module.eval()
    logits = _stage("model", spec, f"when called on {images}", module,
                    jnp.zeros((_BATCH, *image_shape), jnp.float32))
    return nnx.state(module, nnx.Param), logits

  params, logits = _calling("model", spec, build_and_call, jax.random.key(0))
  shape = getattr(logits, "shape", None)
  if shape != (_BATCH, num_classes) or not jnp.issubdtype(logits.dtype, jnp.floating):
    got = str(list(shape)) if shape is not None else type(logits).__name__
    raise SpecError(f"model={spec!r} maps {images} to {got}; expected "
                    f"float logits [B, num_classes] = [{_BATCH}, {num_classes}]")
  return params


def _check_classifier(spec: str, module: nnx.Module):
  """A declared `classifier` must name a layer with parameters: freeze=features
  trains it alone, and a misspelt one would freeze the whole model."""
  classifier = registry.resolve("model", spec).classifier
  if classifier is None:
    return
  layer = getattr(module, classifier, None)
  if not (isinstance(layer, nnx.Module)
          and jax.tree.leaves(nnx.state(layer, nnx.Param))):
    layers = sorted(name for name, value in vars(module).items()
                    if isinstance(value, nnx.Module))
    raise SpecError(f"model={spec!r} declares classifier={classifier!r}, which "
                    f"is no layer of it with parameters; name its last layer, one "
                    f"of {', '.join(layers)}")


def _params(config, num_classes: int, image_shape) -> nnx.State:
  return jax.eval_shape(lambda key: nnx.state(
      _build(config, num_classes, image_shape, key), nnx.Param), jax.random.key(0))


def _optimizer(config, params, steps_per_epoch: int):
  spec = config.optimizer
  entry = registry.resolve("optimizer", spec, label="optimizer")
  # Those a sweep may inject (members.SWEEPABLE); the learning rate is the
  # first argument, whatever it declares.
  declarable = tuple(f for f in members.SWEEPABLE if f != "learning_rate")
  unknown = [h for h in entry.hyperparameters if h not in declarable]
  if unknown:
    raise SpecError(f"optimizer={spec!r} declares hyperparameters "
                    f"{', '.join(map(repr, unknown))}; it may declare "
                    f"{' and '.join(declarable)} (given as keywords, sweepable), "
                    f"and read any other setting from its config argument or a "
                    f"default of its own")
  schedule = optim.schedule(config, steps_per_epoch)
  hyper = {h: config[h] for h in entry.hyperparameters}
  tx = _stage("optimizer", spec, "", lambda: entry.target(schedule, config, **hyper))
  if not isinstance(tx, optax.GradientTransformation):
    raise SpecError(f"optimizer={spec!r} returned a {type(tx).__name__}, not an "
                    f"optax.GradientTransformation; expected "
                    f"{plugins.PROTOCOLS['optimizer']}")
  updates = _calling("optimizer", spec,
                     lambda p: tx.update(p, tx.init(p), p)[0], params)
  same = jax.tree.structure(updates) == jax.tree.structure(params) and all(
      u.shape == p.shape for u, p in zip(jax.tree.leaves(updates),
                                         jax.tree.leaves(params)))
  if not same:
    raise SpecError(f"optimizer={spec!r}: its update does not match the "
                    f"parameters' tree and shapes; an optax transformation's "
                    f"update(grads, state, params) returns one update per parameter")


def _schedule(config, steps_per_epoch: int):
  spec = config.lr_schedule
  entry = registry.resolve("schedule", spec, label="lr_schedule")
  schedule = _stage("lr_schedule", spec, "when made", entry.target, config,
                    steps_per_epoch, config.learning_rate)
  if not callable(schedule):
    raise SpecError(f"lr_schedule={spec!r} returned a {type(schedule).__name__}, "
                    f"not a schedule (a function of the step); expected "
                    f"{plugins.PROTOCOLS['schedule']}")
  rate = _calling("lr_schedule", spec, schedule, jax.ShapeDtypeStruct((), jnp.int32))
  if getattr(rate, "shape", None) != () or not jnp.issubdtype(rate.dtype, jnp.floating):
    got = (f"{rate.dtype}{list(rate.shape)}" if hasattr(rate, "shape")
           else type(rate).__name__)
    raise SpecError(f"lr_schedule={spec!r}: its schedule maps a step to {got}; "
                    f"expected one float learning rate")


def _loss(spec: str, num_classes: int):
  loss = registry.resolve("loss", spec, label="loss").target
  batch = num_classes + 3  # Unlike K, so a transposed result shows.
  labels = jax.ShapeDtypeStruct((batch, num_classes), jnp.float32)
  out = _calling("loss", spec, loss, labels, labels)
  shape = getattr(out, "shape", None)
  if shape != (batch,):
    raise SpecError(f"loss={spec!r} maps logits and labels [{batch}, {num_classes}] "
                    f"to {list(shape) if shape is not None else type(out).__name__}; "
                    f"expected one loss per example, [{batch}]")
  if not jnp.issubdtype(out.dtype, jnp.floating):  # No gradient: nothing learns.
    raise SpecError(f"loss={spec!r} gives {out.dtype} losses, which have no "
                    f"gradient; expected float losses, e.g. from "
                    f"optax.softmax_cross_entropy(logits_BK, labels_BK)")


def _image_map(field: str, kind: str, spec: str, image_shape):
  fn = registry.resolve(kind, spec, label=field).target
  images = jax.ShapeDtypeStruct((_BATCH, *image_shape), jnp.float32)
  if kind == "augmentation":
    out = _calling(field, spec, fn, jax.random.key(0), images)
  else:
    out = _calling(field, spec, fn, images)
  shape = getattr(out, "shape", None)
  if shape != images.shape or not jnp.issubdtype(out.dtype, jnp.floating):
    raise SpecError(f"{field}: {spec!r} maps float images {list(images.shape)} to "
                    f"{list(shape) if shape is not None else type(out).__name__}; "
                    f"expected float images of the same shape")
