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
    """Periodic saves of the train state, keeping the newest `max_to_keep`, and restores that
    read each step directory on its own, so a stray or partial directory never hides the good
    checkpoints beside it.

    `read_only=True` (evaluation: `load_run`, sample.py) creates, moves and writes nothing.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.read_only = read_only
        self._max_to_keep = max_to_keep
        # Kept open until `close`: closing it right after a failed read can leave Orbax's
        # background tasks posting to a closed event loop (a traceback after the error line).
        self._reader = None
        self._manager = None if read_only else self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True)
        return ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """The steps of the step directories (integer names), ascending. Orbax's temporary
        directories of an unfinished save and anything else in the directory are not steps."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(name) for name in os.listdir(self.directory)
                      if name.isdigit() and os.path.isdir(os.path.join(self.directory, name)))

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any) -> None:
        if self._manager is None:
            raise CheckpointError(f"{self.directory} is opened read-only")
        if not os.path.isdir(self.directory):  # deleted under a running job: start it again
            try:  # a save still in flight when the directory went is lost with it
                self._manager.wait_until_finished()
                self._manager.close()
            except Exception as error:  # noqa: BLE001 - whatever the lost save raises
                logger.warning("a checkpoint save was lost with the deleted %s (%s)",
                               self.directory, error_summary(error))
            self._manager = self._open_manager()
            logger.warning("%s had been deleted; recreated it, saving step %d", self.directory,
                           int(step))
        if int(step) in self.all_steps():
            raise CheckpointError(f"step {int(step)} is already saved in {self.directory}; a "
                                  f"checkpoint is never overwritten (use a new directory)")
        try:
            self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
        except Exception as error:  # noqa: BLE001 - e.g. an earlier save lost with its files
            logger.warning("saving step %d failed (%s); retrying once with a new checkpoint "
                           "manager", int(step), error_summary(error))
            self._manager = self._open_manager()
            self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def restore(self, abstract: Any, step: int | None = None) -> Any:
        """Restore `step` (default: the newest) onto the structure, dtypes and shardings of
        `abstract` (e.g. from `jax.eval_shape`). A dict naming only some fields of the saved
        state (e.g. {"step": ..., "ema_params": ...}) reads just those."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        item = os.path.join(self.path(step), "default")
        if not os.path.isdir(item):
            raise FileNotFoundError(f"{item} is missing")
        args = ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=isinstance(abstract, dict))
        if self._reader is None:
            self._reader = ocp.PyTreeCheckpointer()
        return self._reader.restore(item, args=args)

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def restore_newest_good(self, abstract: Any) -> tuple[Any, int] | None:
        """Restore the newest checkpoint that reads back, newest first, with a warning naming
        each unreadable one and the one used instead; unless read-only, the unreadable ones
        newer than it are moved to checkpoints_damaged/ (so training can save those steps
        again). Returns (state, step), None when there is no checkpoint at all, and raises
        CheckpointError when there are checkpoints but none is readable."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        failures = []
        for position, step in enumerate(steps):
            try:
                state = self.restore(abstract, step)
            except Exception as error:  # noqa: BLE001 - any read failure means "unusable"
                failures.append(f"{self.path(step)} ({error_summary(error)})")
                following = steps[position + 1] if position + 1 < len(steps) else None
                logger.warning("checkpoint %s is unreadable (%s); %s", self.path(step),
                               error_summary(error), f"falling back to {self.path(following)}"
                               if following is not None else "no older checkpoint is left")
                continue
            if not self.read_only:
                for damaged in steps[:position]:
                    self._move_aside(damaged)
            return state, step
        raise CheckpointError(f"no usable checkpoint in {self.directory}: "
                              + "; ".join(failures))

    def _move_aside(self, step: int) -> None:
        """Move step directory `step` to checkpoints_damaged/, never over an earlier copy."""
        damaged = os.path.join(os.path.dirname(self.directory), "checkpoints_damaged")
        target, copy = os.path.join(damaged, str(step)), 1
        while os.path.exists(target):
            target, copy = os.path.join(damaged, f"{step}.{copy}"), copy + 1
        os.makedirs(damaged, exist_ok=True)
        shutil.move(self.path(step), target)
        self._manager.reload()
        logger.warning("moved the damaged checkpoint %s to %s", self.path(step), target)

    def wait(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing `tree`, for restoring onto it."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
