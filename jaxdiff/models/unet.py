"""U-Net denoisers for images [B, H, W, C] (NHWC throughout).

- `Unet`: the architecture of denoising-diffusion-pytorch's `Unet` (lucidrains), so a config moves
  across with the same field names and the same parameter count.
- `DDPMUnet`: the CIFAR-10 network of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models",
  35.7M parameters), following the official diffusion_tf/models/unet.py.

Both are called as `model.apply(params, x_t, t, x_self_cond=None, labels=None, train=False)`, like
`MLPDenoiser`; dropout draws from the "dropout" rng when `train=True`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxdiff.models.embeddings import (LabelEmbedding, LearnedSinusoidalEmbedding,
                                       sinusoidal_embedding)

Dtype = Any


# ---------------------------------------------------------------------------------------------
# Input checks shared by both networks


def _check_multipliers(name: str, multipliers: Sequence[int]) -> None:
    if len(multipliers) == 0 or any(m <= 0 for m in multipliers):
        raise ValueError(f"{name} must be a non-empty tuple of positive integers, "
                         f"got {name}={tuple(multipliers)}")


def _check_image(x: Array, channels: int, name: str, multipliers: Sequence[int]) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got an input of shape {x.shape}")
    if x.shape[-1] != channels:
        raise ValueError(f"input has {x.shape[-1]} channels but the model was built with "
                         f"channels={channels}")
    factor = 2 ** (len(multipliers) - 1)
    height, width = x.shape[1:3]
    if height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} is not divisible by "
                         f"2**(len({name})-1)={factor} for {name}={tuple(multipliers)}")


def _model_inputs(x: Array, x_self_cond: Array | None, self_condition: bool) -> Array:
    """x, or concat(x, x_self_cond) on channels (zeros when there is no previous x0 estimate)."""
    if not self_condition:
        return x
    if x_self_cond is None:
        x_self_cond = jnp.zeros_like(x)
    elif x_self_cond.shape != x.shape:
        raise ValueError(f"x_self_cond has shape {x_self_cond.shape}, expected x_t's {x.shape}")
    return jnp.concatenate([x, x_self_cond.astype(x.dtype)], axis=-1)


def _add_label_embedding(emb: Array, labels: Array | None, num_classes: int, dtype: Dtype) -> Array:
    """emb + LabelEmbedding(labels); labels=None means the null class `num_classes`."""
    if not num_classes:
        return emb
    if labels is None:
        labels = jnp.full(emb.shape[:1], num_classes, jnp.int32)
    return emb + LabelEmbedding(num_classes, emb.shape[-1], dtype=dtype, name="label_emb")(labels)


def _as_stage_tuple(value, num_stages: int, name: str) -> tuple:
    """lucidrains' cast_tuple: one value for every stage, or a tuple with one per stage."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * num_stages
    if len(values) != num_stages:
        raise ValueError(f"{name} has {len(values)} entries but dim_mults has {num_stages} stages")
    return values


def _upsample_nearest(x: Array) -> Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Conv1x1(nn.Module):
    """A 1x1 convolution computed as one [B * H * W, C_in] x [C_in, features] matrix product.

    Same parameters as `nn.Conv(features, (1, 1))` (kernel [1, 1, C_in, features], bias
    [features], same initialisers and dtype promotion), so parameter trees and ported weights are
    unchanged. Why: XLA's CPU convolution path runs 1x1 kernels, and their weight gradients above
    all, several times slower than the equivalent GEMM (benchmarks/RESULTS.md).
    """

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (1, 1, x.shape[-1], self.features), self.param_dtype)
        bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
                if self.use_bias else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jnp.dot(x.reshape(-1, x.shape[-1]), kernel[0, 0])
        if bias is not None:
            y = y + bias.reshape(1, self.features)
        return y.reshape(*x.shape[:-1], self.features)


# ---------------------------------------------------------------------------------------------
# denoising-diffusion-pytorch's Unet


