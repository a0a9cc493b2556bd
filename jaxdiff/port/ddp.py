"""denoising-diffusion-pytorch (lucidrains) checkpoints -> jaxdiff: the `Unet` weights, the
architecture they imply and the diffusion settings their buffers record (the workdir is
written by `jaxdiff.port.workdir`).

What a file may hold (read with `jaxdiff.torch_checkpoint`, no torch):

  Trainer's model-N.pt   {"step", "model": GaussianDiffusion.state_dict(), "opt", "ema":
                         EMA.state_dict() ("ema_model.<diffusion>" + "online_model.<diffusion>"),
                         "scaler", "version"}
  GaussianDiffusion      "model.<unet tensor>" plus its buffers (betas, alphas_cumprod, ...,
                         loss_weight)
  Unet                   the bare module's state_dict

Tensor names map onto the Flax `jaxdiff.models.Unet` (same module names, NHWC):

  init_conv, final_conv              init_conv, final_conv
  time_mlp.0 / .1 / .3               time_fourier (learned or random Fourier features) /
                                     time_mlp_0 / time_mlp_1
  downs.s.0 / .1 / .2 / .3(.1)       down_s_block1 / _block2 / _attn / _downsample(/conv)
  mid_block1, mid_attn, mid_block2   the same names
  ups.j.* (j = stages - 1 - s)       up_s_block1 / _block2 / _attn / _upsample(/conv)
  ResnetBlock: mlp.1, block{1,2}.proj, block{1,2}.norm (GroupNorm weight/bias = scale/bias,
    RMSNorm g [1, C, 1, 1] = g [C]), res_conv
  attention: norm.g, mem_kv, to_qkv, to_out.0 + to_out.1.g (linear) or to_out (full)

Conv weights [O, I, kh, kw] become kernels [kh, kw, I, O], Linear weights [O, I] kernels [I, O].
Self-conditioning needs no permutation: the Flax `Unet` concatenates [x_self_cond, x] as the
PyTorch module does (`self_cond_first`).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdiff.errors import ConfigError
from jaxdiff.schedules import SCHEDULE_KINDS, make_schedule
from jaxdiff.torch_checkpoint import read_torch_state_dict

# GaussianDiffusion's defaults (denoising-diffusion-pytorch 1.x and 2.x), for a bare Unet file.
DDP_DEFAULTS = {"timesteps": 1000, "schedule": "sigmoid", "objective": "pred_v"}
_OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
_DIFFUSION_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "loss_weight")


class DdpCheckpoint(NamedTuple):
    """A denoising-diffusion-pytorch file, split into what jaxdiff needs.

    unet: the Unet tensors to use (the EMA model's when the file has one, else the model's);
    online: the online Unet tensors of a Trainer file with EMA (None otherwise); buffers: the
    GaussianDiffusion buffers ({} for a bare Unet); step: the Trainer's step (0 otherwise);
    version: the package version the Trainer recorded ("" otherwise); kind: "trainer",
    "diffusion" or "unet"; which: "ema" or "model", where `unet` came from.
    """

    unet: dict[str, np.ndarray]
    online: dict[str, np.ndarray] | None
    buffers: dict[str, np.ndarray]
    step: int
    version: str
    kind: str
    which: str


def _split_diffusion(state: dict, where: str) -> tuple[dict, dict]:
    """GaussianDiffusion state_dict -> (Unet tensors without the "model." prefix, buffers)."""
    unet, buffers, other = {}, {}, []
    for key, value in state.items():
        if key.startswith("model."):
            unet[key[len("model."):]] = value
        elif key in _DIFFUSION_BUFFERS:
            buffers[key] = value
        else:
            other.append(key)
    if other:
        raise ConfigError(f"{where}: unexpected tensor {other[0]!r} in a GaussianDiffusion "
                          "state_dict (expected 'model.*' and the schedule buffers)")
    if not unet:
        raise ConfigError(f"{where}: no 'model.*' tensors: not a GaussianDiffusion state_dict")
    return unet, buffers


def _tensors(value, where: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(v, np.ndarray) for v in value.values()):
        raise ConfigError(f"{where} is not a state_dict of tensors")
    return value


def read_ddp_checkpoint(path: str, *, use_ema: bool = True) -> DdpCheckpoint:
    """Read a Trainer `model-N.pt`, a GaussianDiffusion or a bare Unet state_dict (no torch).

    A Trainer file's EMA weights are used when present (`use_ema=False`: the online model's).
    ConfigError, one line, for anything else: unreadable or truncated files, other objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path!r} does not exist")
    try:
        obj = read_torch_state_dict(path)
    except Exception as error:  # noqa: BLE001 - truncated zip, foreign pickle, ...
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(f"{path}: cannot be read as a torch.save file ({reason})") from None
    if "model" in obj and not isinstance(obj["model"], np.ndarray):  # a Trainer file
        model_state = _tensors(obj["model"], f"{path}: 'model'")
        online, buffers = _split_diffusion(model_state, f"{path}: 'model'")
        ema = obj.get("ema")
        step = obj.get("step", 0)
        step = int(step.item() if isinstance(step, np.ndarray) else step)
        version = str(obj.get("version", ""))
        if use_ema and isinstance(ema, dict) and any(k.startswith("ema_model.") for k in ema):
            ema_state = {k[len("ema_model."):]: v for k, v in _tensors(
                ema, f"{path}: 'ema'").items() if k.startswith("ema_model.")}
            unet, _ = _split_diffusion(ema_state, f"{path}: 'ema'")
            return DdpCheckpoint(unet, online, buffers, step, version, "trainer", "ema")
        return DdpCheckpoint(online, None, buffers, step, version, "trainer", "model")
    state = _tensors(obj, path)
    if any(key.startswith("model.") for key in state):
        unet, buffers = _split_diffusion(state, path)
        return DdpCheckpoint(unet, None, buffers, 0, "", "diffusion", "model")
    if "init_conv.weight" not in state:
        first = next(iter(state), None)
        raise ConfigError(f"{path}: not a denoising-diffusion-pytorch Unet state_dict (no "
                          f"'init_conv.weight'; first tensor {first!r})")
    return DdpCheckpoint(state, None, {}, 0, "", "unet", "model")


