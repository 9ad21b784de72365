"""The members a halved run's checkpoint holds (successive halving, halving.py).

What loading a checkpoint needs to rebuild a halved sweep's members (trained.py:
evaluate, predict, export), apart from the training loop that decides the
rungs: those tools reach no part of it (tests/test_imports.py).
"""

import dataclasses
from typing import Any

import jax
import numpy as np

from mnist_jax import members as members_lib
from mnist_jax import sharding
from mnist_jax.errors import UserError


def keep(members: members_lib.Members, points) -> members_lib.Members:
  """`members` with only the sweep points at positions `points`."""
  return dataclasses.replace(members, points=tuple(members.points[p] for p in points))


def take(tree, positions: list[int], mesh):
  """The members at `positions` of a stacked pytree, stacked again, or the
  one member itself where one is left (a single run's unstacked state);
  replicated over `mesh` as the compiled steps take it."""
  index = np.asarray(positions)
  pick = (lambda x: x[index[0]]) if len(positions) == 1 else (lambda x: x[index])
  return jax.jit(lambda t: jax.tree.map(pick, t),
                 out_shardings=sharding.replicated(mesh))(tree)


def with_members(built, members: members_lib.Members):
  """state.Built `built` for `members` (its recipe's member counts)."""
  return dataclasses.replace(built, members=members, recipe=dataclasses.replace(
      built.recipe, members=members.count, seeds_per_point=len(members.seeds)))


def saved_members(built, like_state, meta: dict[str, Any], mesh):
  """(built, the state to restore into) of the members a checkpoint holds
  (its record's "halving"), from those of its config (`built`, whose
  initial state is `like_state`); as given for a run without halving."""
  if "halving" not in meta:
    return built, like_state
  points = meta["halving"]["points"]
  num_seeds = len(built.members.seeds)
  return (with_members(built, keep(built.members, points)),
          take(like_state, [p * num_seeds + s for p in points
                            for s in range(num_seeds)], mesh))


def position(meta: dict[str, Any], member: int | None, num_seeds: int) -> int | None:
  """Where member `member` (its original number; None: the first left) is in
  the state of a checkpoint with record `meta`; `member` itself for a run
  without halving."""
  if member is None or "halving" not in meta:
    return member
  ids = [p * num_seeds + s for p in meta["halving"]["points"] for s in range(num_seeds)]
  if member not in ids:
    raise UserError(f"--member={member}: the checkpoint of epoch {meta['epoch']} "
                    f"holds members {ids} of the halved sweep (the others were "
                    f"dropped at a rung; see summary.json's halving); pick one of those")
  return ids.index(member)
