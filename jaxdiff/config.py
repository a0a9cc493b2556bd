"""Experiment configs: the defaults every config file starts from, and their validation.

Config files in jaxdiff/configs/ (`--config NAME`) are Python returning an `ml_collections.ConfigDict`; image configs start
from `image_config()`, and every config gets its diffusion, optim, train, ema and sample sections
from `add_training_sections`, so a new option is added once. `validate_config` checks every field
(type, range and combinations) before anything is compiled and raises ConfigError naming the
first bad field, its value and what is allowed; `config_warnings` lists settings that are valid
but probably not meant (train_and_evaluate logs them once, before training).

Field meanings:

data      name (a TFDS set, "digits", or "folder"), path (folder), data_dir (TFDS data_dir, ""
          for the default), split, image_size, channels, random_flip, strict (corrupt folder
          files are fatal instead of skipped)
model     name "unet" (denoising-diffusion-pytorch's Unet: dim, dim_mults, resnet_block_groups,
          learned_sinusoidal_cond, random_fourier_features, learned_sinusoidal_dim,
          sinusoidal_pos_emb_theta, init_dim, attn_heads, attn_dim_head, full_attn,
          self_cond_first: the self-conditioning channel order) or "ddpm_unet" (Ho et al.'s
          CIFAR-10 net: dim is its ch, dim_mults its ch_mult, num_res_blocks,
          attn_resolutions); dropout, num_classes
          (0: unconditional), self_condition, dtype (bfloat16: bf16 compute, float32 params),
          remat (U-Nets: recompute ResNet-block activations in the backward pass),
          learned_variance (the model also outputs v, the interpolation of its reverse
          variance, trained by the hybrid loss of Nichol & Dhariwal 2021; needs
          sample.variance "learned_range")
diffusion schedule, timesteps, objective, loss_type, weighting, min_snr_gamma
optim     AdamW: lr, warmup_steps, decay (constant / cosine), b1, b2, weight_decay, grad_clip
train     steps, batch_size (global, over all devices), log_every, checkpoint_every,
          keep_checkpoints, max_skipped_steps (consecutive non-finite steps before stopping),
          steps_per_call (k steps per dispatch, a lax.scan), num_devices (0: all), fsdp (split
          parameters, EMA and optimiser state over that many devices: FSDP; 1: replicated)
ema       decay, warmup
sample    sampler: ddpm (variance: fixed_small, fixed_large, or learned_range for a model with
          model.learned_variance; resamples, jump_length: RePaint for inpainting), ddim (steps,
          eta, timestep_spacing), dpm_solver (steps, order, timestep_spacing,
          lower_order_final), karras (steps, solver, churn, rho); clip_x0 for all; t_start (the
          SDEdit start time sample.py uses with --init; -1: none)
eval      num_samples (at the end of training), likelihood (held-out VLB and probability-flow
          bits/dim, nats/dim for points) on likelihood_examples held-out examples, plots,
          sample_every (grids during training, 0: never), inception_path (pytorch-fid's
          weight file: FID against the training data when given), guidance_scales
          (conditional models: accuracy / FD per scale)
conditioning  model.num_classes > 0 with model.cond_drop_prob (label dropout, on
          train.cond_drop_schedule "constant" or "linear" from train.cond_drop_start), and
          sample.guidance_scale / guidance_rescale (classifier-free guidance)
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from jaxdiff.data.images import TFDS_SETS
from jaxdiff.data.toy2d import TOY2D_NAMES
from jaxdiff.diffusion import OBJECTIVES
from jaxdiff.errors import ConfigError
from jaxdiff.losses import COND_DROP_SCHEDULES, LOSS_TYPES, WEIGHTINGS
from jaxdiff.ode_samplers import KARRAS_SOLVERS
from jaxdiff.samplers import TIMESTEP_SPACINGS, VARIANCES
from jaxdiff.schedules import SCHEDULE_KINDS

MODELS = ("mlp", "unet", "ddpm_unet")
DTYPES = ("float32", "bfloat16")
POINT_SETS = TOY2D_NAMES + ("array",)
IMAGE_SETS = tuple(TFDS_SETS) + ("folder",)
SAMPLERS = ("ddpm", "ddim", "dpm_solver", "karras")

# The sample.* fields each sampler reads (clip_x0, t_start and guidance serve every sampler).
SAMPLER_FIELDS = {
    "ddpm": ("variance", "resamples", "jump_length"),
    "ddim": ("steps", "eta", "timestep_spacing"),
    "dpm_solver": ("steps", "order", "timestep_spacing", "lower_order_final"),
    "karras": ("steps", "solver", "churn", "rho"),
}


# Fields every config has (points and images); the others belong to one kind of data.
REQUIRED_FIELDS = (
    "seed", "data.name", "model.name", "model.num_classes", "model.self_condition",
    "diffusion.schedule", "diffusion.timesteps", "diffusion.objective", "diffusion.loss_type",
    "diffusion.weighting", "diffusion.min_snr_gamma", "optim.lr", "optim.warmup_steps",
    "optim.decay", "optim.b1", "optim.b2", "optim.weight_decay", "optim.grad_clip",
    "train.steps", "train.batch_size", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "ema.decay", "ema.warmup", "sample.sampler", "sample.steps",
    "sample.eta", "sample.variance", "sample.clip_x0", "sample.timestep_spacing",
    "eval.num_samples", "eval.plots",
)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number (no bool, NaN or infinity: each would silently poison a run)."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and bool(np.isfinite(value)))


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


def _per_stage(value, config, ok) -> bool:
    """One value for every U-Net stage, or a tuple with one per dim_mults entry."""
    if isinstance(value, (tuple, list)):
        return len(value) == len(config.model.dim_mults) and all(ok(v) for v in value)
    return ok(value)


def is_image_config(config) -> bool:
    return config.data.name not in POINT_SETS


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check every field's type and range, and the combinations; raise ConfigError naming the
    first bad field, its value and what is allowed."""
    from jaxdiff.metrics.inception import FID_WEIGHTS_URL

    for field in REQUIRED_FIELDS:
        if _get(config, field) is _MISSING:
            raise ConfigError(f"config.{field} is missing: a config starts from "
                              f"jaxdiff.config.image_config() or jaxdiff/configs/toy2d.py's get_config()")
    positive_int = lambda v: _is_int(v) and v >= 1  # noqa: E731
    boolean = (lambda v: isinstance(v, bool), "true or false")
    data_names = POINT_SETS + IMAGE_SETS
    checks = [
        ("seed", lambda v: _is_int(v) and 0 <= v < 2**62, "an integer in [0, 2**62)"),
        ("data.name", lambda v: isinstance(v, str) and v != "",
         f"one of {', '.join(data_names)}, or any prepared TFDS image set"),
        ("data.path", lambda v: isinstance(v, str), "a path string"),
        ("data.noise", _is_number, "a finite number (< 0 for the data set's default)"),
        ("data.holdout", lambda v: _is_number(v) and 0 < v < 1,
         "a fraction in (0, 1) of the array's rows held out for evaluation"),
        ("data.eval_path", lambda v: isinstance(v, str), "a path string ('' for none)"),
        ("data.image_size", positive_int, "an integer >= 1"),
        ("data.channels", lambda v: _is_int(v) and v in (1, 3), "1 or 3"),
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
        ("model.learned_variance", *boolean),
        ("model.learned_sinusoidal_cond", *boolean),
        ("model.random_fourier_features", *boolean),
        ("model.learned_sinusoidal_dim", lambda v: _is_int(v) and v >= 2 and v % 2 == 0,
         "an even integer >= 2"),
        ("model.sinusoidal_pos_emb_theta", lambda v: _is_number(v) and v > 1, "a number > 1"),
        ("model.init_dim", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: model.dim)"),
        ("model.self_cond_first", *boolean),
        ("model.remat", *boolean),
        ("model.attn_heads", lambda v: _per_stage(v, config, lambda h: _is_int(h) and h >= 1),
         "an integer >= 1, or a tuple of them, one per dim_mults entry"),
        ("model.attn_dim_head", lambda v: _per_stage(v, config, lambda h: _is_int(h) and h >= 1),
         "an integer >= 1, or a tuple of them, one per dim_mults entry"),
        ("model.full_attn", lambda v: not isinstance(v, str) and (
            len(v) == 0 or _per_stage(tuple(v), config, lambda f: isinstance(f, bool))),
         "() (full attention at the innermost stage only) or a tuple of true/false, one per "
         "dim_mults entry"),
        ("model.dtype", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
        ("diffusion.schedule", lambda v: v in SCHEDULE_KINDS, f"one of {', '.join(SCHEDULE_KINDS)}"),
        ("diffusion.timesteps", positive_int, "an integer >= 1"),
        ("diffusion.objective", lambda v: v in OBJECTIVES, f"one of {', '.join(OBJECTIVES)}"),
        ("diffusion.loss_type", lambda v: v in LOSS_TYPES, f"one of {', '.join(LOSS_TYPES)}"),
        ("diffusion.weighting", lambda v: v in WEIGHTINGS, f"one of {', '.join(WEIGHTINGS)}"),
        ("diffusion.min_snr_gamma", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("optim.lr", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("optim.warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("optim.decay", lambda v: v in ("constant", "cosine"), "constant or cosine"),
        ("optim.b1", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("optim.b2", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("optim.weight_decay", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
        ("optim.grad_clip", lambda v: _is_number(v) and v >= 0, "a finite number >= 0 (0: no clipping)"),
        ("train.steps", positive_int, "an integer >= 1"),
        ("train.batch_size", positive_int, "an integer >= 1"),
        ("train.log_every", positive_int, "an integer >= 1"),
        ("train.checkpoint_every", positive_int, "an integer >= 1"),
        ("train.keep_checkpoints", positive_int, "an integer >= 1"),
        ("train.max_skipped_steps", positive_int, "an integer >= 1"),
        ("train.steps_per_call", positive_int, "an integer >= 1"),
        ("train.num_devices", lambda v: _is_int(v) and 0 <= v <= jax.device_count(),
         f"an integer in [0, {jax.device_count()}] (0: every device)"),
        ("train.fsdp", lambda v: _is_int(v) and v >= 1 and (
            config.train.get("num_devices", 0) or jax.device_count()) % v == 0,
         "an integer >= 1 dividing the devices used (train.num_devices, 0: all "
         f"{jax.device_count()}): parameters and optimiser state are split over that many"),
        ("train.cond_drop_schedule", lambda v: v in COND_DROP_SCHEDULES,
         f"one of {', '.join(COND_DROP_SCHEDULES)}"),
        ("train.cond_drop_start", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("ema.decay", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("ema.warmup", *boolean),
        ("sample.sampler", lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        ("sample.steps", positive_int, "an integer >= 1"),
        ("sample.eta", lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
        ("sample.variance", lambda v: v in VARIANCES, f"one of {', '.join(VARIANCES)}"),
        ("sample.clip_x0", *boolean),
        ("sample.timestep_spacing", lambda v: v in TIMESTEP_SPACINGS,
         f"one of {', '.join(TIMESTEP_SPACINGS)}"),
        ("sample.order", lambda v: _is_int(v) and v in (1, 2, 3), "1, 2 or 3"),
        ("sample.lower_order_final", *boolean),
        ("sample.solver", lambda v: v in KARRAS_SOLVERS, f"one of {', '.join(KARRAS_SOLVERS)}"),
        ("sample.churn", lambda v: _is_number(v) and 0 <= v < float("inf"),
         "a finite number >= 0 (0: deterministic)"),
        ("sample.rho", lambda v: _is_number(v) and 0 < v < float("inf"), "a finite number > 0"),
        ("sample.resamples", positive_int, "an integer >= 1 (1: no RePaint resampling)"),
        ("sample.jump_length", positive_int, "an integer >= 1"),
        ("sample.t_start", lambda v: _is_int(v) and v >= -1,
         "an integer in [-1, diffusion.timesteps) (-1: no SDEdit)"),
        ("sample.guidance_scale", lambda v: _is_number(v) and 0 <= v < float("inf"),
         "a number >= 0 (1: plain conditional sampling, 0: unconditional)"),
        ("sample.guidance_rescale", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        ("eval.num_samples", positive_int, "an integer >= 1"),
        ("eval.plots", *boolean),
        ("eval.likelihood", *boolean),
        ("eval.likelihood_examples", positive_int, "an integer >= 1"),
        ("eval.sample_every", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: never)"),
        ("eval.guidance_scales", lambda v: all(_is_number(s) and 0 <= s < float("inf") for s in v),
         "a tuple of numbers >= 0, e.g. (0, 1, 2, 3) (empty: no guidance sweep)"),
        ("eval.inception_path", lambda v: isinstance(v, str) and (v == "" or os.path.isfile(v)),
         "'' or the path of pytorch-fid's Inception weight file, from " + FID_WEIGHTS_URL),
    ]
    for field, ok, allowed in checks:
        _require(config, field, ok, allowed)
    _validate_guidance(config)
    _validate_learned_variance(config)
    per_call = config.train.get("steps_per_call", 1)
    for field in ("train.log_every", "train.checkpoint_every", "eval.sample_every"):
        _require(config, field, lambda v: v % per_call == 0,
                 f"a multiple of train.steps_per_call={per_call}")
    timesteps = config.diffusion.timesteps
    _require(config, "sample.steps", lambda v: v <= timesteps,
             f"DDIM steps must be <= diffusion.timesteps={timesteps}")
    _require(config, "sample.t_start", lambda v: v < timesteps,
             f"an integer in [-1, diffusion.timesteps={timesteps}) (-1: no SDEdit)")
    if config.data.name == "array" and not config.data.path:
        raise ConfigError("config.data.path='' is invalid: data.name='array' needs a .npy/.npz file")
    if config.data.name == "folder" and not config.data.path:
        raise ConfigError("config.data.path='' is invalid: data.name='folder' needs a directory")
    if config.data.get("path") and config.data.name not in ("array", "folder"):
        raise ConfigError(f"config.data.path={config.data.path!r} is invalid with data.name="
                          f"{config.data.name!r}: a path is read only for data.name='array' (a "
                          f".npy/.npz file) or 'folder' (a directory of images)")
    image_data = is_image_config(config)
    if image_data and "image_size" not in config.data:
        raise ConfigError(f"config.data.name={config.data.name!r} is invalid: this config is for "
                          f"point data, one of {', '.join(POINT_SETS)}")
    if image_data and config.model.name == "mlp":
        raise ConfigError(f"config.model.name='mlp' is invalid for image data "
                          f"data.name={config.data.name!r}: use unet")
    if not image_data and config.eval.num_samples < 4:
        raise ConfigError(f"config.eval.num_samples={config.eval.num_samples} is invalid for point "
                          f"data: at least 4 (precision / recall use 3 nearest neighbours)")
    if config.data.get("eval_path") and config.data.name != "array":
        raise ConfigError(f"config.data.eval_path={config.data.eval_path!r} is invalid with "
                          f"data.name={config.data.name!r}: it is read only for data.name='array'")
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
        widths += [config.model.init_dim] if config.model.get("init_dim", 0) else []
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


def _validate_learned_variance(config) -> None:
    """A learned-variance model samples (DDPM) with its own variance, and only it can."""
    learned = config.model.get("learned_variance", False)
    variance = config.sample.variance
    if learned and variance != "learned_range":
        raise ConfigError(f"config.sample.variance={variance!r} is invalid with "
                          f"model.learned_variance=True: a model that learns its variance "
                          f"samples with it; set sample.variance='learned_range'")
    if not learned and variance == "learned_range":
        raise ConfigError("config.sample.variance='learned_range' is invalid: it needs a model "
                          "that learns its variance (model.learned_variance=True)")


def sample_option(config: ml_collections.ConfigDict, name: str):
    """config.sample.<name>, or its default for configs saved before the option existed."""
    if name in config.sample:
        return config.sample[name]
    return add_training_sections(ml_collections.ConfigDict()).sample[name]


def config_warnings(config: ml_collections.ConfigDict) -> list[str]:
    """Valid settings that are probably mistakes, one message each (empty: none); the config
    must have passed `validate_config`.

    - optim.warmup_steps >= train.steps: the learning rate rises linearly from 0 for the whole
      run and never reaches optim.lr."""
    warnings = []
    warmup, steps = config.optim.warmup_steps, config.train.steps
    if warmup >= steps:
        warnings.append(f"config.optim.warmup_steps={warmup} >= config.train.steps={steps}: the "
                        f"run trains only during warm-up (the learning rate never reaches "
                        f"optim.lr={config.optim.lr})")
    return warnings


# --- defaults -----------------------------------------------------------------------------------




def add_training_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add the diffusion, optim, train, ema and sample sections with their defaults (the image
    defaults; jaxdiff/configs/toy2d.py overrides what points need). Every config, image or point, gets
    these fields from here, so a new training option is added once."""
    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.schedule = "cosine"
    config.diffusion.timesteps = 1000
    config.diffusion.objective = "pred_noise"
    config.diffusion.loss_type = "l2"
    config.diffusion.weighting = "none"
    config.diffusion.min_snr_gamma = 5.0

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-4
    config.optim.warmup_steps = 1000
    config.optim.decay = "constant"
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.weight_decay = 0.0
    config.optim.grad_clip = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.steps = 100_000
    config.train.batch_size = 128
    config.train.log_every = 100
    config.train.checkpoint_every = 5_000
    config.train.keep_checkpoints = 3
    config.train.max_skipped_steps = 20  # stop after this many consecutive non-finite steps
    config.train.steps_per_call = 1  # train steps per dispatch (a lax.scan over k steps)
    config.train.num_devices = 0  # devices the batch is split over; 0: all of them, all hosts
    config.train.fsdp = 1  # FSDP: parameters and optimiser state split over this many devices
    config.train.cond_drop_schedule = "constant"  # or "linear": from cond_drop_start down
    config.train.cond_drop_start = 1.0

    config.ema = ml_collections.ConfigDict()
    config.ema.decay = 0.9999
    config.ema.warmup = True

    config.sample = ml_collections.ConfigDict()
    config.sample.sampler = "ddim"
    config.sample.steps = 100
    config.sample.eta = 0.0
    config.sample.variance = "fixed_small"
    config.sample.clip_x0 = True
    config.sample.timestep_spacing = "trailing"
    config.sample.order = 2  # DPM-Solver++ 2M
    config.sample.lower_order_final = True
    config.sample.solver = "heun"
    config.sample.churn = 0.0
    config.sample.rho = 7.0
    config.sample.resamples = 1
    config.sample.jump_length = 10
    config.sample.t_start = -1
    config.sample.guidance_scale = 1.0  # 1: plain conditional sampling
    config.sample.guidance_rescale = 0.0
    return config


def image_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.path = ""
    config.data.data_dir = ""
    config.data.split = "train"
    config.data.image_size = 8
    config.data.channels = 1
    config.data.random_flip = False
    config.data.strict = False

    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.dim = 64
    config.model.dim_mults = (1, 2, 4, 8)
    config.model.resnet_block_groups = 8
    config.model.num_res_blocks = 2  # ddpm_unet only
    config.model.attn_resolutions = (16,)  # ddpm_unet only
    config.model.dropout = 0.0
    config.model.num_classes = 0
    config.model.cond_drop_prob = 0.0  # label dropout for classifier-free guidance
    config.model.self_condition = False
    config.model.learned_sinusoidal_cond = False
    # denoising-diffusion-pytorch's remaining Unet fields (unet only; jaxdiff.port sets them)
    config.model.random_fourier_features = False
    config.model.learned_sinusoidal_dim = 16
    config.model.sinusoidal_pos_emb_theta = 10_000.0
    config.model.init_dim = 0  # 0: dim
    config.model.attn_heads = 4  # or one per stage
    config.model.attn_dim_head = 32  # or one per stage
    config.model.full_attn = ()  # (): full attention at the innermost stage only
    # [x_self_cond, x] as denoising-diffusion-pytorch; absent (False) in configs saved before
    config.model.self_cond_first = True
    config.model.dtype = "float32"
    config.model.learned_variance = False  # [prediction, v] output, hybrid loss (improved DDPM)
    config.model.remat = False  # recompute ResNet-block activations in the backward pass

    add_training_sections(config)

    config.eval = ml_collections.ConfigDict()
    config.eval.num_samples = 1000
    config.eval.plots = True
    config.eval.sample_every = 5_000
    config.eval.inception_path = ""
    config.eval.guidance_scales = ()  # conditional models: a guidance sweep at the end
    config.eval.likelihood = True  # held-out bits/dim: the VLB and the probability-flow ODE
    config.eval.likelihood_examples = 100  # a VLB is T model calls per example
    return config


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a config to a smoke test: a few steps, a tiny model, few samples."""
    config.train.steps = 20
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.optim.warmup_steps = 5
    config.eval.num_samples = 16
    config.eval.sample_every = 0
    config.eval.likelihood_examples = 16
    config.sample.steps = 10
    return config
