"""The config: every field's default, validation, and fields older runs lack.

A config is an `ml_collections.ConfigDict` with the fields of `defaults()`
(the README's "Config reference" says what each means). `validate` is the
one place that checks a config before anything runs; `with_defaults` is the
one place that fills the fields a config saved in an older checkpoint lacks.
Rooms below take the pieces built from a valid config, not the config.
"""

import ast
import importlib.util
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections

from mnist_jax import augment, models, optim
from mnist_jax import members as members_lib
from mnist_jax.errors import UserError


def defaults() -> ml_collections.ConfigDict:
  """Every field with its default; configs/ start from these."""
  config = ml_collections.ConfigDict()
  _add_data_and_model_fields(config)
  _add_training_fields(config)
  _add_system_fields(config)
  return config


def _add_data_and_model_fields(config: ml_collections.ConfigDict):
  # Data.
  # mnist, fashion_mnist, kmnist, mnist160, emnist_<split>, a MedMNIST name
  # (pathmnist, ...), a folder in data_dir, or a path to a folder or .npz.
  config.dataset = "mnist"
  # None: $MNIST_JAX_DATA, else ~/.cache/mnist_jax/datasets. A typed
  # placeholder, so that --config.data_dir=DIR can override the None.
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.data_source = "idx"     # "idx" (the four gzip files) or "tfds" (needs the tfds extra).
  # A dataset given by path: "idx", "folder", "csv" or "npz"; "" detects it.
  config.dataset_format = ""
  # > 0: every image resized to this many pixels squared at load (Pillow,
  # antialiased); needed for image folders of mixed sizes.
  config.image_size = 0
  # Model and optimizer.
  config.model = "cnn"           # cnn, mlp, speedrun, bn_cnn, resnet.
  config.width = 1.0             # Multiplies the features of every hidden layer.
  config.depth = 0               # resnet only: 6n + 4 layers; 0: its default, 10.
  # Dropout rate: before the classifier (cnn, speedrun, bn_cnn), after each
  # hidden layer (mlp), between the convolutions of each block (resnet).
  config.dropout = 0.0
  # Weights of convolutions and dense layers: "flax" (LeCun normal, zero
  # biases) or "torch" (PyTorch's defaults: weights and biases uniform in
  # +-1/sqrt(fan_in)), to reproduce a PyTorch recipe.
  config.init = "flax"
  # Inputs fed to the model: (pixel / 255 - pixel_mean) / pixel_std. The
  # defaults keep [0, 1]; MNIST's own statistics are 0.1307 and 0.3081.
  config.pixel_mean = 0.0
  config.pixel_std = 1.0
  config.optimizer = "sgd"       # sgd, momentum, nesterov, adam, adamw, lion, muon.
  config.learning_rate = 0.1
  config.momentum = 0.9          # sgd only; 0 for plain SGD.
  config.nesterov = False        # sgd only.
  config.adam_b1 = 0.9           # adam, adamw: the moments' decay rates
  config.adam_b2 = 0.999         # (PyTorch's betas) and the denominator's
  config.adam_eps = 1e-8         # epsilon.
  # sgd, momentum, nesterov: L2 added to the gradient; adamw, lion, muon: decoupled.
  config.weight_decay = 0.0
  config.grad_clip_norm = 0.0    # Clip gradients to this global norm; 0: off.
  config.label_smoothing = 0.0   # Training loss only; evaluation is unsmoothed.
  # > 0: keep a moving average of the weights and batch statistics (e.g.
  # 0.999), evaluate it too after each epoch (ema_test_accuracy); evaluate
  # --ema uses it.
  config.ema_decay = 0.0
  config.lr_schedule = "cosine"  # constant, step, cosine, onecycle.
  config.lr_step_epochs = "5,8"  # step only: epochs at which the lr is multiplied
  config.lr_step_factor = 0.1    # by this factor.
  config.warmup_epochs = 0.0     # cosine only.
  # onecycle only, as PyTorch's OneCycleLR: the rising part of training, from
  # learning_rate / div_factor, then down to that / final_div_factor.
  config.onecycle_pct_start = 0.3
  config.onecycle_div_factor = 25.0
  config.onecycle_final_div_factor = 1e4


