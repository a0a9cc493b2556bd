"""Orbax checkpoints of the train state: `Checkpointer` saves every few steps (keeping the newest
few) and restores the newest readable one.

A checkpoint damaged after Orbax finalised it (a truncated file, a disk error) is detected when it
is restored: `restore_newest_good` then falls back to the next older one with a warning naming
both, and moves the damaged one to checkpoints_damaged/ (the workdir layout is in
`jaxdiff.workdir`).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxdiff.errors import CheckpointError, error_summary

logger = logging.getLogger("jaxdiff")


class Checkpointer:
    """Periodic saves of the train state, keeping the newest `max_to_keep`."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restore `step` (default: the newest) onto the structure, dtypes and shardings of
        `abstract_state` (e.g. from `jax.eval_shape`)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def restore_newest_good(self, abstract_state: Any) -> tuple[Any, int] | None:
        """Restore the newest checkpoint that reads back, newest first; damaged ones are moved to
        checkpoints_damaged/ with a warning naming them and the one used instead. Returns
        (state, step), None when there is no checkpoint at all, and raises CheckpointError when
        there are checkpoints but none is readable."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        failures = []
        for position, step in enumerate(steps):
            try:
                state = self.restore(abstract_state, step)
            except Exception as error:  # noqa: BLE001 - any read failure means "damaged"
                failures.append(f"{self.path(step)} ({error_summary(error)})")
                following = steps[position + 1] if position + 1 < len(steps) else None
                logger.warning("checkpoint %s is damaged (%s); %s", self.path(step),
                               error_summary(error), f"falling back to {self.path(following)}"
                               if following is not None else "no older checkpoint is left")
                continue
            for damaged in steps[:position]:
                self._move_aside(damaged)
            return state, step
        raise CheckpointError(f"no usable checkpoint in {self.directory}: "
                              + "; ".join(failures))

    def _move_aside(self, step: int) -> None:
        target = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged", str(step))
        if os.path.exists(target):
            shutil.rmtree(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(self.path(step), target)
        self._manager.reload()
        logger.warning("moved the damaged checkpoint %s to %s", self.path(step), target)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing `tree`, for restoring onto it."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
