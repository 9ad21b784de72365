"""MNIST with a model of this file's own: a small MLP-Mixer (Tolstikhin et al.
2021, "MLP-Mixer: An all-MLP Architecture for Vision", arXiv:2105.01601).

The model is not in the package: `config.model = "own_model.py:Mixer"` names
the class below (a file spec, looked for in the working directory, else in
this config's folder), and the trainer builds it as it builds a built-in.
4x4 patches (49 tokens for 28x28 images) embedded to 64 channels, 4 mixer
blocks (LayerNorm, token-mixing MLP 49-64-49, LayerNorm, channel-mixing MLP
64-128-64, GELU, residuals), LayerNorm, mean over tokens, a dense
classifier: 94,734 parameters against the cnn's 824,458, and about the cnn's
multiply-adds per image (4.87M against 4.64M). `input_shape` is honoured:
any channel count (RGB MedMNIST), any size that 4x4 patches tile (28, 64,
...); `width` scales the channels, `depth` sets the number of blocks,
`dropout` drops features before the classifier.

Recipe: AdamW (weight decay 0.05), cosine decay after half an epoch of
warm-up, batch 128, 4 epochs: configs/mnist.py's budget. The learning rate,
6e-3, was chosen on 5,000 validation images from 1e-3, 3e-3 and 6e-3 in
one-epoch runs (validation accuracy 93.94%, 95.36%, 95.80%; the highest of
the grid), benchmarks/results/cpu-cpu/own-model-lr-sweep-1epoch.json.

Command:  python -m mnist_jax.main --config=configs/own_model.py
Result:   98.27% mean test accuracy over seeds 0-2 (98.16..98.35%) after 4
          epochs, against configs/mnist.py's cnn 99.15% (99.13..99.18%;
          Welch p 0.003) in the same comparison: a fair entrant, not a
          better one (2 epochs, in an earlier run: 97.78% against 98.85%,
          own-plugins-compare-mnist-2epochs.json). Run as `python -m
          mnist_jax.compare configs/mnist.py configs/own_model.py
          configs/own_optimizer.py --seeds=3` on a 2-core AMD EPYC with 2
          virtual CPU devices, jax 0.10.2, 2026-12-05, while other engineers'
          tests shared the cores (its times are not compared).
Record:   benchmarks/results/cpu-cpu/own-plugins-compare-mnist.json
"""

import jax
import jax.numpy as jnp
from flax import nnx

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "mnist"
  config.model = "own_model.py:Mixer"
  config.optimizer = "adamw"
  config.learning_rate = 6e-3
  config.weight_decay = 0.05
  config.warmup_epochs = 0.5
  config.num_epochs = 4
  return config


class MixerBlock(nnx.Module):
  """Token mixing (an MLP across the patches, per channel), then channel
  mixing (an MLP across the channels, per patch); pre-norm, residual."""

  def __init__(self, tokens: int, channels: int, token_hidden: int,
               channel_hidden: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(channels, rngs=rngs)
    self.token1 = nnx.Linear(tokens, token_hidden, rngs=rngs)
    self.token2 = nnx.Linear(token_hidden, tokens, rngs=rngs)
    self.norm2 = nnx.LayerNorm(channels, rngs=rngs)
    self.channel1 = nnx.Linear(channels, channel_hidden, rngs=rngs)
    self.channel2 = nnx.Linear(channel_hidden, channels, rngs=rngs)

  def __call__(self, x_BTC: jax.Array) -> jax.Array:
    y_BCT = jnp.swapaxes(self.norm1(x_BTC), 1, 2)
    y_BCT = self.token2(nnx.gelu(self.token1(y_BCT)))
    x_BTC = x_BTC + jnp.swapaxes(y_BCT, 1, 2)
    y_BTC = self.channel2(nnx.gelu(self.channel1(self.norm2(x_BTC))))
    return x_BTC + y_BTC


class Mixer(nnx.Module):
  """A small MLP-Mixer: the model protocol of mnist_jax/plugins.py, float32
  images [B, H, W, C] to logits [B, num_classes]."""

  classifier = "head"  # Its last layer: what freeze and fine-tuning name.

  def __init__(self, num_classes: int, *, rngs: nnx.Rngs, input_shape=(28, 28, 1),
               width: float = 1.0, depth: int | None = None, dropout: float = 0.0,
               patch: int = 4):
    h, w, c = input_shape
    if h % patch or w % patch:
      raise ValueError(f"Mixer's {patch}x{patch} patches do not tile {h}x{w} "
                       f"images; set config.image_size to a multiple of {patch}")
    channels = max(1, round(64 * width))
    tokens = (h // patch) * (w // patch)
    self.patch = patch
    # A patch's pixels to its embedding: a strided convolution.
    self.embed = nnx.Conv(c, channels, kernel_size=(patch, patch),
                          strides=(patch, patch), padding="VALID", rngs=rngs)
    self.blocks = nnx.List([
        MixerBlock(tokens, channels, token_hidden=64, channel_hidden=2 * channels,
                   rngs=rngs) for _ in range(depth or 4)])
    self.norm = nnx.LayerNorm(channels, rngs=rngs)
    self.dropout = nnx.Dropout(dropout) if dropout else None
    self.head = nnx.Linear(channels, num_classes, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, dropout_key=None) -> jax.Array:
    x = self.embed(x_BHWC)
    x_BTC = x.reshape(x.shape[0], -1, x.shape[-1])
    for block in self.blocks:
      x_BTC = block(x_BTC)
    x_BC = self.norm(x_BTC).mean(axis=1)
    if self.dropout is not None:
      x_BC = self.dropout(x_BC, rngs=dropout_key)
    return self.head(x_BC)