# ---------------------------------------------------------------------------------------------
# The architecture the tensors imply


def _shape(unet: dict, key: str) -> tuple[int, ...]:
    if key not in unet:
        raise ConfigError(f"missing tensor {key!r}: not a denoising-diffusion-pytorch Unet")
    return tuple(unet[key].shape)


def infer_unet_kwargs(unet: dict[str, np.ndarray], channels: int | None = None) -> dict:
    """The `jaxdiff.models.Unet` fields a ddp Unet state_dict implies.

    From the shapes: dim (time MLP width / 4), init_dim, dim_mults, attention kind, heads and
    head width per stage, RMSNorm (2.x) vs GroupNorm (1.x; the group count is not stored: 8,
    ddp's default), Fourier time features, out_dim. `channels` (default: the output channels,
    GaussianDiffusion's rule, or the input channels when the input is neither as many nor twice
    as many) decides self_condition (twice as many input channels) and learned_variance (twice
    as many outputs; any other count is returned as out_dim). Ambiguous files (input 2C, output
    2C: self-conditioned and learned variance, or neither with 2C channels) need `channels`.
    """
    init_dim, in_channels = _shape(unet, "init_conv.weight")[:2]
    time_dim = _shape(unet, "time_mlp.1.weight")[0] if "time_mlp.1.weight" in unet else None
    if time_dim is None or time_dim % 4:
        raise ConfigError("tensor 'time_mlp.1.weight' is missing or its width is not 4 * dim: "
                          "not a denoising-diffusion-pytorch Unet")
    dim = time_dim // 4
    stages = sorted({int(m.group(1)) for k in unet if (m := re.match(r"downs\.(\d+)\.", k))})
    if not stages or stages != list(range(len(stages))):
        raise ConfigError(f"downs.* tensors cover stages {stages}: not a ddp Unet")
    dim_mults, full_attn, heads, dim_heads = [], [], [], []
    for stage in stages:
        last = stage == len(stages) - 1
        key = f"downs.{stage}.3.weight" if last else f"downs.{stage}.3.1.weight"
        width = _shape(unet, key)[0]
        if width % dim:
            raise ConfigError(f"tensor {key!r} has {width} output channels, not a multiple of "
                              f"dim={dim}")
        dim_mults.append(width // dim)
        full = f"downs.{stage}.2.to_out.weight" in unet
        mem_kv = _shape(unet, f"downs.{stage}.2.mem_kv")
        full_attn.append(full)
        heads.append(mem_kv[1])
        dim_heads.append(mem_kv[3] if full else mem_kv[2])
    out_dim = _shape(unet, "final_conv.weight")[0]
    if channels is None:  # GaussianDiffusion's channels == out_dim, unless the input says not
        channels = out_dim if in_channels in (out_dim, 2 * out_dim) else in_channels
    if in_channels not in (channels, 2 * channels):
        raise ConfigError(f"tensor 'init_conv.weight' takes {in_channels} input channels: "
                          f"neither channels={channels} nor twice that (self-conditioning)")
    rms = "downs.0.0.block1.norm.g" in unet
    kwargs = dict(dim=dim, dim_mults=tuple(dim_mults), channels=channels,
                  init_dim=init_dim, self_condition=in_channels == 2 * channels,
                  learned_variance=out_dim == 2 * channels,
                  resnet_block_groups=None if rms else 8,
                  full_attn=tuple(full_attn), attn_heads=_uniform(heads),
                  attn_dim_head=_uniform(dim_heads))
    if out_dim not in (channels, 2 * channels):  # a Unet(out_dim=...) of some other use
        kwargs.update(out_dim=out_dim, learned_variance=False)
    if "time_mlp.0.weights" in unet:
        kwargs.update(learned_sinusoidal_cond=True,
                      learned_sinusoidal_dim=2 * _shape(unet, "time_mlp.0.weights")[0])
    return kwargs


def _uniform(values: list[int]):
    return values[0] if len(set(values)) == 1 else tuple(values)


# ---------------------------------------------------------------------------------------------
# Tensor names and layouts


def _torch_module(path: tuple[str, ...], num_stages: int) -> str:
    """The PyTorch module name of a Flax module path (without the leaf)."""
    top, rest = path[0], list(path[1:])
    match = re.fullmatch(r"(down|up)_(\d+)_(block1|block2|attn|downsample|upsample)", top)
    if match:
        side, stage, part = match.group(1), int(match.group(2)), match.group(3)
        index = stage if side == "down" else num_stages - 1 - stage
        slot = {"block1": 0, "block2": 1, "attn": 2, "downsample": 3, "upsample": 3}[part]
        head = f"{side}s.{index}.{slot}"
        if rest[:1] == ["conv"]:  # Sequential(Rearrange / nn.Upsample, Conv2d)
            head, rest = head + ".1", rest[1:]
    else:
        head = {"time_fourier": "time_mlp.0", "time_mlp_0": "time_mlp.1",
                "time_mlp_1": "time_mlp.3"}.get(top, top)
    names = {"mlp": "mlp.1", "to_out_conv": "to_out.0", "to_out_norm": "to_out.1"}
    return ".".join([head] + [names.get(part, part) for part in rest])


def _torch_name(path: tuple[str, ...], num_stages: int) -> str:
    leaf = path[-1]
    module = _torch_module(path[:-1], num_stages) if len(path) > 1 else ""
    name = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    return f"{module}.{name}" if module else name


def _to_flax(value: np.ndarray, leaf: str, flax_shape: tuple[int, ...]) -> np.ndarray:
    """A torch tensor in the Flax layout (checked by the caller)."""
    if leaf == "kernel" and len(flax_shape) == 4 and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
    if leaf == "kernel" and value.ndim == 2:
        return value.T  # Linear [O, I] -> Dense [I, O]
    if leaf == "g" and value.ndim == 4:
        return value.reshape(-1)  # RMSNorm [1, C, 1, 1] -> [C]
    return value


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if leaf == "kernel" and len(flax_shape) == 4:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    if leaf == "kernel" and len(flax_shape) == 2:
        return flax_shape[::-1]
    if leaf == "g":
        return (1, flax_shape[0], 1, 1)
    return flax_shape


def unet_params(unet_state: dict[str, np.ndarray], model, *, dtype=np.float32) -> dict:
    """Map a ddp Unet state_dict onto `model`'s (a `jaxdiff.models.Unet`) params {"params": ...}.

    Every Flax parameter must find its tensor with the matching shape, and every tensor must be
    used: ConfigError naming the first missing, misshapen or unexpected tensor (for example
    when the flags' dim / dim_mults do not fit the file).
    """
    num_stages = len(model.dim_mults)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0),
        jnp.zeros((1, 2 ** num_stages, 2 ** num_stages, model.channels), jnp.float32),
        jnp.zeros((1,), jnp.int32))
    flat = traverse_util.flatten_dict(abstract["params"])
    used, out = set(), {}
    architecture = (f"Unet(dim={model.dim}, dim_mults={tuple(model.dim_mults)}, channels="
                    f"{model.channels}, self_condition={model.self_condition})")
    for path, leaf in flat.items():
        if path[0] == "label_emb":
            raise ConfigError("num_classes > 0: denoising-diffusion-pytorch's Unet has no label "
                              "embedding")
        name = _torch_name(path, num_stages)
        want = _torch_shape(tuple(leaf.shape), path[-1])
        if name not in unet_state:
            raise ConfigError(f"missing tensor {name!r}: {architecture} needs it (shape {want})")
        value = np.asarray(unet_state[name])
        if tuple(value.shape) != want:
            raise ConfigError(f"tensor {name!r} has shape {tuple(value.shape)} but {architecture} "
                              f"expects {want}")
        out[path] = np.asarray(_to_flax(value, path[-1], tuple(leaf.shape)), dtype)
        used.add(name)
    unexpected = [key for key in unet_state if key not in used]
    if unexpected:
        raise ConfigError(f"unexpected tensor {unexpected[0]!r} ({len(unexpected)} unused): "
                          f"{architecture} has no such parameter")
    return {"params": traverse_util.unflatten_dict(out)}