def _add_training_fields(config: ml_collections.ConfigDict):
  # On-device augmentation of each training batch, comma-separated: "flip"
  # (left-right, never for digits), "translate" (up to translate_pixels),
  # "erase" (random erasing), "mixup" and/or "cutmix" (with partners' labels;
  # mixing weight ~ Beta(mix_alpha, mix_alpha)).
  config.augment = ""
  config.translate_pixels = 2
  config.mix_alpha = 1.0
  # Test-time augmentation: evaluation averages the predicted probabilities
  # of these views, comma-separated: "flip", "translate" (1-pixel shifts).
  config.tta = ""
  # "bfloat16": compute in bf16, keeping float32 parameters, optimizer state
  # and loss (mixed precision; pays on GPU/TPU, not on CPU).
  config.dtype = "float32"
  # Training.
  # A run (workdir) or one of its checkpoints to start from: its parameters and
  # batch statistics, not its optimizer state or step (fine-tuning, transfer).
  config.init_from = ""
  # Parameters kept fixed: "none" (train all), "features" (all but the
  # classifier: a linear probe).
  config.freeze = "none"
  # Images of the training split held out as the validation split (0: none),
  # stratified by class and chosen by validation_seed alone, so every seed
  # and config of a comparison holds out the same ones. Datasets that ship a
  # validation split (MedMNIST, an image folder's val/) use theirs. With one,
  # every choice (best epoch, early stopping, best checkpoint, rankings) is
  # made on it; without, on the test set.
  config.validation_size = 0
  config.validation_seed = 0
  # Stop when validation accuracy has not improved by more than the min delta
  # for this many epochs (0: never); needs a validation split.
  config.early_stopping_patience = 0
  config.early_stopping_min_delta = 0.0
  config.batch_size = 128
  # Batches in an epoch: 0 takes every full batch of the training split; N
  # takes the first N of each epoch's shuffle (a shorter schedule: the
  # learning-rate schedule spans num_epochs * N steps).
  config.steps_per_epoch = 0
  config.num_epochs = 10
  config.seed = 0
  # Many models in one compiled program (jax.vmap; see mnist_jax/members.py):
  # num_seeds seeds (seed, seed + 1, ...) for every point of the sweep, the
  # combinations of the values below, given as numbers separated by commas,
  # e.g. --config.sweep.learning_rate=0.01,0.03,0.1. Empty: not swept.
  config.num_seeds = 1
  config.sweep = ml_collections.ConfigDict(
      {"learning_rate": "", "weight_decay": "", "momentum": ""})
  # How a run of several members runs their steps: "vmap" (batched), "unroll"
  # (one after another in the same program), "auto": unroll on CPU, where
  # vmapped convolutions ran 3.3 to 5.5 times slower than unrolled ones
  # (benchmarks/results/cpu-cpu/harness-1dev-20261121T0747.json), vmap elsewhere.
  config.member_loop = "auto"
  config.eval_batch_size = 500


