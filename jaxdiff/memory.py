"""A lower bound on the memory a config needs, checked before anything is compiled.

A config whose batch, model or schedule cannot fit would otherwise run until the machine runs out
of memory. `check_fits` adds up what must exist at once, each part a lower bound:
  model            parameters, their EMA and Adam's two moments (4 copies), from jax.eval_shape
  train.batch_size the outputs of the model's leaf layers (kept for the backward pass) for the
                   per-device batch
  eval.num_samples the same for the sampling batch
  diffusion.timesteps  the schedule's float64 tables
  the reverse trajectory [steps + 1, num_samples, ...] that the evaluation plots (steps: T for
                   DDPM, sample.steps for DDIM), charged to the larger of its two factors
and refuses (ConfigError naming the largest part's field) when the sum exceeds the memory of the
device (GPU / TPU: its bytes_limit) or of the host (CPU backend).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from jaxdiff.errors import ConfigError

_FLOAT_BYTES = 4
_SCHEDULE_TABLES = 16  # float64 arrays make_schedule holds at once (betas, cumprods, posterior...)


def available_bytes() -> int | None:
    """Memory of the default device: bytes_limit on an accelerator, physical RAM on the CPU
    backend; None when unknown."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def model_footprint(model, data_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(parameter count, elements of the model's largest single activation, elements of all
    its leaf layers' outputs) for one example, from shapes alone (jax.eval_shape: nothing is
    allocated). Training keeps the leaf outputs for the backward pass; sampling needs at least
    the largest one. Flax modules (hashable, compared by their fields) are traced once."""
    example = int(np.prod(data_shape))
    if not hasattr(model, "init"):  # not a Flax module: only the data itself is known
        return 0, example, example
    try:
        return _cached_footprint(model, tuple(data_shape))
    except TypeError:  # an unhashable model object: measure it without the cache
        return _footprint(model, tuple(data_shape))


def _footprint(model, data_shape: tuple[int, ...]) -> tuple[int, int, int]:
    example = int(np.prod(data_shape))
    x = jnp.zeros((1,) + tuple(data_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t))
    _, state = jax.eval_shape(
        lambda p: model.apply(p, x, t, capture_intermediates=True, mutable=["intermediates"]),
        params)
    outputs = {path[:-1]: sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(value))
               for path, value in flatten_dict(state.get("intermediates", {})).items()}
    leaves = [size for path, size in outputs.items()
              if not any(len(other) > len(path) and other[:len(path)] == path
                         for other in outputs)]
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    return count, max(outputs.values(), default=example), max(sum(leaves), example)


_cached_footprint = functools.lru_cache(maxsize=16)(_footprint)


def needed_bytes(config, model, data_shape: tuple[int, ...], num_devices: int = 1) -> dict:
    """The lower bounds of the module docstring, in bytes, keyed by the config field that sets
    each."""
    count, largest, kept = model_footprint(model, tuple(data_shape))
    example = int(np.prod(data_shape))
    samples = config.eval.num_samples
    ddpm = config.sample.sampler == "ddpm"
    steps_field = "diffusion.timesteps" if ddpm else "sample.steps"
    frames = (config.diffusion.timesteps if ddpm else config.sample.steps) + 1
    trajectory = frames * samples * example * _FLOAT_BYTES if config.eval.plots else 0
    parts = {
        "model.hidden" if config.model.name == "mlp" else "model.dim": 4 * count * _FLOAT_BYTES,
        "train.batch_size": -(-config.train.batch_size // num_devices) * kept * _FLOAT_BYTES,
        "eval.num_samples": -(-samples // num_devices) * largest * _FLOAT_BYTES,
        "diffusion.timesteps": config.diffusion.timesteps * _SCHEDULE_TABLES * 8,
    }
    # the trajectory [steps + 1, num_samples, ...] is charged to the larger of its two factors
    charged = "eval.num_samples" if samples > frames else steps_field
    parts[charged] = parts.get(charged, 0) + trajectory
    return parts


def check_fits(config, model, data_shape: tuple[int, ...], num_devices: int = 1) -> None:
    """ConfigError naming the field of the largest part when the lower bound exceeds the memory
    of one device (the batch is split over `num_devices`)."""
    limit = available_bytes()
    if not limit:
        return
    parts = needed_bytes(config, model, data_shape, num_devices)
    total = sum(parts.values())
    if total <= limit:
        return
    field = max(parts, key=parts.get)
    value = config
    for name in field.split("."):
        value = value[name]
    raise ConfigError(f"config.{field}={value!r} is invalid: the run needs at least "
                      f"{total / 2**30:.1f} GiB ({parts[field] / 2**30:.1f} GiB for this field) "
                      f"but the device has {limit / 2**30:.1f} GiB")


def check_sampling_fits(model, data_shape: tuple[int, ...], num_samples: int,
                        trajectory_steps: int = 0, num_devices: int = 1) -> None:
    """ConfigError naming num_samples when sampling that many (and keeping `trajectory_steps`
    + 1 frames of them) clearly cannot fit in one device's memory."""
    limit = available_bytes()
    if not limit:
        return
    _, largest, _ = model_footprint(model, tuple(data_shape))
    frames = (trajectory_steps + 1) * num_samples * int(np.prod(data_shape)) if trajectory_steps \
        else 0
    need = (-(-num_samples // num_devices) * largest + frames) * _FLOAT_BYTES
    if need > limit:
        raise ConfigError(f"num_samples={num_samples} is invalid: sampling them needs at least "
                          f"{need / 2**30:.1f} GiB but the device has {limit / 2**30:.1f} GiB")
