"""Models, written with Flax NNX. Input: float images [B, H, W, C].

Every model builds for its dataset's image shape (`input_shape`, (H, W, C);
MNIST's (28, 28, 1) by default): the dense layers' input sizes follow from it.

Every model takes `dropout`, a rate (0: no dropout layers at all), and its
call an explicit `dropout_key`, needed in training mode when the rate is
above 0; evaluation mode (`module.eval()`) drops nothing.
"""

import inspect
import math

import jax
import jax.numpy as jnp
from flax import nnx

from mnist_jax import registry
from mnist_jax.errors import UserError
# The pools, here too: models.max_pool_2x2_first is what benchmarks and tests name.
from mnist_jax.pooling import avg_pool_2x2, max_pool_2x2, max_pool_2x2_first  # pylint: disable=unused-import


# (H, W, C) of MNIST's images, the models' default input.
MNIST_SHAPE = (28, 28, 1)


# The config fields a model may take besides the number of classes; each
# model declares those its constructor accepts (`register`'s `accepts`).
SIZED = ("width", "dropout", "input_shape")


def register(name: str, *, classifier: str | None, accepts: tuple[str, ...] = (),
             dense_only: bool = False):
  """Registers an nnx.Module class, `cls(num_classes, *, rngs, **fields)`
  mapping float images [B, H, W, C] to logits, as model `name`.

  `classifier`: the attribute of its last layer, which maps features to
  classes: what config.freeze=features trains, and what a fine-tuning run to
  another number of classes initialises afresh (finetune.py); None: it has
  none to name. `accepts`: the fields of its constructor (of "width",
  "depth", "dropout", "input_shape"); a config that sets another is refused.
  `dense_only`: no convolutions. XLA:CPU's matrix products already use every
  core, so splitting their batches over virtual CPU devices only adds
  all-reduces (measured, mlp at batch 128 on 2 cores: 40,277 images/s on one
  device, 26,483 on two: benchmarks/results/cpu-cpu/harness-1dev-20261121T0520.json
  and harness-1dev-20261121T0448.json); runtime.configure_cpu_devices keeps
  such models on one.
  """
  return registry.register("model", name, classifier=classifier,
                           accepts=tuple(accepts), dense_only=dense_only)


def _check_size(model: str, input_shape, fits: bool, smallest: int):
  if not fits:
    raise UserError(f"model '{model}' needs images of at least {smallest}x"
                    f"{smallest} pixels, got {input_shape[0]}x{input_shape[1]}; "
                    f"set a larger config.image_size or another model")


def _scaled(features: tuple[int, ...], width: float) -> tuple[int, ...]:
  """Layer widths times `width` (config.width), at least 1 each."""
  return tuple(max(1, round(f * width)) for f in features)


def _dropout(rate: float) -> nnx.Dropout | None:
  # No key stream inside the layer: the training step passes each call's key.
  return nnx.Dropout(rate) if rate else None


def _drop(layer: nnx.Dropout | None, x: jax.Array, key: jax.Array | None,
          site: int) -> jax.Array:
  """`x` through dropout `layer` (if any), with the key of call site `site`:
  each site draws its own mask."""
  if layer is None:
    return x
  return layer(x, rngs=None if key is None else jax.random.fold_in(key, site))


