"""A trained run, restored from its workdir, and sampling from a config.

`load_run(workdir)` rebuilds the model, schedule and codec from config.json and run.json and
restores the newest readable checkpoint's EMA parameters; `Run.sample` and `Run.sample_classes`
draw data-space samples, split over every device in one compiled call. `sample_model` runs the
sampler that a config's `sample` section chooses, and `sample_sharded` splits it over a mesh; the
training loop's evaluation uses both. Labels and guidance values are validated here, once, and
reported as ConfigError naming the value.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiff import sharding
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.config import SAMPLERS
from jaxdiff.data.codecs import Standardizer
from jaxdiff.errors import CheckpointError, ConfigError, NonFiniteError, error_summary
from jaxdiff.guidance import check_per_example
from jaxdiff.memory import check_sampling_fits
from jaxdiff.models import build_model
from jaxdiff.samplers import ddim_sample, ddpm_sample
from jaxdiff.schedules import Schedule
from jaxdiff.training import build_schedule
from jaxdiff.workdir import read_run


class Run(NamedTuple):
    """A trained run restored for evaluation: `run.sample(1000)` draws data-space samples."""

    config: ml_collections.ConfigDict
    model: Any
    params: Any  # EMA parameters
    schedule: Schedule
    codec: Any  # data space <-> model space (jaxdiff.data.codecs)
    data_shape: tuple[int, ...]
    step: int

    @property
    def standardizer(self) -> Standardizer | None:
        """The point data's standardiser (None for images)."""
        return self.codec if isinstance(self.codec, Standardizer) else None

    @property
    def model_fn(self):
        return functools.partial(self.model.apply, self.params)

    def to_data_space(self, x) -> np.ndarray:
        """Model space -> data space: unstandardised points, or uint8 images; NonFiniteError
        when a sample is NaN or infinite in either space (e.g. beyond float32 once
        unstandardised)."""
        return decode_finite(self.codec, x)

    def sample(self, num_samples: int, *, seed: int = 0, sampler: str | None = None,
               steps: int | None = None, eta: float | None = None, labels=None,
               return_trajectory: bool = False, guidance_scale=None, guidance_rescale=None,
               x_T=None, num_devices: int | None = None, progress=False):
        """Samples in data space (and the data-space trajectory [S, N, ...] when asked).

        `labels` (one class per sample, or one for all) and classifier-free guidance as in
        `sample_model`; `x_T` starts from given model-space noise. The batch is split over
        `num_devices` devices (default: all, every host) in one compiled call; a seed gives the
        same samples on any device count (to float rounding). `progress` as in `sample_model`
        (True: a progress bar of the reverse steps).
        """
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r} is invalid: it must be an integer "
                              f">= 1")
        try:
            mesh = sharding.make_mesh(num_devices)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        frames = 0
        if return_trajectory:
            kind = sampler or self.config.sample.sampler
            frames = self.schedule.timesteps if kind == "ddpm" else (
                steps or self.config.sample.steps)
        check_sampling_fits(self.model, self.data_shape, int(num_samples), frames,
                            sharding.num_batch_shards(mesh))
        model_fn = functools.partial(self.model.apply, sharding.put_replicated(self.params, mesh))
        out = sample_sharded(
            model_fn, self.schedule, self.config, (int(num_samples),) + self.data_shape,
            key=jax.random.key(seed), mesh=mesh, sampler=sampler, steps=steps, eta=eta,
            labels=labels, return_trajectory=return_trajectory, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale, x_T=x_T, progress=progress,
        )
        if return_trajectory:
            return self.to_data_space(out[0]), self.to_data_space(out[1])
        return self.to_data_space(out)

    def sample_classes(self, labels, guidance_scales=(1.0,), num_per_cell: int = 1, *,
                       seed: int = 0, sampler: str | None = None, steps: int | None = None,
                       eta: float | None = None, guidance_rescale=None,
                       num_devices: int | None = None, progress=False) -> np.ndarray:
        """Data-space samples [len(labels), len(guidance_scales), num_per_cell, ...] in one
        batched (guided) sampler call: row = class, column = guidance scale. Every cell starts
        from the same `num_per_cell` draws of x_T, so along a row only the scale changes (with
        DDIM eta = 0 nothing else does). `progress` as in `sample_model`."""
        labels = check_labels(labels, self.config.model.num_classes)
        scales = np.asarray(guidance_scales, np.float32).reshape(-1)
        if scales.size == 0 or num_per_cell < 1:
            raise ConfigError(f"need at least one guidance scale and num_per_cell >= 1, got "
                              f"guidance_scales={_short(guidance_scales)}, "
                              f"num_per_cell={num_per_cell}")
        cells = (len(labels), len(scales), num_per_cell)
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1),
                                  (num_per_cell,) + self.data_shape)
        x_T = jnp.broadcast_to(noise, cells[:2] + noise.shape).reshape((-1,) + self.data_shape)
        out = self.sample(
            int(np.prod(cells)), seed=seed, sampler=sampler, steps=steps, eta=eta,
            labels=np.repeat(labels, len(scales) * num_per_cell),
            guidance_scale=(float(scales[0]) if len(scales) == 1
                            else np.tile(np.repeat(scales, num_per_cell), len(labels))),
            guidance_rescale=guidance_rescale, x_T=x_T, num_devices=num_devices,
            progress=progress,
        )
        return out.reshape(cells + out.shape[1:])


