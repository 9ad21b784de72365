"""Every config field, declared once: its default, check, meaning and flags.

`config.defaults()`, `config.validate`, `--show_config`, docs/config.md (the
field reference, written from this table by `python -m
mnist_jax.config_reference --write`), the resume's refusals and its changed
fields all read `FIELDS`. A field's meaning (`doc`) is Markdown; a rule that
joins several fields (augment and dataset, warmup_epochs and num_epochs...)
is one of config.py's cross-field checks.
"""

import dataclasses
import importlib
from typing import Any

from mnist_jax import checks as c
from mnist_jax import registry


@dataclasses.dataclass(frozen=True)
class Field:
  name: str  # Dotted for a nested field: "sweep.learning_rate".
  default: Any
  check: c.Check
  doc: str
  # The type of a field whose default is None: an ml_collections
  # placeholder, so that --config.<name>=VALUE can replace the None.
  placeholder: type | None = None
  sweepable: bool = False  # config.sweep.<name> may list values to train at once.
  # Its value shapes the training state (parameters, optimizer state):
  # a resume refuses another value, which would not fit the checkpoint.
  structural: bool = False
  # Whether a resume may change it. Structural fields may not, nor the few
  # that would make the rest of training another run's (its seed, its
  # validation split); the others are reported as changed fields.
  resumable: bool = True


_FIXED = {"structural": True, "resumable": False}


def choices(field: str) -> tuple[str, ...]:
  """The names config.<field> may take: a registry's kind (its built-ins), a
  tuple, or a `module:attribute` of the package read when asked (so
  importing this imports none of them)."""
  names = _NAMES[field]
  if field in _COMPONENTS:
    return registry.names(names)
  if isinstance(names, str):
    module, attribute = names.split(":")
    names = getattr(importlib.import_module(f"mnist_jax.{module}"), attribute)
  return tuple(names)


# The names each naming field may take, looked up in one place.
_NAMES = {
    "model": "model", "init": "models:INITS",
    "optimizer": "optimizer", "lr_schedule": "schedule", "loss": "loss",
    "member_loop": "members:MEMBER_LOOPS", "dtype": "config:DTYPES",
    "freeze": "config:FREEZE", "require_backend": "config:BACKEND_FIXES",
    "dataset_format": "data:FORMATS", "data_source": ("idx", "tfds"),
}
# The naming fields whose values are components (registry.py): their kinds.
_COMPONENTS = ("model", "optimizer", "lr_schedule", "loss")
_UNKNOWN = "unknown {name} '{value}'; choose one of {choices}"


def _named(field: str, message: str = _UNKNOWN) -> c.Check:
  if field in _COMPONENTS:
    # Through registry.resolve, the lookup that builds them: what it accepts
    # (a user's `module:attr`, next) the check accepts.
    return lambda name, value: registry.resolve(_NAMES[field], value, label=name)
  return c.one_of(lambda: choices(field), message)


def _known_format(name: str, value):
  if value != "":
    _named("dataset_format", "config.{name}={value!r}: choose one of {choices}, "
           "or '' to detect it")(name, value)


_SWEEP_DOC = ("values of `{0}`, comma-separated, to train at once, one model "
              "per combination of the swept fields (times `num_seeds`){1}; or, "
              "with `sweep_samples`, a distribution to draw them from: "
              "`loguniform(a, b)`, `uniform(a, b)` or `choice(x, y, ...)`; "
              "`''`: not swept")


def _sweep(name: str, value):
  # members.py's parser, the one that draws the points; imported when asked
  # (it imports JAX).
  importlib.import_module("mnist_jax.members").parse_sweep(name, value)


