"""Orbax checkpoints of the train state.

Layout of a workdir:
  config.json        the experiment's ConfigDict
  run.json           what is needed to rebuild the run without data (data shape, statistics)
  checkpoints/<step> Orbax checkpoints of `TrainState` (atomic: written to a temporary
                     directory and renamed when complete, so a kill never leaves a half step)
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


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

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing `tree`, for restoring onto it."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (write then rename), so a kill never leaves half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


def read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)
