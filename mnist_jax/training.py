"""Training and evaluation of one run: `train_and_evaluate`.

A run goes through the package's rooms in order: the config (config.py) ->
the runtime's devices and mesh (runtime.py) -> the data on device (feed.py)
-> the model, step recipe, optimizer and state (state.py) -> the pure steps
(steps.py), compiled and dispatched an epoch at a time (loop.py) -> its
files and console lines (outputs.py). This module decides what happens
between epochs: checkpoints, the divergence policy, stopping on a signal.
"""

import contextlib
import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from absl import logging

from mnist_jax import assembly, between_epochs
from mnist_jax import checkpoint as checkpoint_lib
from mnist_jax import config as config_lib
from mnist_jax import distributed, finetune, loop, outputs, report
from mnist_jax import halving as halving_lib
from mnist_jax import members as members_lib
from mnist_jax import sharding, signals, steps, timing, workdir_lock
from mnist_jax import summary as summary_lib
from mnist_jax import state as state_lib
from mnist_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class TrainResult:
  summary: dict[str, Any]
  graphs: state_lib.Graphs
  recipe: state_lib.StepRecipe
  state: state_lib.TrainState


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike,
                       started_at: float | None = None,
                       callbacks: Sequence[Any] = ()) -> TrainResult:
  """Trains to `config.num_epochs`, evaluating after each epoch.

  A workdir with checkpoints is resumed from the newest one. SIGTERM and
  Ctrl-C stop the run after saving the last finished epoch. A workdir in use
  by another run is refused (workdir_lock.py). `started_at`
  (time.perf_counter()) is when the run began, for the summary's time to
  the first step: by default, this call. Each of `callbacks` is a hook
  after the run's own (between_epochs.epoch_end_hooks): a callable of each
  finished epoch's record (metrics.jsonl's), or of (record, state), or an
  object with `on_epoch_end(record, state)`; one that returns True stops
  the run after saving that epoch.
  """
  started_at = time.perf_counter() if started_at is None else started_at
  # A resume finds its plugins' files where its checkpoints say they were.
  checkpoint_lib.recall_plugins(Path(workdir) / "checkpoints")
  config_lib.validate(config)
  run = assembly.assemble(config, place=False)
  # Only once the config and data are known good: a refused run leaves
  # nothing behind. A refused resume leaves the workdir as it was.
  workdir = outputs.prepare_workdir(Path(workdir))
  # The lock is released however the run ends.
  with workdir_lock.for_run(workdir):  # Before any write.
    # The devices hold the training images now; logs and plots read only the
    # test split. Dropping the host's copy (the run before placing, replaced
    # here, held the last reference) gave 10-18% less host memory on CPU
    # where the split was rebuilt (validation split, resize), none measurable
    # for MNIST as read (benchmarks/README.md, item 16).
    run = run.placed(drop_host_images=True)
    return _train(run, workdir, started_at, callbacks)


def _train(run: assembly.Run, workdir: Path, started_at: float,
           callbacks) -> TrainResult:
  config, dataset, plan = run.config, run.dataset, run.plan
  checkpoints = checkpoint_lib.Checkpoints(workdir / "checkpoints",
                                           config.checkpoints_to_keep)
  meta = {"config": config.to_dict(), "num_classes": dataset.num_classes,
          "class_names": list(dataset.class_names),
          "image_shape": list(dataset.image_shape)}
  halving = halving_lib.start(config, run.built.members, meta)
  state, done_epochs, saved_num_epochs, saved = _resume(
      checkpoints, run.state, config, dataset.num_classes,
      halving.like(run.state, run.mesh) if halving else None)
  if config.init_from and not done_epochs:  # Its own checkpoints win.
    state = distributed.put_global(finetune.initialize(
        state, config, dataset.num_classes, dataset.image_shape, run.mesh),
        sharding.replicated(run.mesh))
  run = halving.resumed(run, state, saved) if halving else run.with_state(state)
  state = run.state  # Halving's: of the members the run goes on with.
  files = outputs.RunFiles(workdir, enabled=run.runtime.main_process)
  history = files.resume(done_epochs)
  outputs.log_start(config, dataset, run.mesh, plan, run.state, run.built.members)
  stopper = between_epochs.EarlyStopping(config.early_stopping_patience,
                           config.early_stopping_min_delta, history,
                           raised=config.num_epochs > saved_num_epochs)
  to_train = not stopper.stopped_at and done_epochs < config.num_epochs
  run, compile_seconds, seconds_to_first_step = _compile(to_train, run, started_at)
  saver = between_epochs.Saver(checkpoints, done_epochs, meta)
  best = between_epochs.Best(workdir, meta, history) if dataset.val_images is not None else None
  with signals.StopOnSignal() as stop, contextlib.closing(files), loop.Profile(
      files.profile_dir, config.profile_steps) as profile:
    options = dict(should_stop=lambda: stop.requested, profile=profile,
                   show_progress=None if run.runtime.main_process else False)
    epochs = () if not to_train else (
        halving.epochs_of(run, done_epochs + 1, config.num_epochs, **options)
        if halving else ((run, r) for r in run.epochs(
            done_epochs + 1, config.num_epochs, **options)))
    for run, result in epochs:
      if isinstance(result, loop.StoppedMidEpoch):
        saver.stop_after_saving(stop.signum, result.state, result.last_epoch)
      state, members = result.state, run.built.members
      hooks = between_epochs.epoch_end_hooks(saver, stopper, best, files, history,
                                             stop, members, config, callbacks, halving)
      record = outputs.epoch_record(result, plan, members, run.built.schedule,
                                    summary_lib.Chance.of(dataset), config)
      if between_epochs.end_epoch(hooks, record, state, saver):
        break
    for manager in (checkpoints, *((best.checkpoints,) if best else ())):
      manager.wait()
      manager.close()

    if not history:
      raise UserError(f"{workdir} holds no metrics for its checkpoint of epoch "
                      f"{done_epochs}; use a new --workdir")
    built = run.built  # Of the members trained last (halving.py).
    summary = summary_lib.run_summary(
        config, dataset, plan, built.members,
        halving.history_of_survivors(history) if halving else history,
        stopped_early_at_epoch=stopper.stopped_at,
        compile_seconds=compile_seconds,
        seconds_to_first_step=seconds_to_first_step,
        resumed_from_epoch=done_epochs)
    if halving:
      halving.add_to(summary)
    files.finish(summary, built.members)
  if run.runtime.main_process:
    _finish_on_console(config, workdir, dataset, plan, built, state, summary,
                       history)
  return TrainResult(summary, built.graphs, built.recipe, state)