def decode_finite(codec, x) -> np.ndarray:
    """`codec.decode(x)`, refusing (NonFiniteError) samples that are NaN or infinite in model space
    or in data space, so that no caller writes them with success."""
    x = np.asarray(x)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.ndim else ~np.isfinite(x)
    if np.any(bad):
        raise NonFiniteError(f"{int(np.sum(bad))} of {bad.size} samples are NaN or infinite in "
                             f"model space; nothing was written")
    with np.errstate(over="ignore", invalid="ignore"):
        data = codec.decode(x)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise NonFiniteError("samples overflow float32 once mapped back to data space (the data's "
                             "standardiser scale is too large); nothing was written")
    return data


def sample_model(model_fn, schedule: Schedule, config, shape, *, key, sampler=None, steps=None,
                 eta=None, labels=None, return_trajectory=False, guidance_scale=None,
                 guidance_rescale=None, x_T=None, progress=False):
    """Run the sampler chosen in `config.sample` (overridable) in model space.

    `progress` goes to the sampler: False (default) shows nothing, True a tqdm bar of the
    reverse steps, a callable is called as `progress(done, total)` from the host as the compiled
    loop advances; `num_model_calls` gives the total.

    A class-conditional model samples the classes `labels` (one per sample, or one for all;
    checked against [0, model.num_classes)), or unconditionally (its null class) without them.
    With labels, classifier-free guidance uses `guidance_scale` and `guidance_rescale` (numbers
    or one per sample; default `config.sample.guidance_scale` / `guidance_rescale`). A scale of
    exactly 1 without rescaling is plain conditional sampling and skips the unconditional half.
    """
    options = config.sample
    sampler = sampler or options.sampler
    timesteps = schedule.timesteps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or not 1 <= steps <= timesteps):
        raise ConfigError(f"steps={steps!r} is invalid: an integer in [1, T={timesteps}]")
    if eta is not None and not isinstance(eta, jax.core.Tracer) and not np.all(
            np.isfinite(eta) & (np.asarray(eta) >= 0)):
        raise ConfigError(f"eta={_short(eta)} is invalid: finite numbers >= 0")
    cond, guidance = _conditioning(config, shape[0], labels, guidance_scale, guidance_rescale)
    common = dict(key=key, shape=shape, objective=config.diffusion.objective,
                  clip_x0=options.clip_x0, return_trajectory=return_trajectory,
                  self_condition=config.model.self_condition, cond=cond, x_T=x_T,
                  progress=progress, **guidance)
    if sampler == "ddpm":
        return ddpm_sample(model_fn, schedule, variance=options.variance, **common)
    if sampler == "ddim":
        return ddim_sample(
            model_fn, schedule, num_steps=options.steps if steps is None else steps,
            eta=options.eta if eta is None else eta,
            timestep_spacing=options.timestep_spacing, **common,
        )
    raise ConfigError(f"sampler={sampler!r} is invalid: one of {', '.join(SAMPLERS)}")


