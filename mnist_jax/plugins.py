"""A researcher's own components: `module.path:attribute` and `file.py:attribute`.

Wherever a config names a built-in (`model`, `optimizer`, `loss`, each entry
of `augment` and `tta`), it may name the user's own instead:

  config.model = "my_models:Mixer"             # importlib, from sys.path
  config.optimizer = "optimizers.py:cautious"  # a file: beside the working
                                               # directory, else the config's

`load(kind, spec)` imports it once per process and returns its target and
the attributes a built-in's registry Entry has, read from the target with
the defaults a built-in that declares nothing gets (`DECLARED`);
registry.resolve makes the Entry, so one lookup serves both. `check` then
calls each plugin once under `jax.eval_shape`, before anything compiles, so
that a mistake is one line naming the spec and what was expected rather
than a trace from inside `jit`.

From Python, `mnist_jax.train(config, model=MyNet)` takes the objects
themselves (`spec_of`): one defined in an importable module is recorded by
its `module:attribute`; one defined in a notebook or script (`__main__`) or
inside a function resolves in this process only, and a later command-line
`evaluate` says so in one line.

A checkpoint records the plugins of its run (`used`: each spec, and for a
file its absolute path and the sha256 of the source that ran); reading it
back hands that record to `recall`, so that resume, evaluate, predict and
export find the file from any working directory, and warn where it changed.
"""

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

from absl import logging

from mnist_jax.errors import SpecError

# What an entry of each kind declares, and its default for a plugin that
# declares nothing: the attributes of the built-ins' register calls.
DECLARED = {
    "model": {"classifier": None, "dense_only": False},
    "optimizer": {"hyperparameters": ()},
    "augmentation": {"mirrors": False},
    "tta": {"mirrors": False},
    "loss": {}, "schedule": {},
}
PROTOCOLS = {
    "model": "a class or function: factory(num_classes, *, rngs, input_shape, "
             "[width, depth, dropout]) -> nnx.Module",
    "optimizer": "a function: make(learning_rate, config) -> "
                 "optax.GradientTransformation",
    "loss": "a function: loss(logits_BK, labels_BK) -> loss_B",
    "augmentation": "a function: augment(key, images_BHWC) -> images_BHWC",
    "tta": "a function: view(images_BHWC) -> images_BHWC",
    "schedule": "a function: make(config, steps_per_epoch, lr) -> optax.Schedule",
}
# Config fields a model's factory may take besides num_classes, rngs and
# input_shape (which every plugin model is given).
MODEL_FIELDS = ("width", "depth", "dropout")

# Folders a file spec is looked for in after the working directory: each
# config file's (config.from_file, main) and each checkpoint's recorded one.
_SEARCH_DIRS: list[Path] = []
# (kind, spec, its file) -> Entry, so a file is executed once per process
# (its classes keep one identity, and jit's caches hold).
_LOADED: dict[tuple[str, str, Path | None], tuple[Any, dict[str, Any]]] = {}
# Objects handed to mnist_jax.train that no import can find again.
_OBJECTS: dict[str, Any] = {}
# Each file executed: the sha256 of the source that ran (the file may change
# while a run trains; its checkpoints record what ran).
_EXECUTED: dict[Path, str] = {}
# spec -> its entry in a checkpoint's record (`recall`): where the file was.
_RECORDED: dict[str, dict[str, str]] = {}
_WARNED: set[tuple[str, str]] = set()  # (path, sha256) said to have changed.


def add_search_dir(folder: str | Path):
  folder = Path(folder).resolve()
  if folder not in _SEARCH_DIRS:
    _SEARCH_DIRS.append(folder)


def is_spec(value) -> bool:
  return isinstance(value, str) and ":" in value


def file_path(spec: str) -> Path | None:
  """The file a `file.py:attribute` spec names, as found (None: not a file spec)."""
  where = spec.rpartition(":")[0]
  if not where.endswith(".py"):
    return None
  for folder in (Path.cwd(), *_SEARCH_DIRS):
    candidate = Path(where) if Path(where).is_absolute() else folder / where
    if candidate.is_file():
      return candidate.resolve()
  # Not found from here: where a checkpoint of the run says it was.
  recorded = Path(_RECORDED.get(spec, {}).get("path", ""))
  return recorded if recorded.is_absolute() and recorded.is_file() else None