FIELDS: tuple[Field, ...] = (
    # Data.
    Field("dataset", "mnist", c.non_empty_text,
          "`mnist`, `fashion_mnist`, `kmnist`, `mnist160`, `emnist_<split>`, a "
          "MedMNIST name (`pathmnist`, ...), a folder under `data_dir`, or a "
          "path to a folder or `.npz` (docs/data.md, \"Datasets, offline\")", **_FIXED),
    Field("data_dir", None, c.optional(c.text),
          "folder holding `<dataset>/`; `None`: `$MNIST_JAX_DATA`, else "
          "`~/.cache/mnist_jax/datasets`", placeholder=str),
    Field("data_source", "idx", _named("data_source"),
          "`idx` (the four gzip files) or `tfds` (needs the tfds extra)"),
    Field("dataset_format", "", _known_format,
          "a dataset given by path: `idx`, `folder`, `csv` or `npz`; `''`: "
          "detected from what is there"),
    Field("image_size", 0, c.zero_or_positive_int("as stored"),
          "> 0: every image resized to this many pixels squared at load "
          "(Pillow, antialiased; needed for image folders of mixed sizes); "
          "`0`: as stored", **_FIXED),
    # Model.
    Field("model", "cnn", _named("model"),
          "`cnn` (Flax example: conv 32, conv 64, dense 256), `mlp` (two hidden "
          "layers of 512), `speedrun` (conv 24 5x5, max-pool, conv 32 3x3, "
          "max-pool, dense 256), `bn_cnn` (batch-normalised: 2 x conv 32, "
          "max-pool, 2 x conv 64, max-pool, dense 256), `resnet` "
          "(pre-activation wide ResNet, WRN-`depth`-`width`)", **_FIXED),
    Field("width", 1.0, c.positive,
          "multiplies the features of every hidden layer (`2.0`: twice as "
          "wide; for `resnet`, the WRN widening factor k)", **_FIXED),
    Field("depth", 0, c.zero_or_positive_int("the model's default"),
          "`resnet` only: 6n + 4 layers (10, 16, 22, 28...); `0`: 10", **_FIXED),
    Field("dropout", 0.0, c.rate,
          "dropout rate: before the classifier (`cnn`, `speedrun`, `bn_cnn`), "
          "after each hidden layer (`mlp`), between the convolutions of each "
          "block (`resnet`); masks drawn from the step's key, none at evaluation"),
    Field("init", "flax", _named("init"),
          "weights of convolutions and dense layers: `flax` (LeCun normal, zero "
          "biases) or `torch` (PyTorch's defaults: weights and biases uniform "
          "in ±1/sqrt(fan_in)), to reproduce a PyTorch recipe"),
    Field("pixel_mean", 0.0, c.number,
          "the model sees (pixel / 255 - `pixel_mean`) / `pixel_std`; the "
          "defaults keep [0, 1]; MNIST's own statistics are 0.1307 and 0.3081"),
    Field("pixel_std", 1.0, c.positive, "see `pixel_mean`"),
    # Optimizer and schedule.
    Field("optimizer", "sgd", _named("optimizer"),
          "`sgd` (with `momentum`, `nesterov`), `momentum`, `nesterov` (SGD "
          "with `momentum`, default 0.9), `adam`, `adamw`, `lion`, `muon` "
          "(optax.contrib: Muon for dense weights, AdamW for the rest)", **_FIXED),
    Field("learning_rate", 0.1, c.positive,
          "peak learning rate", sweepable=True),
    Field("momentum", 0.9, c.rate,
          "`sgd`: its momentum, `0` for plain SGD (on or off changes the "
          "optimizer state: a resume refuses the switch); `momentum`, "
          "`nesterov`: their momentum, `0` taken as 0.9", sweepable=True),
    Field("nesterov", False, c.boolean,
          "`sgd` only: Nesterov momentum (the `nesterov` optimizer is `sgd` "
          "with it on)"),
    Field("adam_b1", 0.9, c.rate,
          "`adam`, `adamw`: the decay rate of the first moment (PyTorch's beta1)"),
    Field("adam_b2", 0.999, c.rate,
          "`adam`, `adamw`: the decay rate of the second moment (beta2)"),
    Field("adam_eps", 1e-8, c.positive,
          "`adam`, `adamw`: the epsilon added to the denominator"),
    Field("weight_decay", 0.0, c.zero_or_positive("off"),
          "`sgd`, `momentum`, `nesterov`: L2 added to the gradient; `adamw`, "
          "`lion`, `muon`: decoupled", sweepable=True),
    Field("grad_clip_norm", 0.0, c.zero_or_positive("off"),
          "clip gradients to this global norm; `0`: off"),
    Field("loss", "cross_entropy", _named("loss"),
          "the training loss: `cross_entropy` (softmax cross-entropy against the "
          "one-hot labels, smoothed by `label_smoothing`, mixed by `mixup` and "
          "`cutmix`), or your own as `module:attribute` or `file.py:attribute` "
          "(README, \"Your own model, optimizer, loss, augmentation\"); "
          "evaluation reports cross-entropy"),
    Field("label_smoothing", 0.0, c.rate,
          "label smoothing of the training loss (the test loss is unsmoothed)"),
    Field("ema_decay", 0.0, c.rate,
          "> 0 (e.g. `0.999`): keep a moving average of the weights and batch "
          "statistics (decay warmed up as min(decay, (1+t)/(10+t))), evaluate "
          "it after each epoch too (`ema_test_accuracy`), and let `evaluate "
          "--ema` use it; on or off changes the training state (a resume "
          "refuses the switch)"),
    Field("lr_schedule", "cosine", _named("lr_schedule"),
          "`constant`; `step` (times `lr_step_factor` at each of "
          "`lr_step_epochs`); `cosine` decay to 0 after `warmup_epochs` of "
          "linear warm-up; `onecycle` (up over the first `onecycle_pct_start`, "
          "then down)"),
    Field("lr_step_epochs", "5,8",
          c.comma_numbers("epochs", "5,8"),
          "`step` only: the epochs, comma-separated, at which the learning "
          "rate is multiplied by `lr_step_factor`"),
    Field("lr_step_factor", 0.1, c.positive, "`step` only: that factor"),
    Field("warmup_epochs", 0.0, c.zero_or_positive(),
          "`cosine` only: epochs (fractions too) of linear warm-up to "
          "`learning_rate`, fewer than `num_epochs`"),
    Field("onecycle_pct_start", 0.3, c.fraction,
          "`onecycle` only: the rising part of training, a fraction of all steps"),
    Field("onecycle_div_factor", 25.0, c.positive,
          "`onecycle` only, as PyTorch's OneCycleLR: the rate starts at "
          "`learning_rate` / `onecycle_div_factor`"),
    Field("onecycle_final_div_factor", 1e4, c.positive,
          "`onecycle` only: the rate ends at its start / "
          "`onecycle_final_div_factor`"),
    # Augmentation and precision.
    Field("augment", "", c.text,
          "on-device augmentation of each training batch, comma-separated: "
          "`flip` (left-right; refused for digits), `translate` (up to "
          "`translate_pixels` each way), `erase` (random erasing), `mixup`, "
          "`cutmix` (each image mixed with its partner, the batch reversed, and "
          "the loss with the partner's label; weight ~ Beta(`mix_alpha`, "
          "`mix_alpha`)); each example draws its own from the step's key"),
    Field("translate_pixels", 2, c.zero_or_positive_int("no shift"),
          "`translate`: the largest shift, in pixels, each way; less than the "
          "image's side"),
    Field("mix_alpha", 1.0, c.positive,
          "`mixup`, `cutmix`: the mixing weight is drawn from Beta(`mix_alpha`, "
          "`mix_alpha`)"),
    Field("tta", "", c.text,
          "test-time augmentation: evaluation (and evaluate, predict, export) "
          "averages the probabilities of these views, comma-separated: `flip`, "
          "`translate` (1-pixel shifts)"),
    Field("dtype", "float32", _named("dtype", "config.{name}={value!r}: choose "
                                     "one of {choices}"),
          "`bfloat16`: compute in bf16 with float32 parameters, optimizer state "
          "and loss (mixed precision; pays on GPU/TPU, slower on CPU, see "
          "`benchmarks/README.md`)"),
    # Training.
    Field("init_from", "", c.text,
          "a run's workdir or one of its checkpoint folders to start from: its "
          "parameters and batch statistics, with a fresh optimizer state, step "
          "and data order (fine-tuning, transfer); the model must match; "
          "another number of classes gets a fresh classifier; the run's own "
          "checkpoints win on resume"),
    Field("freeze", "none",
          _named("freeze", "config.{name}={value!r} names no parameters to keep "
                 "fixed; choose {choices}"),
          "parameters kept fixed: `none` (train all) or `features` (all but the "
          "classifier: a linear probe)", **_FIXED),
    Field("validation_size", 0, c.zero_or_positive_int("off"),
          "images of the training split held out as the validation split, "
          "stratified by class and chosen by `validation_seed` alone (every seed "
          "and config of a comparison holds out the same ones); datasets that "
          "ship one (MedMNIST, an image folder's `val/`) use theirs. With a "
          "validation split, the best epoch, early stopping, the best checkpoint "
          "and rankings are chosen on it; without, on the test set (and the "
          "logs say so)", resumable=False),
    Field("validation_seed", 0, c.zero_or_positive_int("the first split"),
          "which images `validation_size` holds out; independent of `seed`",
          resumable=False),
    Field("early_stopping_patience", 0, c.zero_or_positive_int("off"),
          "stop when validation accuracy has not improved (by more than "
          "`early_stopping_min_delta`) for this many epochs; `0`: off; needs a "
          "validation split. Rerunning a run that stopped early does not train "
          "on; raising `num_epochs` or the patience does"),
    Field("early_stopping_min_delta", 0.0, c.zero_or_positive(),
          "the improvement in validation accuracy that counts, for "
          "`early_stopping_patience`"),
    Field("batch_size", 128, c.positive_int,
          "global batch, split over the devices; must divide by the device count"),
    Field("steps_per_epoch", 0, c.zero_or_positive_int("every full batch"),
          "batches per epoch: `0`, every full batch of the training split; `N`, "
          "the first `N` of each epoch's shuffle (the learning-rate schedule "
          "spans `num_epochs * N` steps)"),
    Field("num_epochs", 10, c.positive_int, "epochs to train"),
    Field("seed", 0, c.integer,
          "initialisation and data order; same seed, same numbers on the same "
          "machine", resumable=False),
    # Several models in one compiled program.
    Field("num_seeds", 1, c.positive_int,
          "train seeds `seed`, `seed + 1`, ... at once, in one compiled program "
          "(docs/comparisons.md, \"Many models in one run\")", **_FIXED),
    Field("sweep.learning_rate", "", _sweep,
          _SWEEP_DOC.format("learning_rate", ", the schedule's peak"),
          resumable=False),
    Field("sweep.weight_decay", "", _sweep,
          _SWEEP_DOC.format("weight_decay", ""), resumable=False),
    Field("sweep.momentum", "", _sweep,
          _SWEEP_DOC.format("momentum", ""), resumable=False),
    Field("sweep_samples", 0, c.zero_or_positive_int("a grid"),
          "> 0: random search, this many sweep points drawn from the "
          "`loguniform(a, b)`, `uniform(a, b)` or `choice(x, y, ...)` values of "
          "`sweep.<field>`, each trained with `num_seeds` seeds; `0`: the grid "
          "of every combination of comma-separated values", **_FIXED),
    Field("sweep_seed", 0, c.zero_or_positive_int("the first draw"),
          "the draw of `sweep_samples` points; independent of `seed`",
          resumable=False),
    Field("sweep_halving_epochs", "", c.comma_numbers("epochs", "1,3"),
          "successive halving: at the end of each of these epochs, "
          "comma-separated, keep the best 1/`sweep_halving_eta` (rounded up) of "
          "the sweep points, with all their seeds, by their seeds' mean validation "
          "accuracy (ties: validation loss), and train on with them only (needs "
          "a validation split); `''`: off", resumable=False),
    Field("sweep_halving_eta", 3, c.positive_int,
          "successive halving: each rung keeps ceil(points / eta) of the sweep "
          "points; at least 2", resumable=False),
    Field("member_loop", "auto",
          _named("member_loop", "config.{name}={value!r}: choose one of {choices}"),
          "how a run of several models runs their steps: `vmap` (batched into "
          "one computation), `unroll` (one after another in the same program); "
          "`auto`: unroll on CPU, where vmapped convolutions ran 3.3 to 5.5 "
          "times slower than unrolled ones "
          "(`benchmarks/results/cpu-cpu/harness-1dev-20261121T0747.json`), vmap "
          "elsewhere"),
    Field("eval_batch_size", 500, c.positive_int,
          "global evaluation batch, rounded up to a multiple of the device count"),
    # The machine: compiled calls, devices, caches, processes, checkpoints.
    Field("steps_per_call", 0, c.zero_or_positive_int("per-backend default"),
          "training steps per compiled call; `0`: 1 on CPU, the whole epoch on "
          "GPU/TPU (measured per backend); CPU unrolls a call's steps, GPU/TPU "
          "scan them"),
    Field("profile_steps", 0, c.zero_or_positive_int("off"),
          "> 0: a JAX profiler trace of this many training steps, from the end "
          "of the first compiled call, in `<workdir>/profile/` (docs/gpus-and-tpus.md, "
          "\"Profiling\"); `0`: off, at no cost"),
    Field("cpu_devices", 0, c.zero_or_positive_int("automatic"),
          "CPU only: virtual devices each batch is split over; `0` picks one per "
          "core, or more so each takes about 64 images (`runtime.auto_cpu_devices`); "
          "a count in `$XLA_FLAGS` wins. Results differ between device counts "
          "by float rounding: fix it to compare machines"),
    Field("require_backend", "",
          _named("require_backend", "config.{name}={value!r}: choose gpu, tpu, "
                 "cpu, or '' for any backend"),
          "`gpu`, `tpu` or `cpu`: stop at start-up, before loading data, with a "
          "one-line error unless JAX's backend is that one (e.g. a benchmark on "
          "a machine whose jaxlib is the CPU build); `''`: any backend"),
    Field("plots", True, c.boolean,
          "write the PNG plots in `<workdir>/plots` at the end: curves, "
          "confusion matrix, samples"),
    Field("compilation_cache", True, c.boolean,
          "JAX's persistent compilation cache, for a fast second start"),
    Field("compilation_cache_dir", None, c.optional(c.text),
          "its folder; `None`: `$XDG_CACHE_HOME` (else `~/.cache`)"
          "`/mnist_jax/jax_compilation_cache`", placeholder=str),
    Field("distributed", False, c.boolean,
          "several processes (hosts) through `jax.distributed` (docs/gpus-and-tpus.md, "
          "\"Several hosts\"); also started when `coordinator_address` or "
          "`$JAX_COORDINATOR_ADDRESS` is set, or under SLURM with more than one "
          "task; with no coordinator, JAX finds it (TPU pod, SLURM)"),
    Field("coordinator_address", None, c.optional(c.non_empty_text),
          "`host:port` of process 0's coordination service", placeholder=str),
    Field("coordinator_bind_address", None, c.optional(c.non_empty_text),
          "where process 0's coordination service listens; `None`: every "
          "interface", placeholder=str),
    Field("num_processes", None, c.optional(c.positive_int),
          "processes in all; `None`: from the environment", placeholder=int),
    Field("process_id", None, c.optional(c.zero_or_positive_int("the first")),
          "this process's index, below `num_processes`; `None`: from the "
          "environment", placeholder=int),
    Field("heartbeat_timeout_seconds", 30, c.positive_int,
          "a process that stops answering for this long stops all the others"),
    Field("checkpoint_every_epochs", 1, c.positive_int,
          "checkpoint period in epochs, in `<workdir>/checkpoints` (the last "
          "epoch is always saved; rerunning a command resumes)"),
    Field("checkpoints_to_keep", 3, c.positive_int,
          "how many checkpoints to keep"),
)

BY_NAME = {field.name: field for field in FIELDS}