class RMSNorm(nn.Module):
    """x / ||x|| * g * sqrt(C) over channels, with a learned gain g [C] (lucidrains' RMSNorm:
    F.normalize(x, dim=1) * g * sqrt(dim)). The norm is taken in float32."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        gain = self.param("g", nn.initializers.ones, (dim,), self.param_dtype)
        x = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        # F.normalize divides by max(||x||, eps).
        y = x / jnp.maximum(norm, 1e-12) * gain.astype(jnp.float32).reshape(1, 1, 1, dim)
        return (y * math.sqrt(dim)).astype(self.dtype)


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018) of [B, H, W, C] over (H, W, C / groups), then a gain
    and bias per channel: `nn.GroupNorm` (same parameters "scale" and "bias", same statistics in
    float32, same variance E[x^2] - E[x]^2 clipped at 0), written as y = a x + b with
    a = scale / sqrt(var + eps) and b = bias - a mean per example and channel.

    Why: the statistics come from per-channel means over positions, so XLA reduces the big axis
    once and the output is one fused multiply-add; on CPU this is ~3x faster forward and ~1.5x
    faster forward + backward than `nn.GroupNorm` (benchmarks/RESULTS.md).
    """

    num_groups: int
    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, channels = x.shape[0], x.shape[-1]
        if channels % self.num_groups:
            raise ValueError(f"GroupNorm: {self.num_groups} groups do not divide the "
                             f"{channels} channels")
        group_size = channels // self.num_groups
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        spatial = tuple(range(1, x.ndim - 1))
        # Equal counts per channel, so the group mean is the mean of the channel means.
        mean = jnp.mean(x32, axis=spatial).reshape(batch, self.num_groups, group_size).mean(-1)
        mean_sq = jnp.mean(jnp.square(x32), axis=spatial).reshape(
            batch, self.num_groups, group_size).mean(-1)
        var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
        inv_std = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), group_size, axis=-1)
        a = inv_std * scale.astype(jnp.float32).reshape(1, channels)
        b = bias.astype(jnp.float32).reshape(1, channels) - a * jnp.repeat(mean, group_size,
                                                                            axis=-1)
        shape = (batch,) + (1,) * (x.ndim - 2) + (channels,)
        return (x32 * a.reshape(shape) + b.reshape(shape)).astype(self.dtype)


class Block(nn.Module):
    """conv3x3 -> norm -> x * (scale + 1) + shift -> SiLU -> dropout.

    norm is GroupNorm(groups) (lucidrains <= 1.11, `resnet_block_groups`) or, with groups=None,
    RMSNorm (lucidrains 2.x, which dropped the groups option).
    """

    features: int
    groups: int | None = 8
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, scale_shift: tuple[Array, Array] | None, train: bool) -> Array:
        x = nn.Conv(self.features, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
                    name="proj")(x)
        if self.groups is None:
            x = RMSNorm(self.dtype, self.param_dtype, name="norm")(x)
        else:
            # PyTorch's GroupNorm epsilon.
            x = GroupNorm(self.groups, epsilon=1e-5, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="norm")(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        x = nn.silu(x)
        return nn.Dropout(self.dropout, deterministic=not train)(x)


class ResnetBlock(nn.Module):
    """Block(x; scale, shift from SiLU -> Dense(2 * features) of the time embedding) -> Block,
    plus x (through a 1x1 conv when the channel count changes). Dropout only in the first Block,
    as in denoising-diffusion-pytorch 2.x."""

    features: int
    groups: int | None = 8
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, time_emb: Array, train: bool) -> Array:
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        scale_shift = nn.Dense(2 * self.features, name="mlp", **kwargs)(nn.silu(time_emb))
        scale_shift = scale_shift.reshape(scale_shift.shape[0], 1, 1, 2 * self.features)
        scale, shift = jnp.split(scale_shift, 2, axis=-1)
        h = Block(self.features, self.groups, self.dropout, name="block1", **kwargs)(
            x, (scale, shift), train)
        h = Block(self.features, self.groups, 0.0, name="block2", **kwargs)(h, None, train)
        if x.shape[-1] != self.features:
            x = Conv1x1(self.features, name="res_conv", **kwargs)(x)
        return h + x


