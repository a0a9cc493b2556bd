"""A denoising-diffusion-pytorch checkpoint -> a jaxdiff workdir (`port_ddp_checkpoint`, the work
of `python -m jaxdiff.port ddp`): the config a ported model needs, the train state, the summary.
The tensor mapping and what the files imply are in `jaxdiff.port.ddp`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.errors import ConfigError
from jaxdiff.port.ddp import (diffusion_settings, infer_unet_kwargs, read_ddp_checkpoint,
                              unet_params)


def ported_config(kwargs: dict, settings: dict, *, image_size: int,
                  sampling_timesteps: int | None = None, ddim_eta: float = 0.0,
                  data_path: str = "", source: str = ""):
    """A jaxdiff image config for a ported ddp model (sampler as GaussianDiffusion.sample:
    DDIM with ddp's "trailing" times when sampling_timesteps < timesteps, else DDPM)."""
    from jaxdiff.config import image_config

    config = image_config()
    model = config.model
    groups = kwargs["resnet_block_groups"]
    model.name = "unet"
    model.dim, model.dim_mults = kwargs["dim"], tuple(kwargs["dim_mults"])
    model.resnet_block_groups = groups
    model.self_condition = kwargs["self_condition"]
    model.self_cond_first = True
    model.learned_variance = kwargs["learned_variance"]
    model.learned_sinusoidal_cond = kwargs.get("learned_sinusoidal_cond", False)
    model.random_fourier_features = kwargs.get("random_fourier_features", False)
    model.learned_sinusoidal_dim = kwargs.get("learned_sinusoidal_dim", 16)
    model.sinusoidal_pos_emb_theta = float(kwargs.get("sinusoidal_pos_emb_theta", 10_000.0))
    model.init_dim = kwargs["init_dim"] if kwargs["init_dim"] != kwargs["dim"] else 0
    for name in ("attn_heads", "attn_dim_head"):  # an int, or a tuple with one per stage
        del model[name]  # (a ConfigDict field keeps its first type)
        model[name] = kwargs[name]
    model.full_attn = tuple(kwargs["full_attn"])
    model.dropout = 0.0
    config.data.name = "folder"
    config.data.path = data_path
    config.data.image_size = image_size
    config.data.channels = kwargs["channels"]
    config.diffusion.timesteps = settings["timesteps"]
    config.diffusion.schedule = settings["schedule"]
    config.diffusion.objective = settings["objective"]
    if settings["min_snr_gamma"]:
        config.diffusion.weighting = "min_snr"
        config.diffusion.min_snr_gamma = settings["min_snr_gamma"]
    steps = sampling_timesteps or settings["timesteps"]
    if steps < settings["timesteps"]:
        config.sample.sampler = "ddim"
        config.sample.steps = steps
        config.sample.eta = float(ddim_eta)
        config.sample.timestep_spacing = "trailing"
    else:
        config.sample.sampler = "ddpm"
    config.sample.clip_x0 = True
    config.sample.variance = "learned_range" if kwargs["learned_variance"] else "fixed_small"
    config.ported_from = source
    return config


def _fit_check(kwargs: dict, image_size: int) -> None:
    if "out_dim" in kwargs:
        raise ConfigError(f"tensor 'final_conv.weight' has {kwargs['out_dim']} output channels: "
                          f"neither channels={kwargs['channels']} nor twice that (learned "
                          "variance), so it is no GaussianDiffusion denoiser (pass --channels?)")
    factor = 2 ** (len(kwargs["dim_mults"]) - 1)
    if image_size < 1 or image_size % factor:
        raise ConfigError(f"--image_size={image_size} is invalid: the Unet with dim_mults="
                          f"{tuple(kwargs['dim_mults'])} needs a multiple of {factor}")
    if kwargs["channels"] not in (1, 3):
        raise ConfigError(f"the checkpoint's Unet has channels={kwargs['channels']}: a jaxdiff "
                          "image run holds 1 or 3 channels")


def port_ddp_checkpoint(path: str, workdir: str, *, image_size: int = 128,
                        timesteps: int | None = None, schedule: str | None = None,
                        objective: str | None = None, sampling_timesteps: int | None = None,
                        ddim_eta: float = 0.0, channels: int | None = None,
                        overrides: dict[str, Any] | None = None, use_ema: bool = True,
                        data_path: str = "") -> dict:
    """Convert a denoising-diffusion-pytorch checkpoint into the jaxdiff workdir `workdir`.

    Writes config.json, run.json and an Orbax checkpoint at the file's step whose `ema_params`
    are the file's EMA weights (or its model's) and whose `params` the online weights, with a
    fresh optimiser state: `load_run`, sample.py and jaxdiff-likelihood use it like a trained
    run. The architecture comes from the tensors (`infer_unet_kwargs`; `overrides`, e.g.
    dim / dim_mults / resnet_block_groups / random_fourier_features, replace inferred fields
    and must fit the tensors), the diffusion settings from the buffers (`diffusion_settings`).
    Returns a summary dict. ConfigError (one line) for every problem; nothing is written
    before the whole conversion has succeeded.
    """
    from jaxdiff.checkpoint import Checkpointer
    from jaxdiff.config import validate_config
    from jaxdiff.data.codecs import ImageCodec
    from jaxdiff.models import build_model
    from jaxdiff.training import build_optimizer, create_train_state
    from jaxdiff.workdir import RunInfo, write_run

    checkpoint = read_ddp_checkpoint(path, use_ema=use_ema)
    kwargs = infer_unet_kwargs(checkpoint.unet, channels)
    stages = len(kwargs["dim_mults"])
    mults = (overrides or {}).get("dim_mults")
    if mults is not None and len(mults) != stages:
        raise ConfigError(f"--dim_mults={','.join(map(str, mults))} has {len(mults)} stages but "
                          f"the checkpoint's Unet has {stages} (tensors downs.0 to "
                          f"downs.{stages - 1})")
    for name, value in (overrides or {}).items():
        if value is not None:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    if kwargs.get("random_fourier_features"):
        kwargs["learned_sinusoidal_cond"] = False
        if "time_mlp.0.weights" not in checkpoint.unet:
            raise ConfigError("--random_fourier_features is set but the checkpoint has no "
                              "'time_mlp.0.weights' (its time embedding is sinusoidal)")
    _fit_check(kwargs, image_size)
    settings = diffusion_settings(checkpoint, timesteps=timesteps, schedule=schedule,
                                  objective=objective)
    if sampling_timesteps is not None and not 1 <= sampling_timesteps <= settings["timesteps"]:
        raise ConfigError(f"--sampling_timesteps={sampling_timesteps} is invalid: an integer in "
                          f"[1, {settings['timesteps']}]")
    config = ported_config(kwargs, settings, image_size=image_size,
                           sampling_timesteps=sampling_timesteps, ddim_eta=ddim_eta,
                           data_path=data_path, source=os.path.abspath(path))
    check = config.copy_and_resolve_references()
    check.data.path = check.data.path or "(unknown)"
    validate_config(check)
    model = build_model(config)
    ema_params = unet_params(checkpoint.unet, model)
    params = unet_params(checkpoint.online, model) if checkpoint.online is not None else ema_params
    for name, tree in (("EMA", ema_params), ("model", params)):
        if not all(bool(np.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(tree)):
            raise ConfigError(f"{path}: the {name} weights hold NaN or Inf values")
    if os.path.exists(os.path.join(workdir, "config.json")):
        raise ConfigError(f"--workdir={workdir!r} already holds a run: choose an empty directory")
    state = create_train_state(jax.tree_util.tree_map(jnp.asarray, params),
                               build_optimizer(config), jax.random.key(config.seed))
    state = state.replace(step=jnp.asarray(checkpoint.step, jnp.int32),
                          ema_params=jax.tree_util.tree_map(jnp.asarray, ema_params))
    shape = (image_size, image_size, kwargs["channels"])
    write_run(workdir, config, RunInfo(shape, f"ddp:{os.path.basename(path)}", 0, ImageCodec()))
    checkpointer = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    checkpointer.save(checkpoint.step, state)
    checkpointer.wait()
    checkpointer.close()
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(ema_params))
    notes = []
    if kwargs["resnet_block_groups"] is not None and not (overrides or {}).get(
            "resnet_block_groups"):
        notes.append("GroupNorm groups are not stored in ddp files: 8 assumed (ddp 1.x's "
                     "default resnet_block_groups); pass --resnet_block_groups if the model used "
                     "another")
    return {"notes": notes, "workdir": workdir, "step": checkpoint.step, "kind": checkpoint.kind,
            "weights": checkpoint.which, "version": checkpoint.version,
            "params": count, "unet": {k: v for k, v in kwargs.items()},
            "diffusion": {k: v for k, v in settings.items()}, "image_size": image_size,
            "sampler": config.sample.sampler}


def summary_line(summary: dict) -> str:
    """One line describing a finished port (what train.py-style output users read)."""
    unet, diffusion = summary["unet"], summary["diffusion"]
    sources = diffusion["sources"]
    norm = ("RMSNorm" if unet["resnet_block_groups"] is None
            else f"GroupNorm({unet['resnet_block_groups']})")
    return (f"ported {summary['kind']} checkpoint (step {summary['step']}, {summary['weights']} "
            f"weights{', ddp ' + summary['version'] if summary['version'] else ''}) to "
            f"{summary['workdir']}: Unet dim {unet['dim']}, dim_mults "
            f"{','.join(map(str, unet['dim_mults']))}, {unet['channels']} channels, {norm}, "
            f"self_condition {unet['self_condition']}, {summary['params']:,} params; "
            f"{diffusion['schedule']} schedule ({sources['schedule']}), "
            f"T {diffusion['timesteps']}, "
            f"{diffusion['objective']} ({sources['objective']}); image_size "
            f"{summary['image_size']}; sampler {summary['sampler']}")


def dumps(summary: dict) -> str:
    return json.dumps(summary, default=lambda o: list(o) if isinstance(o, tuple) else str(o))