def source_sha256(spec: str) -> str | None:
  """The sha256 of the file `spec` names: of its source as executed in this
  process where it was, else as it is now (None: not a file spec, or not found)."""
  return _source_sha256(file_path(spec))


def _source_sha256(path: Path | None) -> str | None:
  if path is None:
    return None
  return _EXECUTED.get(path) or hashlib.sha256(path.read_bytes()).hexdigest()


def recall(record: dict[str, dict[str, str]] | None):
  """Takes a checkpoint's record of its plugins (`used`): each file is then
  looked for where it was too, and one whose source changed since is
  logged as a warning (once per change), not refused."""
  for field, entry in (record or {}).items():
    spec = entry["spec"]
    _RECORDED[spec] = entry
    saved = entry.get("sha256")
    path = file_path(spec) if saved else None
    now = _source_sha256(path)
    if now and now != saved and (str(path), now) not in _WARNED:
      _WARNED.add((str(path), now))
      logging.warning("%s=%r: %s has changed since the checkpoint was saved; "
                      "using the file as it is now", field, spec, path)


def load(kind: str, spec: str, label: str) -> tuple[Any, dict[str, Any]]:
  """(target, declared attributes) of plugin `spec` of `kind`; `label` names
  the config field in errors."""
  # A file spec by the file it finds now: the working directory may change.
  key = (kind, spec, file_path(spec))
  if key not in _LOADED:
    target = _OBJECTS.get(spec)
    if target is None and "@" in spec.rpartition(":")[2]:
      raise SpecError(_only_there(spec, label))
    if target is None:
      target = _attribute(_module(spec, label), spec, label)
    if not callable(target):
      what = type(target).__name__
      raise SpecError(f"{label}={spec!r} is {'an' if what[0] in 'aeiou' else 'a'} "
                      f"{what}, not callable; expected {PROTOCOLS[kind]}")
    _LOADED[key] = target, _declared(kind, spec, target, label)
  return _LOADED[key]