# ---------------------------------------------------------------------------------------------
# Diffusion settings from the buffers


def infer_schedule(betas: np.ndarray) -> str:
    """The jaxdiff schedule kind whose betas equal a GaussianDiffusion's `betas` buffer (float32)
    to 1e-5 relative (ddp's linear / cosine / sigmoid with their default parameters)."""
    betas = np.asarray(betas, np.float64)
    for kind in SCHEDULE_KINDS:
        ours = np.asarray(make_schedule(kind, len(betas)).betas, np.float64)
        if np.allclose(ours, betas, rtol=1e-5, atol=1e-9):
            return kind
    raise ConfigError(f"the checkpoint's betas ({len(betas)} steps, first {betas[0]:.3g}, last "
                      f"{betas[-1]:.3g}) match none of jaxdiff's schedules "
                      f"({', '.join(SCHEDULE_KINDS)} with ddp's default parameters)")


def infer_objective(loss_weight: np.ndarray, alphas_cumprod: np.ndarray) -> tuple[str, float]:
    """(objective, min_snr_gamma or 0) from GaussianDiffusion's `loss_weight` buffer.

    ddp stores maybe_clipped_snr / snr (pred_noise), maybe_clipped_snr (pred_x0) or
    maybe_clipped_snr / (snr + 1) (pred_v), with maybe_clipped_snr = min(snr, gamma) under
    min_snr_loss_weight: exactly one objective makes the recovered clipped SNR of that form.
    """
    alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weight = np.asarray(loss_weight, np.float64)
    for objective, factor in zip(_OBJECTIVES, (snr, np.ones_like(snr), snr + 1)):
        clipped = weight * factor
        gamma = float(clipped.max())
        if np.allclose(clipped, np.minimum(snr, gamma), rtol=1e-4, atol=1e-6):
            return objective, (gamma if gamma < snr.max() * (1 - 1e-4) else 0.0)
    raise ConfigError("the checkpoint's loss_weight buffer fits none of ddp's objectives "
                      f"({', '.join(_OBJECTIVES)})")


