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
from jaxdiff.config import SAMPLER_FIELDS, SAMPLERS, sample_option
from jaxdiff.data.codecs import Standardizer
from jaxdiff.errors import CheckpointError, ConfigError, NonFiniteError, error_summary
from jaxdiff.guidance import check_per_example
from jaxdiff.memory import check_sampling_fits
from jaxdiff.models import build_model
from jaxdiff.ode_samplers import dpm_solver_sample, karras_sample
from jaxdiff.samplers import ddim_sample, ddpm_sample, ddpm_timesteps
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
               x_T=None, num_devices: int | None = None, progress=False, order: int | None = None,
               solver: str | None = None, churn: float | None = None,
               resamples: int | None = None, x_start=None, t_start: int | None = None,
               known=None, mask=None):
        """Samples in data space (and the data-space trajectory [S, N, ...] when asked).

        `sampler` ("ddpm", "ddim", "dpm_solver", "karras"), `steps`, `eta`, `order`, `solver`,
        `churn` and `resamples` override the config's sample section (an option the sampler
        does not use is a ConfigError). `labels` (one class per sample, or one for all) and
        classifier-free guidance as in `sample_model`; `x_T` starts from given model-space
        noise. The batch is split over `num_devices` devices (default: all, every host) in one
        compiled call; a seed gives the same samples on any device count (to float rounding).
        `progress` as in `sample_model` (True: a progress bar of the reverse steps).

        Editing, in data space (points as the data set holds them, images uint8 HWC), each
        broadcast to [num_samples, ...]: SDEdit starts from `x_start` noised to `t_start`
        (default: config.sample.t_start); inpainting keeps `known` where `mask` (broadcastable,
        1 = known) is 1 (ddpm and ddim).
        """
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r} is invalid: it must be an integer "
                              f">= 1")
        try:
            mesh = sharding.make_mesh(num_devices)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        shape = (int(num_samples),) + self.data_shape
        if x_start is not None and t_start is None:
            t_start = sample_option(self.config, "t_start")
            if t_start < 0:
                raise ConfigError("x_start needs t_start (SDEdit's start time in [0, T)); "
                                  "config.sample.t_start is -1")
        edits = dict(x_start=self._model_space("x_start", x_start, shape), t_start=t_start,
                     known=self._model_space("known", known, shape),
                     mask=None if mask is None else _broadcast("mask", mask, shape))
        if (known is None) != (mask is None):
            raise ConfigError("inpainting needs both known and mask")
        frames = 0
        if return_trajectory:
            kind = sampler or self.config.sample.sampler
            frames = (len(ddpm_timesteps(self.schedule.timesteps, t_start,
                                         resamples or sample_option(self.config, "resamples"),
                                         sample_option(self.config, "jump_length")))
                      if kind == "ddpm" else (steps or self.config.sample.steps))
        check_sampling_fits(self.model, self.data_shape, int(num_samples), frames,
                            sharding.num_batch_shards(mesh))
        model_fn = functools.partial(self.model.apply, sharding.put_replicated(self.params, mesh))
        out = sample_sharded(
            model_fn, self.schedule, self.config, (int(num_samples),) + self.data_shape,
            key=jax.random.key(seed), mesh=mesh, sampler=sampler, steps=steps, eta=eta,
            labels=labels, return_trajectory=return_trajectory, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale, x_T=x_T, progress=progress, order=order,
            solver=solver, churn=churn, resamples=resamples, **edits,
        )
        if return_trajectory:
            return self.to_data_space(out[0]), self.to_data_space(out[1])
        return self.to_data_space(out)

    def _model_space(self, name: str, data, shape):
        """Data-space `data` broadcast to `shape` and encoded to model space (None stays)."""
        if data is None:
            return None
        data = _broadcast(name, data, shape)
        return np.asarray(self.codec.encode(data), np.float32)

    def sample_classes(self, labels, guidance_scales=(1.0,), num_per_cell: int = 1, *,
                       seed: int = 0, sampler: str | None = None, steps: int | None = None,
                       eta: float | None = None, guidance_rescale=None,
                       num_devices: int | None = None, progress=False, **options) -> np.ndarray:
        """Data-space samples [len(labels), len(guidance_scales), num_per_cell, ...] in one
        batched (guided) sampler call: row = class, column = guidance scale. Every cell starts
        from the same `num_per_cell` draws of x_T, so along a row only the scale changes (with
        DDIM eta = 0 nothing else does). `progress` as in `sample_model`; `options` (order,
        solver, churn, resamples) as in `sample`."""
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
            progress=progress, **options,
        )
        return out.reshape(cells + out.shape[1:])