def _add_system_fields(config: ml_collections.ConfigDict):
  """How a run uses the machine: compiled calls, devices, caches, processes,
  checkpoints."""
  # Training steps per compiled call; 0 picks the measured per-backend
  # default (1 on CPU, the whole epoch on GPU/TPU).
  config.steps_per_call = 0
  # > 0: a JAX profiler trace of this many training steps, from the end of
  # the first compiled call (compilation and warm-up left out), written to
  # <workdir>/profile (TensorBoard's profile plugin, Perfetto). 0: off, and
  # the loop is as without it.
  config.profile_steps = 0
  # CPU only: virtual devices each batch is split over. 0 picks one per core,
  # or more so that each device takes about 64 images (speedrun, batch 256:
  # 3,872 images/s on 1 device, 8,699 on 4; benchmarks/README.md, item 6, and
  # its records; see runtime.auto_cpu_devices). Results differ
  # between device counts by float rounding: fix it to compare machines.
  config.cpu_devices = 0
  # "gpu", "tpu" or "cpu": stop at start-up unless JAX's backend is that one
  # (a benchmark never runs on the CPU because jaxlib lacks CUDA). "": any.
  config.require_backend = ""
  # PNG plots in <workdir>/plots at the end: curves, confusion matrix, samples.
  config.plots = True
  # JAX's persistent compilation cache, for a fast second start. The folder
  # None means $XDG_CACHE_HOME (else ~/.cache)/mnist_jax/jax_compilation_cache.
  config.compilation_cache = True
  config.compilation_cache_dir = ml_collections.config_dict.placeholder(str)
  # Several processes (hosts) through jax.distributed. Also started when the
  # coordinator is set, by $JAX_COORDINATOR_ADDRESS, or under SLURM with more
  # than one task; with no coordinator, JAX finds it (TPU pod, SLURM).
  config.distributed = False
  config.coordinator_address = ml_collections.config_dict.placeholder(str)
  # Where process 0's coordination service listens; None: every interface.
  config.coordinator_bind_address = ml_collections.config_dict.placeholder(str)
  config.num_processes = ml_collections.config_dict.placeholder(int)
  config.process_id = ml_collections.config_dict.placeholder(int)
  # A process that stops answering for this long stops all the others.
  config.heartbeat_timeout_seconds = 30
  # Checkpoints, in <workdir>/checkpoints; rerunning a command resumes.
  config.checkpoint_every_epochs = 1
  config.checkpoints_to_keep = 3


# config.dtype: the computation dtype; parameters, optimizer state and loss
# stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def with_defaults(config: ml_collections.ConfigDict | dict[str, Any]
                  ) -> ml_collections.ConfigDict:
  """`config` (a ConfigDict, or a checkpoint's saved dict) with the fields it
  lacks taken from `defaults()`: a run saved before a field existed behaved
  as its default does."""
  merged = defaults()
  with merged.unlocked():  # Fields that are not defaults' are kept too.
    merged.update(config)  # Recurses into `sweep`; ints become float fields.
  return merged


def differences(config: ml_collections.ConfigDict) -> str:
  """The fields that differ from `defaults()`, as `name=value, ...`."""
  default = defaults().to_dict()
  return ", ".join(f"{k}={v!r}" for k, v in config.to_dict().items()
                   if k not in default or default[k] != v)


