"""The workdir format, written by train.py and read by `load_run` and sample.py.

  config.json          the experiment's ConfigDict (as JSON)
  run.json             what rebuilds the run without its data: data_shape, data_name,
                       num_classes and the codec (data space <-> model space; runs written before
                       codecs had a kind store "standardizer", a dict for points or null for
                       images, which is still read)
  checkpoints/<step>   Orbax checkpoints of `TrainState` (atomic: written to a temporary
                       directory and renamed when complete, so a kill never leaves a half step)
  checkpoints_damaged/<step>
                       checkpoints that could not be read, moved aside (never deleted) so that
                       training can save that step again (`checkpoint.Checkpointer`)
  eval.json, eval_samples.npz, samples.png, trajectory.png, forward.png, guidance.png,
  grids/step_<k>.png   the evaluation's results and pictures
  events.out.tfevents.*  TensorBoard scalars and images
  train.lock           while train.py runs: "<host> <pid>" of the process that trains here

Only process 0 of a multi-host job writes here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from typing import Iterator, NamedTuple

import ml_collections

from jaxdiff import sharding
from jaxdiff.data.codecs import Standardizer, codec_from_dict, codec_to_dict
from jaxdiff.errors import ConfigError

log = logging.getLogger("jaxdiff")

CONFIG_FILE, RUN_FILE, EVAL_FILE, LOCK_FILE = "config.json", "run.json", "eval.json", "train.lock"

# Fields that may change between a run and its resumption: how long to train (with
# optim.decay="cosine" the learning-rate schedule follows the new length), and fields that do not
# affect the training trajectory (how often to log, save or sample, how to evaluate at the end;
# the state's FSDP layout and rematerialisation, which change memory, not the numbers).
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.max_skipped_steps", "train.fsdp",
                     "model.remat", "sample.", "eval.")


class RunInfo(NamedTuple):
    """run.json: what a run needs besides its config to be rebuilt without data."""

    data_shape: tuple[int, ...]
    data_name: str
    num_classes: int
    codec: object  # jaxdiff.data.codecs: Standardizer (points) or ImageCodec (images)

    def to_dict(self) -> dict:
        codec = codec_to_dict(self.codec)
        return {"data_shape": list(self.data_shape), "data_name": self.data_name,
                "num_classes": int(self.num_classes), "codec": codec,
                # the pre-codec key, so that older jaxdiff versions still read the run
                "standardizer": codec if isinstance(self.codec, Standardizer) else None}

    @classmethod
    def from_dict(cls, payload: dict) -> "RunInfo":
        codec = payload["codec"] if "codec" in payload else payload.get("standardizer")
        return cls(data_shape=tuple(payload["data_shape"]),
                   data_name=payload.get("data_name", ""),
                   num_classes=int(payload.get("num_classes", 0)),
                   codec=codec_from_dict(codec))


def write_json(path: str, payload: dict) -> None:
    """Write JSON atomically (write then rename), so a kill never leaves half a file."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


def read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, RunInfo]:
    """config.json and run.json of `workdir`; ConfigError when it holds no run."""
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise ConfigError(f"workdir={workdir!r} holds no run (no {CONFIG_FILE})")
    config = ml_collections.ConfigDict(read_json(config_path))
    return config, RunInfo.from_dict(read_json(os.path.join(workdir, RUN_FILE)))


def write_run(workdir: str, config: ml_collections.ConfigDict, info: RunInfo) -> None:
    """Write config.json and run.json (process 0 only)."""
    if not sharding.is_main_process():
        return
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))
    write_json(os.path.join(workdir, RUN_FILE), info.to_dict())


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: dict, new: dict) -> list[str]:
    """'field: old -> new' for every field whose value differs (training-relevant ones only).
    A field the old config lacks was added by a later jaxdiff version, which reads its absence
    as the old behaviour: it is no change."""
    old, new = _flatten(old), _flatten(new)
    changes = []
    for field in sorted(set(old) | set(new)):
        if field.startswith(RESUMABLE_CHANGES) or old.get(field) == new.get(field):
            continue
        if field not in old:
            continue
        changes.append(f"{field}: {old.get(field, '(absent)')!r} -> {new.get(field, '(absent)')!r}")
    return changes


def check_resumable(workdir: str, config: ml_collections.ConfigDict, force: bool = False) -> None:
    """Refuse (ConfigError) a workdir holding a run of a different config, beyond
    RESUMABLE_CHANGES, unless `force` (then warn). Writes nothing."""
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        return
    changes = config_changes(read_json(config_path), json.loads(config.to_json()))
    if changes and not force:
        shown = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
        raise ConfigError(
            f"workdir={workdir!r} holds a run with a different config ({shown}); use another "
            f"--workdir, or --force to continue it with the new config")
    if changes:
        log.warning("workdir %s held a run with a different config (%s); continuing with the "
                    "new one (--force)", workdir, "; ".join(changes))


def _lock_holder(path: str) -> tuple[str, int] | None:
    try:
        with open(path) as handle:
            host, pid = handle.read().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Hold train.lock in `workdir` for the block (process 0 only), so that two train.py
    processes never train into one workdir. A lock whose process is gone on this host (a killed
    run) is stale and taken over with a warning; a live holder is a ConfigError naming it."""
    if not sharding.is_main_process():
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    host, me = socket.gethostname(), f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None and (holder[0] != host or _alive(holder[1])):
                raise ConfigError(
                    f"workdir={workdir!r} is in use by train.py process {holder[1]} on "
                    f"{holder[0]} ({LOCK_FILE}); wait for it, stop it, or use another "
                    f"--workdir") from None
            log.warning("taking over the stale %s in %s (%s)", LOCK_FILE, workdir,
                        f"process {holder[1]} is gone" if holder else "unreadable")
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(me)
        break
    else:
        raise ConfigError(f"workdir={workdir!r}: cannot take {LOCK_FILE}")
    try:
        yield
    finally:
        if _lock_holder(path) == (host, os.getpid()):
            os.remove(path)
