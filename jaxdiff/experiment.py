"""From a config to the objects of a run, and back from a workdir to a usable model.

`validate_config` checks every field before anything is compiled; `build_*` turn config sections
into a model, a schedule and an optimiser; `load_run(workdir)` restores a trained run (EMA
parameters, schedule, data statistics) for sampling and evaluation from Python.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxdiff import sharding
from jaxdiff.checkpoint import Checkpointer, CheckpointError, error_summary, read_json
from jaxdiff.data import TOY2D_NAMES, Standardizer
from jaxdiff.data.images import TFDS_SETS, to_uint8
from jaxdiff.diffusion import OBJECTIVES
from jaxdiff.fid import FID_WEIGHTS_URL
from jaxdiff.losses import COND_DROP_SCHEDULES, LOSS_TYPES, WEIGHTINGS, cond_drop_schedule
from jaxdiff.models import MLPDenoiser
from jaxdiff.samplers import (
    TIMESTEP_SPACINGS,
    VARIANCES,
    check_per_example,
    ddim_sample,
    ddpm_sample,
)
from jaxdiff.schedules import SCHEDULE_KINDS, Schedule, make_schedule
from jaxdiff.training import TrainState, create_train_state, make_optimizer

MODELS = ("mlp", "unet", "ddpm_unet")
DTYPES = ("float32", "bfloat16")
POINT_SETS = TOY2D_NAMES + ("array",)
IMAGE_SETS = tuple(TFDS_SETS) + ("folder",)
SAMPLERS = ("ddpm", "ddim")


class ConfigError(ValueError):
    """A bad config value, flag or input file: reported in one line, exit code 2."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


_MISSING = object()


def _get(config, field: str):
    value = config
    for part in field.split("."):
        if part not in value:
            return _MISSING
        value = value[part]
    return value