def num_model_calls(config, schedule: Schedule, sampler: str | None = None,
                    steps: int | None = None) -> int:
    """How many reverse steps (one model call each, on a doubled batch with guidance) the
    sampler of `config.sample` (or `sampler`, `steps`) takes: T for DDPM, the steps for DDIM."""
    sampler = sampler or config.sample.sampler
    if sampler == "ddpm":
        return schedule.timesteps
    return int(config.sample.steps if steps is None else steps)


def sample_sharded(model_fn, schedule: Schedule, config, shape, *, key, mesh, labels=None,
                   x_T=None, guidance_scale=None, guidance_rescale=None, progress=False,
                   **kwargs):
    """`sample_model` with the batch split over `mesh`'s devices in one compiled call; returns
    host numpy arrays (the global values on every host). `progress` as in `sample_model`; a
    bar or callable compiles a variant of the sampler, so in a multi-process job give every
    process the same kind (e.g. a callable that does nothing on all but one).

    The batch is padded to a multiple of the device count and the padding dropped afterwards.
    x_T is drawn exactly as the unsharded sampler draws it, but directly in the batch-sharded
    layout; JAX's partitionable threefry makes a draw of N + pad rows start with the N-row draw
    (the per-step noise too), so the first N samples do not depend on the device count.
    """
    count, rest = shape[0], tuple(shape[1:])
    _conditioning(config, count, labels, guidance_scale, guidance_rescale)  # checks, unpadded
    if x_T is not None and np.shape(x_T) != tuple(shape):
        raise ConfigError(f"x_T has shape {np.shape(x_T)}, expected shape={tuple(shape)}")
    padded = sharding.padded_count(count, mesh)
    pad = lambda value: value if value is None or not np.ndim(value) else (  # noqa: E731
        np.resize(np.asarray(value), (padded,) + np.shape(value)[1:]))
    if x_T is None:
        x_T = sharding.batch_noise(jax.random.split(key)[0], (padded,) + rest, mesh)
    else:
        x_T = jax.device_put(pad(np.asarray(x_T, np.float32)), sharding.batch_sharding(mesh))
    out = sample_model(model_fn, schedule, config, (padded,) + rest, key=key, labels=pad(labels),
                       x_T=x_T, guidance_scale=pad(guidance_scale),
                       guidance_rescale=pad(guidance_rescale), progress=progress, **kwargs)
    out = sharding.to_host(out)
    if kwargs.get("return_trajectory"):
        return out[0][:count], out[1][:, :count]
    return out[:count]


def check_labels(labels, num_classes: int, num_samples: int | None = None, *,
                 name: str = "labels", shown: str | None = None) -> np.ndarray:
    """Class labels as int32 [N], or ConfigError naming the bad value (as `name`=`shown`, e.g. a
    flag as typed): an unconditional model, non-integers, labels outside [0, num_classes), or a
    count other than `num_samples`."""
    shown = _short(labels) if shown is None else shown
    if not num_classes:
        raise ConfigError(f"{name}={shown} is invalid: the model is unconditional "
                          f"(model.num_classes=0)")
    array = np.asarray(labels)
    if array.ndim == 0:
        array = np.full((num_samples or 1,), array)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ConfigError(f"{name}={shown} is invalid: a 1-D sequence of integer "
                          f"class indices")
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise ConfigError(f"{name}={shown} is invalid: label {int(bad[0])} is outside "
                          f"[0, num_classes={num_classes})")
    if num_samples is not None and len(array) != num_samples:
        raise ConfigError(f"{name} has {len(array)} entries for {num_samples} samples: give one "
                          f"label per sample (or a single label for all)")
    return array.astype(np.int32)