def _conv_pool_relu(conv: nnx.Conv, x_BHWC: jax.Array) -> jax.Array:
  """relu(max_pool(conv(x))) of a VALID, stride-1 `conv`, computed as
  relu(max_pool(x * kernel) + bias): the same values (max commutes with a
  per-channel constant and with the monotone ReLU), with the bias, the ReLU
  and their gradients on 4x fewer elements.

  On XLA:CPU (batch 256 over 4 devices, this order and
  `max_pool_2x2_first`) the train step took 36.1 ms against 46.1 ms with
  the bias added before the pool, as nnx.Conv adds it, and 48.2 ms for
  ReLU before the pool with reduce-max's gradient
  (benchmarks/results/cpu-cpu/cpu-variants-b256-4dev-xeon-pools3.json).
  """
  y_BHWC = jax.lax.conv_general_dilated(
      x_BHWC, conv.kernel[...], window_strides=(1, 1), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return nnx.relu(max_pool_2x2_first(y_BHWC) + conv.bias[...])


@register("cnn", classifier="dense2", accepts=SIZED)
class CNN(nnx.Module):
  """The CNN of Flax's MNIST example: conv 32, conv 64, dense 256, dense out."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               dropout: float = 0.0, input_shape=MNIST_SHAPE):
    c1, c2, d = _scaled((32, 64, 256), width)
    h, w, c = input_shape
    _check_size("cnn", input_shape, min(h, w) >= 4, 4)
    self.conv1 = nnx.Conv(c, c1, kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), rngs=rngs)
    self.dense1 = nnx.Linear((h // 2 // 2) * (w // 2 // 2) * c2, d, rngs=rngs)
    self.dropout = _dropout(dropout)
    self.dense2 = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    x = avg_pool_2x2(nnx.relu(self.conv1(x_BHWC)))
    x = avg_pool_2x2(nnx.relu(self.conv2(x)))
    x = x.reshape(x.shape[0], -1)
    x = _drop(self.dropout, nnx.relu(self.dense1(x)), dropout_key, 0)
    return self.dense2(x)


@register("speedrun", classifier="dense2", accepts=SIZED)
class Speedrun(nnx.Module):
  """The fast MNIST recipe's model (tuomaso/train_mnist_fast): conv 24 5x5,
  max-pool, conv 32 3x3, max-pool, dense 256, dense out; valid convolutions,
  28 -> 24 -> 12 -> 10 -> 5."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               dropout: float = 0.0, input_shape=MNIST_SHAPE):
    c1, c2, d = _scaled((24, 32, 256), width)
    h, w, c = input_shape
    # Valid 5x5, pool, valid 3x3, pool: 28 -> 24 -> 12 -> 10 -> 5.
    out_h, out_w = (((h - 4) // 2 - 2) // 2, ((w - 4) // 2 - 2) // 2)
    _check_size("speedrun", input_shape, min(out_h, out_w) >= 1, 10)
    self.conv1 = nnx.Conv(c, c1, kernel_size=(5, 5), padding="VALID", rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, kernel_size=(3, 3), padding="VALID", rngs=rngs)
    self.dense1 = nnx.Linear(out_h * out_w * c2, d, rngs=rngs)
    self.dropout = _dropout(dropout)
    self.dense2 = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    x = _conv_pool_relu(self.conv1, x_BHWC)
    x = _conv_pool_relu(self.conv2, x)
    x = x.reshape(x.shape[0], -1)
    x = _drop(self.dropout, nnx.relu(self.dense1(x)), dropout_key, 0)
    return self.dense2(x)


class ConvBN(nnx.Module):
  """3x3 convolution (no bias: the batch norm's shift replaces it), batch
  norm, ReLU."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, kernel_size=(3, 3),
                         use_bias=False, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, momentum=0.9, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return nnx.relu(self.norm(self.conv(x_BHWC)))


@register("bn_cnn", classifier="dense2", accepts=SIZED)
class BNCNN(nnx.Module):
  """A batch-normalised VGG-style CNN: two 3x3 conv-BN-ReLU layers of 32,
  max-pool, two of 64, max-pool, dense 256 (BN, ReLU), dense out."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               dropout: float = 0.0, input_shape=MNIST_SHAPE):
    c1, c2, d = _scaled((32, 64, 256), width)
    h, w, c = input_shape
    _check_size("bn_cnn", input_shape, min(h, w) >= 4, 4)
    self.block1 = nnx.List([ConvBN(c, c1, rngs=rngs), ConvBN(c1, c1, rngs=rngs)])
    self.block2 = nnx.List([ConvBN(c1, c2, rngs=rngs), ConvBN(c2, c2, rngs=rngs)])
    self.dense1 = nnx.Linear((h // 2 // 2) * (w // 2 // 2) * c2, d, use_bias=False,
                             rngs=rngs)
    self.norm = nnx.BatchNorm(d, momentum=0.9, rngs=rngs)
    self.dropout = _dropout(dropout)
    self.dense2 = nnx.Linear(d, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    for layer in self.block1:
      x_BHWC = layer(x_BHWC)
    x_BHWC = max_pool_2x2(x_BHWC)
    for layer in self.block2:
      x_BHWC = layer(x_BHWC)
    x_BHWC = max_pool_2x2(x_BHWC)
    x_BD = nnx.relu(self.norm(self.dense1(x_BHWC.reshape(x_BHWC.shape[0], -1))))
    return self.dense2(_drop(self.dropout, x_BD, dropout_key, 0))


class PreActBlock(nnx.Module):
  """Pre-activation residual block (He et al. 2016): BN-ReLU-conv twice, with
  a 1x1 projection on the shortcut when the shape changes; dropout, if any,
  between the two convolutions (as in wide ResNets)."""

  def __init__(self, in_features: int, out_features: int, stride: int, *,
               rngs: nnx.Rngs, dropout: float = 0.0):
    self.norm1 = nnx.BatchNorm(in_features, momentum=0.9, rngs=rngs)
    self.conv1 = nnx.Conv(in_features, out_features, (3, 3), strides=stride,
                          use_bias=False, rngs=rngs)
    self.norm2 = nnx.BatchNorm(out_features, momentum=0.9, rngs=rngs)
    self.dropout = _dropout(dropout)
    self.conv2 = nnx.Conv(out_features, out_features, (3, 3), use_bias=False,
                          rngs=rngs)
    self.shortcut = (nnx.Conv(in_features, out_features, (1, 1), strides=stride,
                              use_bias=False, rngs=rngs)
                     if stride != 1 or in_features != out_features else None)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    h = nnx.relu(self.norm1(x_BHWC))
    shortcut = self.shortcut(h) if self.shortcut else x_BHWC
    h = self.conv1(h)
    h = self.conv2(_drop(self.dropout, nnx.relu(self.norm2(h)), dropout_key, 0))
    return h + shortcut


@register("resnet", classifier="out", accepts=(*SIZED, "depth"))
class ResNet(nnx.Module):
  """Pre-activation wide ResNet for 28x28 inputs (WRN-depth-k, Zagoruyko &
  Komodakis 2016): a 3x3 stem, three stages of (depth - 4) / 6 blocks of
  16k, 32k and 64k features at 28, 14 and 7 pixels, then BN-ReLU, global
  average pooling and dense out. `width` is k; `depth` 10 gives one block a
  stage, 16 two, 28 four."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               depth: int = 10, dropout: float = 0.0, input_shape=MNIST_SHAPE):
    if depth < 10 or (depth - 4) % 6:
      raise UserError(f"config.depth={depth}: a wide ResNet has 6n + 4 layers, "
                      f"n >= 1 (10, 16, 22, 28, ...)")
    blocks_per_stage = (depth - 4) // 6
    widths = _scaled((16, 32, 64), width)
    self.stem = nnx.Conv(input_shape[2], 16, (3, 3), use_bias=False, rngs=rngs)
    blocks, features = [], 16
    for stage, out in enumerate(widths):
      for i in range(blocks_per_stage):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(PreActBlock(features, out, stride, rngs=rngs,
                                  dropout=dropout))
        features = out
    self.blocks = nnx.List(blocks)
    self.norm = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
    self.out = nnx.Linear(features, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    x_BHWC = self.stem(x_BHWC)
    for i, block in enumerate(self.blocks):
      x_BHWC = block(x_BHWC, None if dropout_key is None
                     else jax.random.fold_in(dropout_key, i))
    x_BC = nnx.relu(self.norm(x_BHWC)).mean(axis=(1, 2))
    return self.out(x_BC)


@register("mlp", classifier="out", accepts=SIZED, dense_only=True)
class MLP(nnx.Module):
  """The simplest baseline: two hidden ReLU layers."""

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, width: float = 1.0,
               hidden: tuple[int, ...] = (512, 512), dropout: float = 0.0,
               input_shape=MNIST_SHAPE):
    widths = (math.prod(input_shape), *_scaled(hidden, width))
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs)
                            for a, b in zip(widths[:-1], widths[1:])])
    self.dropout = _dropout(dropout)
    self.out = nnx.Linear(widths[-1], num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    x = x_BHWC.reshape(x_BHWC.shape[0], -1)
    for i, layer in enumerate(self.hidden):
      x = _drop(self.dropout, nnx.relu(layer(x)), dropout_key, i)
    return self.out(x)


def is_classifier(model: str, path: tuple) -> bool:
  """Whether the parameter at `path` (jax.tree_util keys) is `model`'s classifier's."""
  first = path[0]
  classifier = registry.resolve("model", model).classifier
  return getattr(first, "key", getattr(first, "name", None)) == classifier


def takes_dropout_key(name: str, rate: float) -> bool:
  """Whether model `name`'s call is given a `dropout_key` each step: a
  built-in's when `rate` > 0 (the key costs an op); a user's model's when
  its `__call__` has that parameter."""
  entry = registry.resolve("model", name)
  if registry.is_builtin(entry):
    return bool(rate)
  call = getattr(entry.target, "__call__", None) if isinstance(entry.target, type) else None
  try:
    return call is not None and "dropout_key" in inspect.signature(call).parameters
  except (TypeError, ValueError):
    return False


# Weight initialisations (config.init): each framework's defaults.
INITS = ("flax", "torch")


def create(name: str, num_classes: int, rngs: nnx.Rngs, width: float = 1.0,
           depth: int | None = None, dropout: float = 0.0,
           init: str = "flax", input_shape=MNIST_SHAPE) -> nnx.Module:
  """Model `name`; `width` multiplies the features of every hidden layer,
  `depth` (resnet only) sets the number of layers, `dropout` is the rate,
  `init` the initialisation of its convolutions and dense layers: "flax"
  (the layers' own: LeCun normal weights, zero biases) or "torch" (see
  `torch_init`)."""
  entry = registry.resolve("model", name)
  builtin = registry.is_builtin(entry)
  accepts = entry.accepts  # A user's: its factory's signature (plugins.py).
  kwargs = {}
  # Models of one size need not take these; a user's model is always told
  # its input shape where it takes one (plugins.py's protocol).
  for field, value, default in (("width", width, 1.0), ("depth", depth, None),
                                ("dropout", dropout, 0.0),
                                ("input_shape", tuple(input_shape), MNIST_SHAPE)):
    if field not in accepts:
      if value == default:
        continue
      how = ("accept it in models.register" if builtin else
             "take it as a keyword argument of the factory")
      if field == "input_shape":
        raise UserError(f"model '{name}' takes only {MNIST_SHAPE} images, not "
                        f"{tuple(input_shape)}; give it an input_shape argument and {how}")
      raise UserError(f"model '{name}' has no {field} to set; drop config.{field}"
                      f"{'' if builtin else ' or ' + how}")
    if value != default or (field == "input_shape" and not builtin):
      kwargs[field] = value
  module = entry.target(num_classes, rngs=rngs, **kwargs)
  if init == "torch":
    torch_init(module, rngs.params())
  return module


def torch_init(module: nnx.Module, key: jax.Array):
  """Redraws every nnx.Conv and nnx.Linear in `module` as PyTorch's
  Conv2d and Linear draw theirs by default: weights and biases both uniform
  in +-1/sqrt(fan_in) (kaiming_uniform_ with a=sqrt(5) gives that bound for
  the weights), fan_in = input features x kernel area. Other layers (batch
  norm: scale 1, bias 0) already match.

  Each layer takes its own key, folded from `key` by its place in the graph.
  """
  layers = [node for _, node in nnx.iter_graph(module)
            if isinstance(node, (nnx.Conv, nnx.Linear))]
  for i, layer in enumerate(layers):
    kernel = layer.kernel.get_value()
    # Flax kernels are [..., in, out]: every axis but the last feeds a unit.
    bound = 1.0 / math.sqrt(math.prod(kernel.shape[:-1]))
    kernel_key, bias_key = jax.random.split(jax.random.fold_in(key, i))
    layer.kernel.set_value(jax.random.uniform(
        kernel_key, kernel.shape, kernel.dtype, -bound, bound))
    if layer.bias is not None:
      bias = layer.bias.get_value()
      layer.bias.set_value(jax.random.uniform(
          bias_key, bias.shape, bias.dtype, -bound, bound))


def num_params(params: nnx.State) -> int:
  return sum(p.size for p in jax.tree.leaves(params))


def normalize(images_BHWC: jax.Array, mean: float = 0.0,
              std: float = 1.0) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 [B, H, W, C]: (pixel / 255 - mean) / std,
  in [0, 1] by default (config.pixel_mean, config.pixel_std); runs inside
  the step."""
  x = images_BHWC.astype(jnp.float32) * (1.0 / 255.0)
  if mean or std != 1.0:
    x = (x - mean) * (1.0 / std)
  return x