def _split_heads(x: Array, heads: int) -> Array:
    """[B, H, W, heads * d] -> [B, heads, H * W, d] (channels head-major, as '(h c)' in einops)."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height * width, heads, channels // heads)
    return x.transpose(0, 2, 1, 3)


def _merge_heads(x: Array, height: int, width: int) -> Array:
    """[B, heads, H * W, d] -> [B, H, W, heads * d]."""
    batch, heads, _, dim_head = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, height, width, heads * dim_head)


class LinearAttention(nn.Module):
    """Linear attention (Shen et al. 2018, "Efficient Attention"), lucidrains' version:
    q softmaxed over features, k over positions, context = k v^T, out = context^T q * d^-1/2;
    `num_mem_kv` learned memory keys and values are prepended; the output is conv1x1 -> RMSNorm.
    The input is RMS-normalised first (pre-norm); the caller adds the residual."""

    heads: int = 4
    dim_head: int = 32
    num_mem_kv: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, dim = x.shape
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = self.heads * self.dim_head
        # Stored as lucidrains' [2, heads, dim_head, num_mem_kv].
        mem_kv = self.param("mem_kv", nn.initializers.normal(1.0),
                            (2, self.heads, self.dim_head, self.num_mem_kv), self.param_dtype)
        x = RMSNorm(name="norm", **kwargs)(x)
        qkv = Conv1x1(3 * hidden, use_bias=False, name="to_qkv", **kwargs)(x)
        q, k, v = (_split_heads(y, self.heads).astype(jnp.float32)
                   for y in jnp.split(qkv, 3, axis=-1))  # [B, heads, n, d]
        memory = jnp.broadcast_to(mem_kv.astype(jnp.float32).transpose(0, 1, 3, 2)[:, None],
                                  (2, batch, self.heads, self.num_mem_kv, self.dim_head))
        k = jnp.concatenate([memory[0], k], axis=2)
        v = jnp.concatenate([memory[1], v], axis=2)
        q = jax.nn.softmax(q, axis=-1) * self.dim_head ** -0.5
        k = jax.nn.softmax(k, axis=2)
        context = jnp.einsum("bhnd,bhne->bhde", k, v)
        out = jnp.einsum("bhde,bhnd->bhne", context, q)
        out = _merge_heads(out.astype(self.dtype), height, width)
        out = Conv1x1(dim, name="to_out_conv", **kwargs)(out)
        return RMSNorm(name="to_out_norm", **kwargs)(out)


class Attention(nn.Module):
    """Multi-head softmax attention over all positions with `num_mem_kv` learned memory keys and
    values (lucidrains' Attention with Attend, scale d^-1/2), pre-norm RMSNorm, conv1x1 out. The
    caller adds the residual."""

    heads: int = 4
    dim_head: int = 32
    num_mem_kv: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, dim = x.shape
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = self.heads * self.dim_head
        # Stored as lucidrains' [2, heads, num_mem_kv, dim_head].
        mem_kv = self.param("mem_kv", nn.initializers.normal(1.0),
                            (2, self.heads, self.num_mem_kv, self.dim_head), self.param_dtype)
        x = RMSNorm(name="norm", **kwargs)(x)
        qkv = Conv1x1(3 * hidden, use_bias=False, name="to_qkv", **kwargs)(x)
        q, k, v = (_split_heads(y, self.heads) for y in jnp.split(qkv, 3, axis=-1))
        memory = jnp.broadcast_to(mem_kv.astype(k.dtype)[:, None],
                                  (2, batch, self.heads, self.num_mem_kv, self.dim_head))
        k = jnp.concatenate([memory[0], k], axis=2)
        v = jnp.concatenate([memory[1], v], axis=2)
        logits = jnp.einsum("bhid,bhjd->bhij", q, k).astype(jnp.float32) * self.dim_head ** -0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = _merge_heads(jnp.einsum("bhij,bhjd->bhid", weights, v), height, width)
        return Conv1x1(dim, name="to_out", **kwargs)(out)


class Downsample(nn.Module):
    """Space-to-depth 2x2 ('b c (h p1) (w p2) -> b (c p1 p2) h w') then a 1x1 conv."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
        # Channel order c, p1, p2 as in lucidrains' Rearrange, so 1x1 conv weights port across.
        x = x.transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // 2, width // 2, 4 * channels)
        return Conv1x1(self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="conv")(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return nn.Conv(self.features, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
                       name="conv")(_upsample_nearest(x))


class Unet(nn.Module):
    """denoising-diffusion-pytorch's `Unet` (same fields, same layers, same parameter count).

    init conv7x7 -> per stage (dim * dim_mults[i]): 2 ResnetBlocks, attention (linear, or full
    per `full_attn`; default full only at the innermost stage), Downsample (3x3 conv at the last
    stage) -> mid ResnetBlock, full Attention, ResnetBlock -> up stages mirrored, each
    ResnetBlock taking one skip, Upsample (3x3 conv at the last) -> ResnetBlock on concat with the
    init conv output -> conv1x1 to `out_dim`. Time: sinusoidal(dim) (or learned / random Fourier
    features) -> Dense(4 dim) -> GELU -> Dense(4 dim), plus a label embedding when
    `num_classes > 0` (labels=None uses the null class `num_classes`).

    Differences from lucidrains: `resnet_block_groups=None` selects the RMSNorm of its 2.x
    Blocks, an int the GroupNorm of its 1.x (the default, 8 groups); self-conditioning concatenates
    [x, x_self_cond] (lucidrains puts x_self_cond first).
    """

    dim: int = 64
    dim_mults: Sequence[int] = (1, 2, 4, 8)
    channels: int = 3
    out_dim: int | None = None
    init_dim: int | None = None
    resnet_block_groups: int | None = 8
    self_condition: bool = False
    learned_sinusoidal_cond: bool = False
    random_fourier_features: bool = False
    learned_sinusoidal_dim: int = 16
    sinusoidal_pos_emb_theta: float = 10_000.0
    attn_dim_head: int | Sequence[int] = 32
    attn_heads: int | Sequence[int] = 4
    full_attn: bool | Sequence[bool] | None = None
    dropout: float = 0.0
    num_classes: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, t: Array, *, x_self_cond: Array | None = None,
                 labels: Array | None = None, train: bool = False) -> Array:
        _check_multipliers("dim_mults", self.dim_mults)
        _check_image(x, self.channels, "dim_mults", self.dim_mults)
        num_stages = len(self.dim_mults)
        full_attn = self.full_attn
        if not full_attn:  # None (or False / ()) as lucidrains: full attention innermost only
            full_attn = (False,) * (num_stages - 1) + (True,)
        full_attn = _as_stage_tuple(full_attn, num_stages, "full_attn")
        heads = _as_stage_tuple(self.attn_heads, num_stages, "attn_heads")
        dim_heads = _as_stage_tuple(self.attn_dim_head, num_stages, "attn_dim_head")

        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init_dim = self.init_dim or self.dim
        dims = [init_dim] + [self.dim * m for m in self.dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = 4 * self.dim

        def resnet_block(features: int, name: str) -> ResnetBlock:
            return ResnetBlock(features, self.resnet_block_groups, self.dropout, name=name,
                               **kwargs)

        def attention(full: bool, stage: int, name: str) -> nn.Module:
            module = Attention if full else LinearAttention
            return module(heads[stage], dim_heads[stage], name=name, **kwargs)

        if self.learned_sinusoidal_cond or self.random_fourier_features:
            emb = LearnedSinusoidalEmbedding(self.learned_sinusoidal_dim,
                                             frozen=self.random_fourier_features,
                                             name="time_fourier")(t)
        else:
            emb = sinusoidal_embedding(t, self.dim, max_period=self.sinusoidal_pos_emb_theta)
        emb = nn.Dense(time_dim, name="time_mlp_0", **kwargs)(emb)
        emb = nn.Dense(time_dim, name="time_mlp_1", **kwargs)(nn.gelu(emb, approximate=False))
        emb = _add_label_embedding(emb, labels, self.num_classes, self.dtype)

        h = nn.Conv(init_dim, (7, 7), name="init_conv", **kwargs)(
            _model_inputs(x, x_self_cond, self.self_condition))
        init_features = h
        skips = []
        for stage, (dim_in, dim_out) in enumerate(in_out):
            h = resnet_block(dim_in, f"down_{stage}_block1")(h, emb, train)
            skips.append(h)
            h = resnet_block(dim_in, f"down_{stage}_block2")(h, emb, train)
            h = h + attention(full_attn[stage], stage, f"down_{stage}_attn")(h)
            skips.append(h)
            if stage < num_stages - 1:
                h = Downsample(dim_out, name=f"down_{stage}_downsample", **kwargs)(h)
            else:
                h = nn.Conv(dim_out, (3, 3), name=f"down_{stage}_downsample", **kwargs)(h)

        h = resnet_block(dims[-1], "mid_block1")(h, emb, train)
        h = h + attention(True, num_stages - 1, "mid_attn")(h)
        h = resnet_block(dims[-1], "mid_block2")(h, emb, train)

        for stage in reversed(range(num_stages)):
            dim_in, dim_out = in_out[stage]
            h = resnet_block(dim_out, f"up_{stage}_block1")(
                jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
            h = resnet_block(dim_out, f"up_{stage}_block2")(
                jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
            h = h + attention(full_attn[stage], stage, f"up_{stage}_attn")(h)
            if stage > 0:
                h = Upsample(dim_in, name=f"up_{stage}_upsample", **kwargs)(h)
            else:
                h = nn.Conv(dim_in, (3, 3), name=f"up_{stage}_upsample", **kwargs)(h)

        h = resnet_block(init_dim, "final_res_block")(
            jnp.concatenate([h, init_features], axis=-1), emb, train)
        out = Conv1x1(self.out_dim or self.channels, name="final_conv", **kwargs)(h)
        return out.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Ho et al. 2020's CIFAR-10 network (diffusion_tf/models/unet.py)


def _per_position(layer: nn.Module, x: Array) -> Array:
    """A Dense `layer` (diffusion_tf's NIN) applied to [B, H, W, C] as one [B * H * W, C] matrix
    product: same parameters, but a plain GEMM, which XLA's CPU backend differentiates far faster
    than a dot_general contracting the last axis of a 4-D array (benchmarks/RESULTS.md)."""
    y = layer(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _ddpm_init(scale: float = 1.0) -> nn.initializers.Initializer:
    """diffusion_tf's default_init: variance scaling, fan_avg, uniform; scale 0 means 1e-10."""
    return nn.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


class DDPMResnetBlock(nn.Module):
    """x + conv(dropout(swish(GN(conv(swish(GN(x))) + Dense(swish(temb)))))), the shortcut
    through a NIN (1x1) projection when the channel count changes; the last conv starts at ~0."""

    features: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array, train: bool) -> Array:
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda name: GroupNorm(32, epsilon=1e-6, name=name, **kwargs)  # noqa: E731
        h = nn.swish(norm("norm1")(x))
        h = nn.Conv(self.features, (3, 3), kernel_init=_ddpm_init(), name="conv1", **kwargs)(h)
        temb = nn.Dense(self.features, kernel_init=_ddpm_init(), name="temb_proj",
                        **kwargs)(nn.swish(temb))
        h = h + temb.reshape(temb.shape[0], 1, 1, self.features)
        h = nn.swish(norm("norm2")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.features, (3, 3), kernel_init=_ddpm_init(0.0), name="conv2", **kwargs)(h)
        if x.shape[-1] != self.features:
            x = _per_position(nn.Dense(self.features, kernel_init=_ddpm_init(),
                                       name="nin_shortcut", **kwargs), x)
        return x + h


class DDPMAttnBlock(nn.Module):
    """x + proj_out(softmax(q k^T / sqrt(C)) v): single-head self-attention over all positions,
    q, k, v and proj_out NIN (1x1) projections of GroupNorm(x); proj_out starts at ~0."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GroupNorm(32, epsilon=1e-6, name="norm", **kwargs)(x)
        q, k, v = (_per_position(nn.Dense(channels, kernel_init=_ddpm_init(), name=name,
                                          **kwargs), h).reshape(batch, height * width, channels)
                   for name in ("q", "k", "v"))
        logits = jnp.einsum("bic,bjc->bij", q, k).astype(jnp.float32) * channels ** -0.5
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        h = jnp.einsum("bij,bjc->bic", weights, v).reshape(batch, height, width, channels)
        return x + _per_position(nn.Dense(channels, kernel_init=_ddpm_init(0.0), name="proj_out",
                                          **kwargs), h)


class DDPMUnet(nn.Module):
    """The DDPM CIFAR-10 U-Net of Ho et al. 2020 (35.7M parameters at the defaults, 32x32x3).

    conv_in -> per level (ch * ch_mult[i]): `num_res_blocks` DDPMResnetBlocks (each followed by
    DDPMAttnBlock when the feature map's height is in `attn_resolutions`), strided 3x3 conv
    downsample except at the last level -> mid resnet, attention, resnet -> up levels with
    `num_res_blocks + 1` blocks, each taking one skip, nearest x2 + 3x3 conv upsample except at the
    first level -> swish(GroupNorm) -> conv_out (starts at ~0). Time: sinusoidal(ch) -> Dense(4 ch)
    -> swish -> Dense(4 ch); `num_classes > 0` adds a label embedding (null class for labels=None).
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    channels: int = 3
    num_classes: int = 0
    self_condition: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, t: Array, *, x_self_cond: Array | None = None,
                 labels: Array | None = None, train: bool = False) -> Array:
        _check_multipliers("ch_mult", self.ch_mult)
        _check_image(x, self.channels, "ch_mult", self.ch_mult)
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        num_levels = len(self.ch_mult)

        def resnet_block(features: int, name: str) -> DDPMResnetBlock:
            return DDPMResnetBlock(features, self.dropout, name=name, **kwargs)

        temb = sinusoidal_embedding(t, self.ch)
        temb = nn.Dense(4 * self.ch, kernel_init=_ddpm_init(), name="temb_dense0", **kwargs)(temb)
        temb = nn.Dense(4 * self.ch, kernel_init=_ddpm_init(), name="temb_dense1",
                        **kwargs)(nn.swish(temb))
        temb = _add_label_embedding(temb, labels, self.num_classes, self.dtype)

        inputs = _model_inputs(x, x_self_cond, self.self_condition)
        conv_in = nn.Conv(self.ch, (3, 3), kernel_init=_ddpm_init(), name="conv_in", **kwargs)
        skips = [conv_in(inputs)]
        for level, mult in enumerate(self.ch_mult):
            for block in range(self.num_res_blocks):
                h = resnet_block(self.ch * mult, f"down_{level}_block_{block}")(
                    skips[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = DDPMAttnBlock(name=f"down_{level}_attn_{block}", **kwargs)(h)
                skips.append(h)
            if level != num_levels - 1:
                skips.append(nn.Conv(skips[-1].shape[-1], (3, 3), strides=(2, 2),
                                     kernel_init=_ddpm_init(), name=f"down_{level}_downsample",
                                     **kwargs)(skips[-1]))

        h = resnet_block(skips[-1].shape[-1], "mid_block_1")(skips[-1], temb, train)
        h = DDPMAttnBlock(name="mid_attn_1", **kwargs)(h)
        h = resnet_block(h.shape[-1], "mid_block_2")(h, temb, train)

        for level in reversed(range(num_levels)):
            for block in range(self.num_res_blocks + 1):
                h = resnet_block(self.ch * self.ch_mult[level], f"up_{level}_block_{block}")(
                    jnp.concatenate([h, skips.pop()], axis=-1), temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = DDPMAttnBlock(name=f"up_{level}_attn_{block}", **kwargs)(h)
            if level != 0:
                h = nn.Conv(h.shape[-1], (3, 3), kernel_init=_ddpm_init(),
                            name=f"up_{level}_upsample", **kwargs)(_upsample_nearest(h))

        h = nn.swish(GroupNorm(32, epsilon=1e-6, name="norm_out", **kwargs)(h))
        out = nn.Conv(self.channels, (3, 3), kernel_init=_ddpm_init(0.0), name="conv_out",
                      **kwargs)(h)
        return out.astype(jnp.float32)