def _compile(to_train: bool, run: assembly.Run, started_at: float):
  """(the compiled run, compile seconds, seconds from start to the first
  step); (the run, 0.0, None) for a run with nothing left to train
  (finished, or stopped early before), which a rerun only summarises again."""
  if not to_train:
    return run, 0.0, None
  run, compile_seconds = timing.timed(run.compile)
  seconds_to_first_step = time.perf_counter() - started_at
  logging.info("compiled in %.1f s; %.1f s from start to the first step",
               compile_seconds, seconds_to_first_step)
  return run, compile_seconds, seconds_to_first_step


def _resume(checkpoints: checkpoint_lib.Checkpoints, state, config,
            num_classes: int, like=None):
  """(state, epoch, its run's num_epochs, its JSON record) of the newest
  checkpoint, or the given state, 0, 0 and None. `like`: the state to
  restore into as f(JSON record) (halving.py), else `state`."""
  restored = checkpoints.restore_latest(like or state, config, num_classes)
  if not restored:
    return state, 0, 0, None
  state, meta = restored
  changed = config_lib.changed_fields(meta["config"], config)
  logging.info("resuming from the checkpoint of epoch %d in %s%s", meta["epoch"],
               checkpoints.directory, f"; changed fields: {changed}" if changed else "")
  return state, meta["epoch"], meta["config"]["num_epochs"], meta


def _finish_on_console(config, workdir: Path, dataset, plan: loop.Plan,
                       built: state_lib.Built, state, summary, history):
  """The plots (config.plots), the members' table and the final line."""
  members = built.members
  if config.plots:
    # Of the member validation chose (test, without a split), with several.
    best = summary["chosen_member"]["index"] if members.count > 1 else None
    written = report.write_plots(
        workdir, functools.partial(
            steps.make_logits_fn(built.graphs, built.recipe),
            state if best is None else members_lib.select(state, best)),
        dataset.class_names, dataset, history, plan.eval_batch_size,
        f"{dataset.name}, {config.model}, epoch {config.num_epochs}"
        + ("" if best is None else f", member {best} {members.describe(best)}"))
    logging.info("plots: %s", ", ".join(str(p) for p in written))
  if members.count > 1:
    outputs.log_members(summary, members)
  elif summary["status"] != "ok":
    split = summary["chance"]["split"]
    logging.warning("this run %s: final %s accuracy %.2f%% (chance: at most "
                    "%.2f%%)", summary["status"].replace("_", " "), split,
                    100 * history[-1][f"{split}_accuracy"],
                    100 * summary["chance"]["at_most"])
  if summary["selected_on"] == "validation":
    chosen = (f"validation accuracy {100 * summary['best_validation_accuracy']:.2f}% "
              f"at epoch {summary['best_epoch']} (the best: "
              f"{summary['selection_rule']}), test accuracy "
              f"{100 * summary['test_accuracy_at_best_epoch']:.2f}% there; final")
  else:
    chosen = "final"
  logging.info("%s test accuracy %.2f%% (best %.2f%%%s)%s, %.1f s training, "
               "summary in %s", chosen, 100 * summary["final_test_accuracy"],
               100 * summary["best_test_accuracy"],
               ", chosen on the test set: no validation split"
               if summary["selected_on"] == "test" else "",
               f", {summary['means_over_members']}" if members.count > 1 else "",
               summary["train_seconds"], workdir / "summary.json")