def _module(spec: str, label: str):
  where, _, attribute = spec.rpartition(":")
  if not where.strip() or not attribute.strip():
    raise SpecError(f"{label}={spec!r}: a spec is module.path:attribute or "
                    f"path/to/file.py:attribute, both parts named")
  if where.endswith(".py"):
    path = file_path(spec)
    if path is None:
      looked = ", ".join(str(d) for d in (Path.cwd(), *_SEARCH_DIRS))
      recorded = _RECORDED.get(spec, {}).get("path")
      if recorded:
        raise SpecError(f"{label}={spec!r}: its file was {recorded}, which no "
                        f"longer exists, and there is no {where} in {looked}; put "
                        f"it back, or run from the folder that holds {where}")
      raise SpecError(f"{label}={spec!r}: no file {where} in {looked}; give a "
                      f"path relative to the working directory or the config's folder")
    name = f"mnist_jax_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
      return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # Before running it: dataclasses look it up.
    _EXECUTED[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
      module_spec.loader.exec_module(module)
    except Exception as e:  # pylint: disable=broad-except
      del sys.modules[name]
      raise SpecError(f"{label}={spec!r}: importing {where} raised "
                      f"{raised(e, path)}") from None
    return module
  if where == "__main__" and "__main__" in sys.modules:
    return sys.modules["__main__"]
  try:
    return importlib.import_module(where)
  except ModuleNotFoundError as e:
    if e.name and where.startswith(e.name):
      raise SpecError(f"{label}={spec!r}: no module named {e.name!r} on the path; "
                      f"run from the folder that holds it, add it to PYTHONPATH, "
                      f"or name a file: path/to/file.py:attribute") from None
    raise SpecError(f"{label}={spec!r}: importing {where} raised {raised(e)}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise SpecError(f"{label}={spec!r}: importing {where} raised {raised(e)}") from None


def _attribute(module, spec: str, label: str):
  where, _, attribute = spec.rpartition(":")
  target = module
  for part in attribute.split("."):
    if not part or not hasattr(target, part):
      if where == "__main__":
        raise SpecError(_only_there(spec, label))
      # What it defines that could be meant: callables, not the modules it imports.
      public = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                      and callable(v) and getattr(v, "__module__", None) == module.__name__)[:12]
      raise SpecError(f"{label}={spec!r}: {where} has no attribute {attribute!r}"
                      f"{'; it has ' + ', '.join(public) if public else ''}")
    target = getattr(target, part)
  return target


def _only_there(spec: str, label: str) -> str:
  """The one line for an object of a notebook, a script or a function's
  body (spec_of's `__main__:Name`, `module:Name@id`) read in another process."""
  name = spec.rpartition(":")[2].partition("@")[0].rpartition(".")[2]
  return (f"{label}={spec!r} was defined in a notebook, script or function of "
          f"the process that trained it, and exists only there; load it in that "
          f"notebook (mnist_jax.load), or move {name} to a file and train with "
          f"{label.partition('[')[0]}='file.py:{name}'")


def _declared(kind: str, spec: str, target, label: str) -> dict[str, Any]:
  attributes = {name: getattr(target, name, default)
                for name, default in DECLARED[kind].items()}
  if kind == "augmentation" and getattr(target, "mixes", False):
    raise SpecError(f"{label}={spec!r} declares mixes: a plugin augmentation maps "
                    f"a batch to a batch; mix images in it and keep the labels")
  if kind == "model":
    attributes["accepts"] = accepted_fields(target)
  if kind == "optimizer":
    attributes["hyperparameters"] = tuple(attributes["hyperparameters"])
  return attributes


def accepted_fields(factory) -> tuple[str, ...]:
  """Which of MODEL_FIELDS (and input_shape) `factory` takes, by its
  signature: a class's `__init__`'s (an nnx.Module class's own signature is
  its metaclass's `(*args, **kwargs)`, which would say it takes every
  field), else the function's."""
  if isinstance(factory, type):
    factory = factory.__init__
  try:
    parameters = inspect.signature(factory).parameters
  except (TypeError, ValueError):
    return ("input_shape",)
  if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
    return (*MODEL_FIELDS, "input_shape")
  return tuple(f for f in (*MODEL_FIELDS, "input_shape") if f in parameters)


def spec_of(kind: str, target) -> str:
  """A spec for the object `target` (mnist_jax.train's model=, optimizer=...):
  its `module:qualname` where an import finds it again; else one this process
  resolves (`_OBJECTS`)."""
  if isinstance(target, str):
    return target
  module = getattr(target, "__module__", None) or "__main__"
  qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", "object")
  spec = f"{module}:{qualname}"
  found = sys.modules.get(module)
  for part in qualname.split("."):
    found = getattr(found, part, None)
  if found is not target:  # A local or rebound object: this process only.
    spec = f"{module}:{qualname.replace('<locals>.', '')}@{id(target):x}"
    _OBJECTS[spec] = target
  _LOADED.pop((kind, spec, None), None)  # A notebook cell run again redefines it.
  return spec


def raised(error: Exception, path: Path | None = None) -> str:
  """`Type: message (file.py, line N)`: the user's own words, and the line of
  `path` (else the innermost frame outside mnist_jax, jax and flax) it
  came from."""
  frames = traceback.extract_tb(error.__traceback__)
  mine = [f for f in frames if path is not None and Path(f.filename) == path]
  if not mine:
    mine = [f for f in frames if not any(
        part in f.filename for part in ("/mnist_jax/", "/jax/", "/flax/", "/optax/",
                                        "importlib"))]
  where = f" ({Path(mine[-1].filename).name}, line {mine[-1].lineno})" if mine else ""
  message = str(error).strip().splitlines()[0] if str(error).strip() else ""
  return f"{type(error).__name__}{': ' + message if message else ''}{where}"


def used(config) -> dict[str, dict[str, str]]:
  """{field: {"spec", and for a file "path" and "sha256"}} of every plugin
  `config` names: what a checkpoint records, so that resume, evaluate,
  predict and export import the same again."""
  specs = {"model": config.model, "optimizer": config.optimizer,
           "loss": config.loss, "lr_schedule": config.lr_schedule}
  for field in ("augment", "tta"):
    for i, name in enumerate(n.strip() for n in config[field].split(",")):
      specs[f"{field}[{i}]"] = name
  record = {}
  for field, spec in specs.items():
    if is_spec(spec):
      path = file_path(spec)
      record[field] = {"spec": spec, **({"path": str(path),
                                         "sha256": source_sha256(spec)} if path else {})}
  return record