def diffusion_settings(checkpoint: DdpCheckpoint, *, timesteps: int | None = None,
                       schedule: str | None = None, objective: str | None = None) -> dict:
    """timesteps, schedule, objective and min_snr_gamma: from the buffers when the file has
    them (a flag that contradicts them is a ConfigError), else from the flags or ddp's
    defaults. The source of each value is in `sources`."""
    buffers, sources = checkpoint.buffers, {}
    if "betas" in buffers:
        found = {"timesteps": len(buffers["betas"]), "schedule": infer_schedule(buffers["betas"])}
        if "loss_weight" in buffers and "alphas_cumprod" in buffers:
            found["objective"], gamma = infer_objective(buffers["loss_weight"],
                                                        buffers["alphas_cumprod"])
        else:
            gamma = 0.0
        given = {"timesteps": timesteps, "schedule": schedule, "objective": objective}
        for name, value in given.items():
            if name in found and value is not None and value != found[name]:
                raise ConfigError(f"--{name}={value} contradicts the checkpoint, whose buffers "
                                  f"say {name}={found[name]}")
        settings = {name: found.get(name, given[name] if given[name] is not None
                                    else DDP_DEFAULTS[name]) for name in given}
        sources = {name: "checkpoint" if name in found else
                   ("flag" if given[name] is not None else "ddp default") for name in given}
        settings["min_snr_gamma"] = gamma
    else:
        given = {"timesteps": timesteps, "schedule": schedule, "objective": objective}
        settings = {name: DDP_DEFAULTS[name] if value is None else value
                    for name, value in given.items()}
        sources = {name: "ddp default" if value is None else "flag"
                   for name, value in given.items()}
        settings["min_snr_gamma"] = 0.0
    settings["sources"] = sources
    return settings