def _short(value) -> str:
    text = repr(np.asarray(value).tolist()) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_guidance(name: str, value, num_samples: int, low: float | None = 0.0,
                   high: float | None = None, *, shown: str | None = None) -> None:
    """ConfigError naming `name` unless `value` is a finite number, or one per sample, in
    [low, high] (an open end where None)."""
    try:
        check_per_example(name, value, num_samples, low, high)
    except ValueError:
        bounds = " and ".join(part for part in (f">= {low}" if low is not None else "",
                                                f"<= {high}" if high is not None else "") if part)
        shown = _short(value) if shown is None else shown
        raise ConfigError(f"{name}={shown} is invalid: finite numbers {bounds}, one or "
                          f"one per sample ({num_samples})") from None


def _conditioning(config, num_samples: int, labels, guidance_scale, guidance_rescale):
    """The sampler's `cond` and guidance arguments, or ConfigError naming the bad value."""
    num_classes = config.model.num_classes
    explicit = {name: value for name, value in
                (("guidance_scale", guidance_scale), ("guidance_rescale", guidance_rescale))
                if value is not None}
    if labels is None:
        for name, value in explicit.items():
            if not num_classes:
                raise ConfigError(f"{name}={_short(value)} is invalid: classifier-free guidance "
                                  f"needs a class-conditional model (model.num_classes > 0)")
            raise ConfigError(f"{name}={_short(value)} is invalid without labels: give the "
                              f"classes to guide towards")
        return {}, {}
    cond = {"labels": jnp.asarray(check_labels(labels, num_classes, num_samples))}
    scale = config.sample.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale
    rescale = (config.sample.get("guidance_rescale", 0.0) if guidance_rescale is None
               else guidance_rescale)
    plain = all(isinstance(v, (int, float, np.integer, np.floating)) for v in (scale, rescale))
    if plain and scale == 1 and rescale == 0:
        return cond, {}
    check_guidance("guidance_scale", scale, num_samples, 0.0, None)
    check_guidance("guidance_rescale", rescale, num_samples, 0.0, 1.0)
    return cond, dict(guidance_scale=scale, guidance_rescale=rescale,
                      null_cond={"labels": num_classes})


def load_run(workdir: str, step: int | None = None) -> Run:
    """Restore a run trained by train.py from `workdir`: config, model, EMA params, schedule and
    codec (the newest readable checkpoint unless `step` is given).

    Read-only: only the step and EMA parameters are read (so optimiser settings that changed in
    config.json do not matter), and nothing in the workdir is created, moved or written; an
    unreadable checkpoint is skipped with a warning. ConfigError for a workdir without a run or
    a step it does not hold, CheckpointError when no checkpoint matches the config's model.
    """
    config, info = read_run(workdir)
    model = build_model(config)
    x, t = jnp.zeros((1,) + info.data_shape, jnp.float32), jnp.zeros((1,), jnp.int32)
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32),
                "ema_params": jax.eval_shape(lambda: model.init(jax.random.key(0), x, t))}
    checkpointer = Checkpointer(workdir, read_only=True)
    if step is None:
        restored = checkpointer.restore_newest_good(abstract)
        if restored is None:
            raise ConfigError(f"workdir={workdir!r} holds no checkpoint in "
                              f"{checkpointer.directory}")
        state, step = restored
    else:
        if step not in checkpointer.all_steps():
            raise ConfigError(f"step={step} is invalid: {checkpointer.directory} holds steps "
                              f"{checkpointer.all_steps()}")
        try:
            state = checkpointer.restore(abstract, step)
        except Exception as error:  # noqa: BLE001 - damaged, or not this config's model
            raise CheckpointError(f"checkpoint {checkpointer.path(step)} cannot be read as "
                                  f"config.json's model: {error_summary(error)}") from None
    checkpointer.close()  # (left open on the error paths above: see Checkpointer.restore)
    return Run(config=config, model=model, params=state["ema_params"],
               schedule=build_schedule(config), codec=info.codec, data_shape=info.data_shape,
               step=int(step))