def _require(config, field: str, ok, allowed: str) -> None:
    value = _get(config, field)
    if value is _MISSING:
        return  # a field the experiment does not use (point-only or image-only settings)
    try:
        good = bool(ok(value))
    except TypeError:
        good = False
    if not good:
        raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def is_image_config(config) -> bool:
    return config.data.name not in POINT_SETS


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check every field's type and range, and the combinations; raise ConfigError naming the
    first bad field, its value and what is allowed."""
    positive_int = lambda v: _is_int(v) and v >= 1  # noqa: E731
    boolean = (lambda v: isinstance(v, bool), "true or false")
    data_names = POINT_SETS + IMAGE_SETS
    checks = [
        ("seed", _is_int, "an integer"),
        ("data.name", lambda v: isinstance(v, str) and v != "",
         f"one of {', '.join(data_names)}, or any prepared TFDS image set"),
        ("data.path", lambda v: isinstance(v, str), "a path string"),
        ("data.noise", _is_number, "a number (< 0 for the data set's default)"),
        ("data.image_size", positive_int, "an integer >= 1"),
        ("data.channels", lambda v: v in (1, 3), "1 or 3"),
        ("data.random_flip", *boolean),
        ("data.strict", *boolean),
        ("data.data_dir", lambda v: isinstance(v, str), "a path string ('' for the default)"),
        ("data.split", lambda v: isinstance(v, str) and v != "", "a TFDS split such as train"),
        ("model.name", lambda v: v in MODELS, f"one of {', '.join(MODELS)}"),
        ("model.hidden", positive_int, "an integer >= 1"),
        ("model.depth", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("model.time_dim", lambda v: _is_int(v) and v >= 2 and v % 2 == 0, "an even integer >= 2"),
        ("model.fourier_features", lambda v: _is_int(v) and 0 <= v <= 16, "an integer in [0, 16]"),
        ("model.dim", lambda v: _is_int(v) and v >= 8, "an integer >= 8"),
        ("model.dim_mults", lambda v: len(v) >= 1 and all(_is_int(m) and m >= 1 for m in v),
         "a non-empty tuple of integers >= 1, e.g. (1, 2, 4, 8)"),
        ("model.resnet_block_groups", lambda v: v is None or (_is_int(v) and v >= 1),
         "an integer >= 1 (GroupNorm groups), or None for RMSNorm"),
        ("model.num_res_blocks", positive_int, "an integer >= 1"),
        ("model.attn_resolutions", lambda v: all(_is_int(r) and r >= 1 for r in v),
         "a tuple of feature-map sizes, e.g. (16,)"),
        ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("model.num_classes", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: unconditional)"),
        ("model.cond_drop_prob", lambda v: _is_number(v) and 0 <= v <= 1,
         "a number in [0, 1] (label dropout for classifier-free guidance)"),
        ("model.self_condition", *boolean),
        ("model.learned_sinusoidal_cond", *boolean),
        ("model.dtype", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
        ("diffusion.schedule", lambda v: v in SCHEDULE_KINDS, f"one of {', '.join(SCHEDULE_KINDS)}"),
        ("diffusion.timesteps", positive_int, "an integer >= 1"),
        ("diffusion.objective", lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
        ("diffusion.loss_type", lambda v: v in LOSS_TYPES, f"one of {', '.join(LOSS_TYPES)}"),
        ("diffusion.weighting", lambda v: v in WEIGHTINGS, f"one of {', '.join(WEIGHTINGS)}"),
        ("diffusion.min_snr_gamma", lambda v: _is_number(v) and v > 0, "a number > 0"),
        ("optim.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
        ("optim.warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("optim.decay", lambda v: v in ("constant", "cosine"), "constant or cosine"),
        ("optim.b1", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("optim.b2", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("optim.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        ("optim.grad_clip", lambda v: _is_number(v) and v >= 0, "a number >= 0 (0: no clipping)"),
        ("train.steps", positive_int, "an integer >= 1"),
        ("train.batch_size", positive_int, "an integer >= 1"),
        ("train.log_every", positive_int, "an integer >= 1"),
        ("train.checkpoint_every", positive_int, "an integer >= 1"),
        ("train.keep_checkpoints", positive_int, "an integer >= 1"),
        ("train.max_skipped_steps", positive_int, "an integer >= 1"),
        ("train.steps_per_call", positive_int, "an integer >= 1"),
        ("train.num_devices", lambda v: _is_int(v) and 0 <= v <= jax.device_count(),
         f"an integer in [0, {jax.device_count()}] (0: every device)"),
        ("train.cond_drop_schedule", lambda v: v in COND_DROP_SCHEDULES,
         f"one of {', '.join(COND_DROP_SCHEDULES)}"),
        ("train.cond_drop_start", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("ema.decay", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("ema.warmup", *boolean),
        ("sample.sampler", lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        ("sample.steps", positive_int, "an integer >= 1"),
        ("sample.eta", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        ("sample.variance", lambda v: v in VARIANCES, f"one of {', '.join(VARIANCES)}"),
        ("sample.clip_x0", *boolean),
        ("sample.timestep_spacing", lambda v: v in TIMESTEP_SPACINGS,
         f"one of {', '.join(TIMESTEP_SPACINGS)}"),
        ("sample.guidance_scale", lambda v: _is_number(v) and 0 <= v < float("inf"),
         "a number >= 0 (1: plain conditional sampling, 0: unconditional)"),
        ("sample.guidance_rescale", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("eval.num_samples", positive_int, "an integer >= 1"),
        ("eval.plots", *boolean),
        ("eval.sample_every", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: never)"),
        ("eval.guidance_scales", lambda v: all(_is_number(s) and 0 <= s < float("inf") for s in v),
         "a tuple of numbers >= 0, e.g. (0, 1, 2, 3) (empty: no guidance sweep)"),
        ("eval.inception_path", lambda v: isinstance(v, str) and (v == "" or os.path.isfile(v)),
         "'' or the path of pytorch-fid's Inception weight file, from " + FID_WEIGHTS_URL),
    ]
    for field, ok, allowed in checks:
        _require(config, field, ok, allowed)
    _validate_guidance(config)
    per_call = config.train.get("steps_per_call", 1)
    for field in ("train.log_every", "train.checkpoint_every", "eval.sample_every"):
        _require(config, field, lambda v: v % per_call == 0,
                 f"a multiple of train.steps_per_call={per_call}")
    timesteps = config.diffusion.timesteps
    _require(config, "sample.steps", lambda v: v <= timesteps,
             f"DDIM steps must be <= diffusion.timesteps={timesteps}")
    if config.data.name == "array" and not config.data.path:
        raise ConfigError("config.data.path='' is invalid: data.name='array' needs a .npy/.npz file")
    if config.data.name == "folder" and not config.data.path:
        raise ConfigError("config.data.path='' is invalid: data.name='folder' needs a directory")
    image_data = is_image_config(config)
    if image_data and "image_size" not in config.data:
        raise ConfigError(f"config.data.name={config.data.name!r} is invalid: this config is for "
                          f"point data, one of {', '.join(POINT_SETS)}")
    if image_data and config.model.name == "mlp":
        raise ConfigError(f"config.model.name='mlp' is invalid for image data "
                          f"data.name={config.data.name!r}: use unet")
    if not image_data and config.model.name != "mlp":
        raise ConfigError(f"config.model.name={config.model.name!r} is invalid for point data "
                          f"data.name={config.data.name!r}: use mlp")
    if config.model.name in ("unet", "ddpm_unet"):
        size, mults = config.data.image_size, tuple(config.model.dim_mults)
        factor = 2 ** (len(mults) - 1)
        if size % factor:
            raise ConfigError(
                f"config.data.image_size={size} is invalid: the U-Net with dim_mults={mults} "
                f"halves it {len(mults) - 1} times, so it must be divisible by {factor}")
        groups = 32 if config.model.name == "ddpm_unet" else config.model.get("resnet_block_groups")
        field = "model.dim" if config.model.name == "ddpm_unet" else "model.resnet_block_groups"
        widths = [config.model.dim * m for m in mults]
        if groups and any(width % groups for width in widths):
            raise ConfigError(
                f"config.{field}={_get(config, field)!r} is invalid: GroupNorm with {groups} "
                f"groups needs every width dim * dim_mults = {widths} to be divisible by {groups}")


def _validate_guidance(config) -> None:
    """Label dropout and guidance need a class-conditional model; guidance needs dropout."""
    num_classes = config.model.num_classes
    drop = config.model.get("cond_drop_prob", 0.0)
    schedule = config.get("train", {}).get("cond_drop_schedule", "constant")
    off = {"sample.guidance_scale": lambda v: v == 1, "sample.guidance_rescale": lambda v: v == 0,
           "eval.guidance_scales": lambda v: len(v) == 0}
    in_use = {field: _get(config, field) for field in off}
    in_use = {field: value for field, value in in_use.items()
              if value is not _MISSING and not off[field](value)}
    if not num_classes:
        if drop:
            raise ConfigError(f"config.model.cond_drop_prob={drop!r} is invalid: label dropout "
                              f"needs a class-conditional model (model.num_classes > 0)")
        for field, value in in_use.items():
            raise ConfigError(f"config.{field}={value!r} is invalid: classifier-free guidance "
                              f"needs a class-conditional model (model.num_classes > 0)")
        return
    if not drop and schedule == "constant":
        for field, value in in_use.items():
            raise ConfigError(
                f"config.{field}={value!r} is invalid: guidance needs the unconditional "
                f"(null-class) prediction, which a model trained with model.cond_drop_prob=0 "
                f"never learned; set model.cond_drop_prob (e.g. 0.1)")


def check_labels(labels, num_classes: int, num_samples: int | None = None) -> np.ndarray:
    """Class labels as int32 [N], or ConfigError naming the bad value: an unconditional model,
    non-integers, labels outside [0, num_classes), or a count other than `num_samples`."""
    if not num_classes:
        raise ConfigError(f"labels={_short(labels)} are invalid: the model is unconditional "
                          f"(model.num_classes=0)")
    array = np.asarray(labels)
    if array.ndim == 0:
        array = np.full((num_samples or 1,), array)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ConfigError(f"labels={_short(labels)} are invalid: a 1-D sequence of integer "
                          f"class indices")
    bad = array[(array < 0) | (array >= num_classes)]
    if bad.size:
        raise ConfigError(f"labels={_short(labels)} are invalid: label {int(bad[0])} is outside "
                          f"[0, num_classes={num_classes})")
    if num_samples is not None and len(array) != num_samples:
        raise ConfigError(f"labels has {len(array)} entries for {num_samples} samples: give one "
                          f"label per sample (or a single label for all)")
    return array.astype(np.int32)


def _short(value) -> str:
    text = repr(np.asarray(value).tolist()) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build_model(config: ml_collections.ConfigDict):
    """The Flax denoiser described by `config.model` (and the data's channels)."""
    model = config.model
    if model.name == "mlp":
        return MLPDenoiser(
            hidden=model.hidden, depth=model.depth, time_dim=model.time_dim,
            num_classes=model.num_classes, self_condition=model.self_condition,
            dropout=model.dropout, fourier_features=model.get("fourier_features", 0),
        )
    from jaxdiff.models.unet import DDPMUnet, Unet

    dtype = jnp.bfloat16 if model.get("dtype", "float32") == "bfloat16" else jnp.float32
    if model.name == "ddpm_unet":
        return DDPMUnet(
            ch=model.dim, ch_mult=tuple(model.dim_mults), num_res_blocks=model.num_res_blocks,
            attn_resolutions=tuple(model.attn_resolutions), dropout=model.dropout,
            channels=config.data.channels, num_classes=model.num_classes,
            self_condition=model.self_condition, dtype=dtype, param_dtype=jnp.float32,
        )
    return Unet(
        dim=model.dim, dim_mults=tuple(model.dim_mults), channels=config.data.channels,
        dropout=model.dropout, self_condition=model.self_condition,
        num_classes=model.num_classes,
        learned_sinusoidal_cond=model.get("learned_sinusoidal_cond", False),
        resnet_block_groups=model.get("resnet_block_groups", 8),
        dtype=dtype, param_dtype=jnp.float32,
    )


def build_schedule(config: ml_collections.ConfigDict) -> Schedule:
    return make_schedule(config.diffusion.schedule, config.diffusion.timesteps)


def build_optimizer(config: ml_collections.ConfigDict):
    optim = config.optim
    return make_optimizer(
        optim.lr, warmup_steps=optim.warmup_steps, total_steps=config.train.steps,
        decay=optim.decay, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay,
        grad_clip=optim.grad_clip,
    )


def loss_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`diffusion_loss` arguments; with label dropout also `null_cond` (the null class) and
    `cond_drop_prob` (a constant, or a schedule of the step that the train step evaluates)."""
    diffusion = config.diffusion
    kwargs = dict(
        objective=diffusion.objective, loss_type=diffusion.loss_type,
        weighting=diffusion.weighting, min_snr_gamma=float(diffusion.min_snr_gamma),
        self_condition=config.model.self_condition,
    )
    num_classes = config.model.num_classes
    probability = float(config.model.get("cond_drop_prob", 0.0))
    kind = config.get("train", {}).get("cond_drop_schedule", "constant")
    if num_classes and (probability > 0 or kind != "constant"):
        if kind == "constant":
            kwargs["cond_drop_prob"] = probability
        else:
            kwargs["cond_drop_prob"] = cond_drop_schedule(
                kind, probability, start=float(config.train.get("cond_drop_start", 1.0)),
                total_steps=config.train.steps)
        kwargs["null_cond"] = {"labels": num_classes}
    return kwargs


def init_state(config, model, optimizer, data_shape: tuple[int, ...]) -> TrainState:
    """A fresh train state for examples of shape `data_shape`, seeded by `config.seed`."""
    key_init, key_train = jax.random.split(jax.random.key(config.seed))
    x = jnp.zeros((1,) + tuple(data_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    params = model.init(key_init, x, t)
    return create_train_state(params, optimizer, key_train)


class Run(NamedTuple):
    """A trained run restored for evaluation: `run.sample(1000)` draws data-space samples."""

    config: ml_collections.ConfigDict
    model: Any
    params: Any  # EMA parameters
    schedule: Schedule
    standardizer: Standardizer | None  # point data; None for images ([-1, 1] <-> uint8)
    data_shape: tuple[int, ...]
    step: int

    @property
    def model_fn(self):
        return functools.partial(self.model.apply, self.params)

    def to_data_space(self, x) -> np.ndarray:
        """Model space -> data space: unstandardised points, or uint8 images."""
        if self.standardizer is None:
            return to_uint8(x)
        return self.standardizer.inverse(np.asarray(x))

    def sample(self, num_samples: int, *, seed: int = 0, sampler: str | None = None,
               steps: int | None = None, eta: float | None = None, labels=None,
               return_trajectory: bool = False, guidance_scale=None, guidance_rescale=None,
               x_T=None, num_devices: int | None = None):
        """Samples in data space (and the data-space trajectory [S, N, ...] when asked).

        `labels` (one class per sample, or one for all) and classifier-free guidance as in
        `sample_model`; `x_T` starts from given model-space noise. The batch is split over
        `num_devices` devices (default: all, every host) in one compiled call; a seed gives the
        same samples on any device count (to float rounding).
        """
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ConfigError(f"num_samples={num_samples!r} is invalid: it must be an integer "
                              f">= 1")
        try:
            mesh = sharding.make_mesh(num_devices)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        model_fn = functools.partial(self.model.apply, sharding.put_replicated(self.params, mesh))
        out = sample_sharded(
            model_fn, self.schedule, self.config, (int(num_samples),) + self.data_shape,
            key=jax.random.key(seed), mesh=mesh, sampler=sampler, steps=steps, eta=eta,
            labels=labels, return_trajectory=return_trajectory, guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale, x_T=x_T,
        )
        if return_trajectory:
            return self.to_data_space(out[0]), self.to_data_space(out[1])
        return self.to_data_space(out)

    def sample_classes(self, labels, guidance_scales=(1.0,), num_per_cell: int = 1, *,
                       seed: int = 0, sampler: str | None = None, steps: int | None = None,
                       eta: float | None = None, guidance_rescale=None,
                       num_devices: int | None = None) -> np.ndarray:
        """Data-space samples [len(labels), len(guidance_scales), num_per_cell, ...] in one
        batched (guided) sampler call: row = class, column = guidance scale. Every cell starts
        from the same `num_per_cell` draws of x_T, so along a row only the scale changes (with
        DDIM eta = 0 nothing else does)."""
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
        )
        return out.reshape(cells + out.shape[1:])


def sample_model(model_fn, schedule: Schedule, config, shape, *, key, sampler=None, steps=None,
                 eta=None, labels=None, return_trajectory=False, guidance_scale=None,
                 guidance_rescale=None, x_T=None):
    """Run the sampler chosen in `config.sample` (overridable) in model space.

    A class-conditional model samples the classes `labels` (one per sample, or one for all;
    checked against [0, model.num_classes)), or unconditionally (its null class) without them.
    With labels, classifier-free guidance uses `guidance_scale` and `guidance_rescale` (numbers
    or one per sample; default `config.sample.guidance_scale` / `guidance_rescale`). A scale of
    exactly 1 without rescaling is plain conditional sampling and skips the unconditional half.
    """
    options = config.sample
    sampler = sampler or options.sampler
    cond, guidance = _conditioning(config, shape[0], labels, guidance_scale, guidance_rescale)
    common = dict(key=key, shape=shape, objective=config.diffusion.objective,
                  clip_x0=options.clip_x0, return_trajectory=return_trajectory,
                  self_condition=config.model.self_condition, cond=cond, x_T=x_T, **guidance)
    if sampler == "ddpm":
        return ddpm_sample(model_fn, schedule, variance=options.variance, **common)
    if sampler == "ddim":
        return ddim_sample(
            model_fn, schedule, num_steps=steps or options.steps,
            eta=options.eta if eta is None else eta,
            timestep_spacing=options.timestep_spacing, **common,
        )
    raise ConfigError(f"sampler={sampler!r} is invalid: one of {', '.join(SAMPLERS)}")


def sample_sharded(model_fn, schedule: Schedule, config, shape, *, key, mesh, labels=None,
                   x_T=None, guidance_scale=None, guidance_rescale=None, **kwargs):
    """`sample_model` with the batch split over `mesh`'s devices in one compiled call; returns
    host numpy arrays (the global values on every host).

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
                       guidance_rescale=pad(guidance_rescale), **kwargs)
    out = sharding.to_host(out)
    if kwargs.get("return_trajectory"):
        return out[0][:count], out[1][:, :count]
    return out[:count]


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
    for name, value, low, high in (("guidance_scale", scale, None, None),
                                   ("guidance_rescale", rescale, 0.0, 1.0)):
        try:
            check_per_example(name, value, num_samples, low, high)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return cond, dict(guidance_scale=scale, guidance_rescale=rescale,
                      null_cond={"labels": num_classes})