def validate(config: ml_collections.ConfigDict):
  """Config errors that need no data: one message each, with the fix."""
  for field in ("batch_size", "num_epochs", "eval_batch_size",
                "checkpoint_every_epochs", "checkpoints_to_keep"):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise UserError(f"config.{field} must be a positive integer, got "
                      f"{config[field]!r}")
  if not (isinstance(config.width, (int, float)) and config.width > 0):
    raise UserError(f"config.width must be a positive number, got {config.width!r}")
  if not config.learning_rate > 0:
    raise UserError(f"config.learning_rate must be positive, got "
                    f"{config.learning_rate!r}")
  for field in ("validation_size", "early_stopping_patience", "profile_steps",
                "steps_per_epoch"):
    if not isinstance(config[field], int) or config[field] < 0:
      raise UserError(f"config.{field} must be 0 (off) or a positive integer, "
                      f"got {config[field]!r}")
  if not config.early_stopping_min_delta >= 0:
    raise UserError(f"config.early_stopping_min_delta must be 0 or positive, "
                    f"got {config.early_stopping_min_delta!r}")
  if not isinstance(config.image_size, int) or config.image_size < 0:
    raise UserError(f"config.image_size must be 0 (as stored) or a positive "
                    f"number of pixels, got {config.image_size!r}")
  if config.freeze not in FREEZE:
    raise UserError(f"config.freeze={config.freeze!r} names no parameters to "
                    f"keep fixed; choose {' or '.join(FREEZE)}")
  if config.freeze != "none" and config.model not in models.CLASSIFIERS:
    raise UserError(f"config.freeze={config.freeze}: model '{config.model}' has "
                    f"no classifier registered in models.CLASSIFIERS; add it there")
  if config.dataset_format not in ("", "idx", "folder", "csv", "npz"):
    raise UserError(f"config.dataset_format={config.dataset_format!r}: choose "
                    f"idx, folder, csv or npz, or '' to detect it")
  if not isinstance(config.cpu_devices, int) or config.cpu_devices < 0:
    raise UserError("config.cpu_devices must be 0 (automatic) or a positive "
                    f"number of devices, got {config.cpu_devices!r}")
  if not config.mix_alpha > 0:
    raise UserError(f"config.mix_alpha must be positive, got {config.mix_alpha!r}")
  if not 0 <= config.dropout < 1:
    raise UserError(f"config.dropout is a rate in [0, 1), got {config.dropout!r}")
  if not 0 <= config.label_smoothing < 1:
    raise UserError(f"config.label_smoothing must be in [0, 1), got "
                    f"{config.label_smoothing!r}")
  if config.grad_clip_norm < 0:
    raise UserError(f"config.grad_clip_norm must be 0 (off) or positive, got "
                    f"{config.grad_clip_norm!r}")
  if config.steps_per_call < 0:
    raise UserError("config.steps_per_call must be 0 (per-backend default) or "
                    f"positive, got {config.steps_per_call}")
  if not config.pixel_std > 0:
    raise UserError(f"config.pixel_std must be positive, got {config.pixel_std!r}")
  if not (0 <= config.adam_b1 < 1 and 0 <= config.adam_b2 < 1):
    raise UserError(f"config.adam_b1 and config.adam_b2 must be in [0, 1), got "
                    f"{config.adam_b1!r} and {config.adam_b2!r}")
  if not config.adam_eps > 0:
    raise UserError(f"config.adam_eps must be positive, got {config.adam_eps!r}")
  if not (0 < config.onecycle_pct_start < 1 and config.onecycle_div_factor > 0
          and config.onecycle_final_div_factor > 0):
    raise UserError("config.onecycle_pct_start must be in (0, 1) and the "
                    "onecycle_div_factor and onecycle_final_div_factor positive, "
                    f"got {config.onecycle_pct_start!r}, "
                    f"{config.onecycle_div_factor!r}, "
                    f"{config.onecycle_final_div_factor!r}")
  _check_names(config)


def _check_names(config: ml_collections.ConfigDict):
  """The fields that name something: each must name a known one."""
  for field, names in (("model", models.MODELS), ("optimizer", optim.OPTIMIZERS),
                       ("init", models.INITS), ("lr_schedule", optim.SCHEDULES)):
    if config[field] not in names:
      raise UserError(f"unknown {field} '{config[field]}'; choose one of "
                      f"{', '.join(names)}")
  augment.parse(config.augment, config.dataset)
  augment.parse_tta(config.tta, config.dataset)
  members_lib.Members.from_config(config)
  # Checks the name only: asking JAX for the backend here would start it
  # before configure_cpu_devices.
  members_lib.member_loop(config.member_loop, backend="cpu")
  if config.require_backend not in BACKEND_FIXES:
    raise UserError(f"config.require_backend={config.require_backend!r}: choose "
                    f"gpu, tpu, cpu, or '' for any backend")
  if config.dtype not in DTYPES:
    raise UserError(f"config.dtype={config.dtype!r}: choose one of "
                    f"{', '.join(DTYPES)}")


# config.freeze: what stays fixed.
FREEZE = ("none", "features")

# config.require_backend: how to get each backend.
BACKEND_FIXES = {
    "": "", "gpu": "install JAX's CUDA build (pip install -e '.[cuda12]' or '.[cuda13]')",
    "tpu": "install JAX's TPU build on a TPU VM (pip install -e '.[tpu]')",
    "cpu": "hide the accelerators (JAX_PLATFORMS=cpu)"}


def from_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, as `--config=path` would load it."""
  if not Path(path).is_file():
    raise UserError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"compared_{Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path} does not define get_config()")
  return module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]):
  for override in overrides:
    field, sep, text = override.partition("=")
    if not sep:
      raise UserError(f"--override={override}: expected field=value")
    if field not in config:
      raise UserError(f"--override={override}: the config has no field '{field}'")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # A bare word: a string, e.g. optimizer=adam.
    with config.unlocked():
      config[field] = value
