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

from jaxdiff.checkpoint import Checkpointer, read_json
from jaxdiff.data import TOY2D_NAMES, Standardizer
from jaxdiff.data.images import TFDS_SETS, to_uint8
from jaxdiff.diffusion import OBJECTIVES
from jaxdiff.losses import LOSS_TYPES, WEIGHTINGS
from jaxdiff.models import MLPDenoiser
from jaxdiff.samplers import TIMESTEP_SPACINGS, VARIANCES, ddim_sample, ddpm_sample
from jaxdiff.schedules import SCHEDULE_KINDS, Schedule, make_schedule
from jaxdiff.training import TrainState, create_train_state, make_optimizer

MODELS = ("mlp", "unet")
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
        ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("model.num_classes", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: unconditional)"),
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
        ("ema.decay", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("ema.warmup", *boolean),
        ("sample.sampler", lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        ("sample.steps", positive_int, "an integer >= 1"),
        ("sample.eta", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
        ("sample.variance", lambda v: v in VARIANCES, f"one of {', '.join(VARIANCES)}"),
        ("sample.clip_x0", *boolean),
        ("sample.timestep_spacing", lambda v: v in TIMESTEP_SPACINGS,
         f"one of {', '.join(TIMESTEP_SPACINGS)}"),
        ("eval.num_samples", positive_int, "an integer >= 1"),
        ("eval.plots", *boolean),
        ("eval.sample_every", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: never)"),
    ]
    for field, ok, allowed in checks:
        _require(config, field, ok, allowed)
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
    if config.model.name == "unet":
        size, mults = config.data.image_size, tuple(config.model.dim_mults)
        factor = 2 ** (len(mults) - 1)
        if size % factor:
            raise ConfigError(
                f"config.data.image_size={size} is invalid: the U-Net with dim_mults={mults} "
                f"halves it {len(mults) - 1} times, so it must be divisible by {factor}")


def build_model(config: ml_collections.ConfigDict):
    """The Flax denoiser described by `config.model` (and the data's channels)."""
    model = config.model
    if model.name == "mlp":
        return MLPDenoiser(
            hidden=model.hidden, depth=model.depth, time_dim=model.time_dim,
            num_classes=model.num_classes, self_condition=model.self_condition,
            dropout=model.dropout, fourier_features=model.get("fourier_features", 0),
        )
    from jaxdiff.models.unet import Unet

    dtype = jnp.bfloat16 if model.get("dtype", "float32") == "bfloat16" else jnp.float32
    return Unet(
        dim=model.dim, dim_mults=tuple(model.dim_mults), channels=config.data.channels,
        dropout=model.dropout, self_condition=model.self_condition,
        num_classes=model.num_classes,
        learned_sinusoidal_cond=model.get("learned_sinusoidal_cond", False),
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
    diffusion = config.diffusion
    return dict(
        objective=diffusion.objective, loss_type=diffusion.loss_type,
        weighting=diffusion.weighting, min_snr_gamma=float(diffusion.min_snr_gamma),
        self_condition=config.model.self_condition,
    )


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
               return_trajectory: bool = False):
        """Samples in data space (and the data-space trajectory [S, N, ...] when asked)."""
        out = sample_model(
            self.model_fn, self.schedule, self.config, (num_samples,) + self.data_shape,
            key=jax.random.key(seed), sampler=sampler, steps=steps, eta=eta, labels=labels,
            return_trajectory=return_trajectory,
        )
        if return_trajectory:
            return self.to_data_space(out[0]), self.to_data_space(out[1])
        return self.to_data_space(out)


def sample_model(model_fn, schedule: Schedule, config, shape, *, key, sampler=None, steps=None,
                 eta=None, labels=None, return_trajectory=False):
    """Run the sampler chosen in `config.sample` (overridable) in model space."""
    options = config.sample
    sampler = sampler or options.sampler
    cond = {} if labels is None else {"labels": jnp.asarray(labels, jnp.int32)}
    common = dict(key=key, shape=shape, objective=config.diffusion.objective,
                  clip_x0=options.clip_x0, return_trajectory=return_trajectory,
                  self_condition=config.model.self_condition, cond=cond)
    if sampler == "ddpm":
        return ddpm_sample(model_fn, schedule, variance=options.variance, **common)
    if sampler == "ddim":
        return ddim_sample(
            model_fn, schedule, num_steps=steps or options.steps,
            eta=options.eta if eta is None else eta,
            timestep_spacing=options.timestep_spacing, **common,
        )
    raise ConfigError(f"sampler={sampler!r} is invalid: one of {', '.join(SAMPLERS)}")


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
        if checkpointer.latest_step() is None:
            raise ConfigError(f"workdir={workdir!r} holds no checkpoint in {checkpointer.directory}")
        state = checkpointer.restore(abstract, step)
        restored_step = step if step is not None else checkpointer.latest_step()
    finally:
        checkpointer.close()
    return Run(
        config=config, model=model, params=state.ema_params, schedule=build_schedule(config),
        standardizer=Standardizer.from_dict(meta["standardizer"]) if meta.get("standardizer")
        else None,
        data_shape=data_shape,
        step=int(restored_step),
    )