def load_run(workdir: str, step: int | None = None) -> Run:
    """Restore a run trained by train.py from `workdir`: config, model, EMA params, schedule and
    data statistics (the newest checkpoint unless `step` is given)."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise ConfigError(f"workdir={workdir!r} holds no run (no config.json)")
    config = ml_collections.ConfigDict(read_json(config_path))
    meta = read_json(os.path.join(workdir, "run.json"))
    data_shape = tuple(meta["data_shape"])
    model, optimizer = build_model(config), build_optimizer(config)
    abstract = jax.eval_shape(lambda: init_state(config, model, optimizer, data_shape))
    checkpointer = Checkpointer(workdir)
    try:
        if step is None:
            restored = checkpointer.restore_newest_good(abstract)
            if restored is None:
                raise ConfigError(f"workdir={workdir!r} holds no checkpoint in "
                                  f"{checkpointer.directory}")
            state, restored_step = restored
        else:
            if step not in checkpointer.all_steps():
                raise ConfigError(f"step={step} is invalid: {checkpointer.directory} holds steps "
                                  f"{checkpointer.all_steps()}")
            try:
                state, restored_step = checkpointer.restore(abstract, step), step
            except Exception as error:  # noqa: BLE001 - a damaged checkpoint
                raise CheckpointError(f"checkpoint {checkpointer.path(step)} is unreadable: "
                                      f"{error_summary(error)}") from None
    finally:
        checkpointer.close()
    return Run(
        config=config, model=model, params=state.ema_params, schedule=build_schedule(config),
        standardizer=Standardizer.from_dict(meta["standardizer"]) if meta.get("standardizer")
        else None,
        data_shape=data_shape,
        step=int(restored_step),
    )