def _broadcast(name: str, value, shape) -> np.ndarray:
    """`value` broadcast to `shape`, or ConfigError naming it."""
    value = np.asarray(value)
    try:
        return np.broadcast_to(value, shape)
    except ValueError:
        raise ConfigError(f"{name} has shape {value.shape}, which does not broadcast to the "
                          f"samples' shape {tuple(shape)}") from None


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
                 guidance_rescale=None, x_T=None, progress=False, order=None, solver=None,
                 churn=None, resamples=None, x_start=None, t_start=None, known=None, mask=None):
    """Run the sampler chosen in `config.sample` (overridable) in model space.

    `sampler`, `steps`, `eta`, `order`, `solver`, `churn` and `resamples` override the config's
    sample.sampler, sample.steps, ...; the other options (variance, timestep_spacing,
    lower_order_final, rho, jump_length, clip_x0) come from `config.sample`. Editing
    (model space): SDEdit from `x_start` at `t_start` (every sampler), inpainting of `known`
    where `mask` = 1 (ddpm, ddim). An option the chosen sampler does not read is a ConfigError
    naming it (`ignored_options`).

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
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler={sampler!r} is invalid: one of {', '.join(SAMPLERS)}")
    given = dict(steps=steps, eta=eta, order=order, solver=solver, churn=churn,
                 resamples=resamples, known=known)
    ignored = ignored_options(sampler, **given)
    if ignored:
        raise ConfigError(f"{ignored[0]}={_short(given[ignored[0]])} is invalid with "
                          f"sampler={sampler!r}, which does not use it")
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
                  progress=progress, x_start=x_start, t_start=t_start, **guidance)
    inpainting = {} if known is None else dict(known=known, mask=mask)
    num_steps = options.steps if steps is None else steps
    # DDPM samples a learned-variance model with sample.variance "learned_range" (validated
    # with the config); the other samplers use its prediction half
    learned = dict(learned_variance=bool(config.model.get("learned_variance", False)))
    try:
        if sampler == "ddpm":
            return ddpm_sample(model_fn, schedule, variance=options.variance,
                               resamples=(sample_option(config, "resamples") if resamples is None
                                          else resamples),
                               jump_length=sample_option(config, "jump_length"), **inpainting,
                               **common)
        if sampler == "ddim":
            return ddim_sample(model_fn, schedule, num_steps=num_steps,
                               eta=options.eta if eta is None else eta,
                               timestep_spacing=options.timestep_spacing, **inpainting, **learned,
                               **common)
        if sampler == "dpm_solver":
            return dpm_solver_sample(
                model_fn, schedule, num_steps=num_steps,
                order=sample_option(config, "order") if order is None else order,
                timestep_spacing=options.timestep_spacing,
                lower_order_final=sample_option(config, "lower_order_final"), **learned,
                **common)
        return karras_sample(model_fn, schedule, num_steps=num_steps,
                             solver=sample_option(config, "solver") if solver is None else solver,
                             churn=sample_option(config, "churn") if churn is None else churn,
                             rho=sample_option(config, "rho"), **learned, **common)
    except ValueError as error:  # the sampler's own argument checks, as a ConfigError
        raise ConfigError(str(error)) from None


def ignored_options(sampler: str, **given) -> list[str]:
    """The names among `given` (those not None) that `sampler` does not use: `steps`, `eta`,
    `order`, `solver`, `churn` (see jaxdiff.config.SAMPLER_FIELDS), and `known` (inpainting:
    ddpm and ddim only)."""
    uses = set(SAMPLER_FIELDS[sampler]) | ({"known", "mask"} if sampler in ("ddpm", "ddim")
                                           else set())
    return [name for name, value in given.items() if value is not None and name not in uses]


def num_model_calls(config, schedule: Schedule, sampler: str | None = None,
                    steps: int | None = None, *, solver: str | None = None,
                    t_start: int | None = None, resamples: int | None = None) -> int:
    """How many model evaluations (each on a doubled batch with guidance) the sampler of
    `config.sample` (or `sampler`, `steps`, ...) makes: the T reverse steps of DDPM (t_start + 1
    from t_start; about r times more with RePaint's r resamples), the steps of DDIM and
    DPM-Solver++, the steps of Karras Euler and 2 steps - 1 of Karras Heun."""
    options = config.sample
    sampler = sampler or options.sampler
    num_steps = int(options.steps if steps is None else steps)
    if sampler == "ddpm":
        resamples = sample_option(config, "resamples") if resamples is None else resamples
        moves = ddpm_timesteps(schedule.timesteps, t_start, resamples,
                               sample_option(config, "jump_length"))
        return int(np.sum(moves[:, 1] < moves[:, 0]))
    if sampler == "karras" and (solver or sample_option(config, "solver")) == "heun":
        return 2 * num_steps - 1
    return num_steps


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
    for name in ("x_start", "known", "mask"):  # [N, ...] editing inputs: padded like labels
        if kwargs.get(name) is not None and np.shape(kwargs[name]) == tuple(shape):
            kwargs[name] = pad(np.asarray(kwargs[name]))
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
