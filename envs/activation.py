"""A vectorised replacement for dm_control's ``TargetSphere._update_activation``.

Memory Maze's targets are dm_control ``TargetSphere`` props. After every physics substep (50 per 4 Hz
control step) each of the 3-6 targets runs ``_update_activation``, a Python ``for`` loop over
``physics.data.contact``. Iterating MuJoCo's contact list builds one Python struct wrapper per contact, so
that loop is the single most expensive part of a Memory Maze step (~60% of it on our machines).

The stock rule (dm_control 1.0.50, ``dm_control/locomotion/props/target_sphere.py``)::

    if not activated:
        for contact in contacts:
            has_specific = (geom1 in ids or geom2 in ids) if ids else True
            if has_specific and geom_id in (geom1, geom2):
                activated = True; material alpha = 0

is a pure function of the contacts' ``geom1``/``geom2`` columns, so it can be evaluated on the whole
arrays at once. :func:`fast_hit` is that vectorised test, :func:`stock_hit` is a literal transcription of
the loop (the reference the tests compare against), and :class:`FastTargetSphere` is a ``TargetSphere``
whose ``_update_activation`` uses :func:`fast_hit`. :func:`apply_fast_activation` swaps the class of the
targets of a built Memory Maze task in place; :func:`restore_stock_activation` swaps them back.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from dm_control.locomotion.props.target_sphere import TargetSphere

__all__ = [
    "FastTargetSphere",
    "apply_fast_activation",
    "fast_hit",
    "restore_stock_activation",
    "stock_hit",
]


def stock_hit(geom1: Iterable[int], geom2: Iterable[int], geom_id: int, specific_ids=None) -> bool:
    """The stock loop's decision, written as the loop: does any contact touch ``geom_id``?"""
    for g1, g2 in zip(geom1, geom2):
        if specific_ids:
            has_specific_collision = g1 in specific_ids or g2 in specific_ids
        else:
            has_specific_collision = True
        if has_specific_collision and geom_id in (g1, g2):
            return True
    return False


def fast_hit(geom1: np.ndarray, geom2: np.ndarray, geom_id: int, specific_ids=None) -> bool:
    """Vectorised :func:`stock_hit` over the contact arrays ``geom1``/``geom2`` (shape (ncon,))."""
    geom1 = np.asarray(geom1)
    geom2 = np.asarray(geom2)
    touches = (geom1 == geom_id) | (geom2 == geom_id)  # (ncon,) bool
    if specific_ids:  # same truthiness test as the stock loop: None or empty -> any contact counts
        ids = np.fromiter(specific_ids, dtype=np.int64)
        touches &= np.isin(geom1, ids) | np.isin(geom2, ids)
    return bool(touches.any())


class FastTargetSphere(TargetSphere):
    """``TargetSphere`` whose activation check runs on the contact arrays instead of a Python loop."""

    def _update_activation(self, physics):
        if self._activated:
            return
        contact = physics.data.contact  # MuJoCo contact list of length ncon (struct of arrays)
        if len(contact) == 0:
            return
        if fast_hit(contact.geom1, contact.geom2, self._geom_id, self._specific_collision_geom_ids):
            self._activated = True
            physics.bind(self._material).rgba[-1] = 0


def _targets_of(task) -> list:
    targets = getattr(task, "_targets", None)
    if targets is None:
        raise TypeError(f"{type(task).__name__} has no `_targets`: expected a memory_maze MemoryMazeTask")
    return targets


def apply_fast_activation(task) -> int:
    """Make every stock ``TargetSphere`` of ``task`` a :class:`FastTargetSphere`; returns how many changed.

    Works on a built task (e.g. ``env.task`` of a ``memory_maze.tasks`` env); call it again after the task
    recreates its targets (only the random-colour variants do that).
    """
    changed = 0
    for target in _targets_of(task):
        if type(target) is TargetSphere:
            target.__class__ = FastTargetSphere
            changed += 1
    return changed


def restore_stock_activation(task) -> int:
    """Undo :func:`apply_fast_activation`: targets go back to the stock loop; returns how many changed."""
    changed = 0
    for target in _targets_of(task):
        if type(target) is FastTargetSphere:
            target.__class__ = TargetSphere
            changed += 1
    return changed
