"""Layers shared by the image U-Nets (NHWC throughout): input checks, conditioning inputs,
normalisations, convolution blocks, attention and resampling.

The blocks follow denoising-diffusion-pytorch (lucidrains) so that `Unet` keeps its parameter
names and counts; `GroupNorm`, `Conv1x1` and the input helpers are used by `DDPMUnet` too.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdiff.models.embeddings import LabelEmbedding

Dtype = Any


def statistics_dtype(dtype: Dtype) -> Dtype:
    """The dtype norms, softmaxes and embeddings are computed in: float32 for bfloat16 / float32
    activations, float64 for a float64 model (under jax_enable_x64, e.g. to compare with a
    float64 PyTorch module)."""
    return jnp.promote_types(dtype, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Input checks, conditioning inputs and resampling shared by both networks


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


def _model_inputs(x: Array, x_self_cond: Array | None, self_condition: bool,
                  cond_first: bool = False) -> Array:
    """x, or x and x_self_cond concatenated on channels (zeros when there is no previous x0
    estimate): [x_self_cond, x] with `cond_first` (denoising-diffusion-pytorch's order),
    [x, x_self_cond] otherwise."""
    if not self_condition:
        return x
    if x_self_cond is None:
        x_self_cond = jnp.zeros_like(x)
    elif x_self_cond.shape != x.shape:
        raise ValueError(f"x_self_cond has shape {x_self_cond.shape}, expected x_t's {x.shape}")
    parts = [x_self_cond.astype(x.dtype), x] if cond_first else [x, x_self_cond.astype(x.dtype)]
    return jnp.concatenate(parts, axis=-1)


def _add_label_embedding(emb: Array, labels: Array | None, num_classes: int, dtype: Dtype) -> Array:
    """emb + LabelEmbedding(labels); labels=None means the null class `num_classes`."""
    if not num_classes:
        return emb
    if labels is None:
        labels = jnp.full(emb.shape[:1], num_classes, jnp.int32)
    return emb + LabelEmbedding(num_classes, emb.shape[-1], dtype=dtype, name="label_emb")(labels)


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
# denoising-diffusion-pytorch's blocks (GroupNorm also serves DDPMUnet)


class RMSNorm(nn.Module):
    """x / ||x|| * g * sqrt(C) over channels, with a learned gain g [C] (lucidrains' RMSNorm:
    F.normalize(x, dim=1) * g * sqrt(dim)). The norm is taken in float32 (float64 for a float64
    model)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dim = x.shape[-1]
        gain = self.param("g", nn.initializers.ones, (dim,), self.param_dtype)
        compute = statistics_dtype(x.dtype)
        x = x.astype(compute)
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        # F.normalize divides by max(||x||, eps).
        y = x / jnp.maximum(norm, 1e-12) * gain.astype(compute).reshape(1, 1, 1, dim)
        return (y * math.sqrt(dim)).astype(self.dtype)


# Largest [W * C, C] group-mean matrix GroupNorm builds on the CPU backend (4 MiB in float32);
# above it, and on GPUs and TPUs, it takes per-channel means over positions instead.
_MAX_GROUP_MATRIX = 2 ** 20


class GroupNorm(nn.Module):
    """Group normalisation (Wu & He 2018) of [B, ..., C] over (spatial, C / groups), then a gain
    and bias per channel: `nn.GroupNorm` (same parameters "scale" and "bias", same statistics in
    float32, same variance E[x^2] - E[x]^2 clipped at 0), written as y = a x + b with
    a = scale / sqrt(var + eps) and b = bias - a mean per example and channel.

    Why this form on the CPU backend (XLA CPU): a reduction of [B, H, W, C] over (H, W) to a
    small [B, C] is emitted as a scalar loop per output that strides through the whole input, and
    per-group coefficients broadcast back through a [B, G, C / G] reshape are recomputed, with
    their index arithmetic, for every element of the output. So the sums of x and x^2 are taken
    over the leading spatial axis only (a [B, W * C] result, contiguous and vectorised), and one
    small matrix product with a constant [W * C, C] matrix finishes them: it sums the W
    positions and the channels of each group and hands every channel its group's mean. The
    products are separate kernels, so a and b reach the output loop as plain [B, C] arrays and
    that loop is a fused multiply-add. The default `Unet` (dim 32, 28x28x1, batch 64, 2 CPU
    cores) runs ~12% faster forward and ~8% faster per train step than with per-channel means
    over (H, W) reshaped to groups, close to its RMSNorm variant. The constant holds W * C * C
    numbers, so beyond `_MAX_GROUP_MATRIX` (wide, many-channel maps) those means are used, and so
    they are on GPUs and TPUs: their reduction emitters handle (H, W) reductions well, the extra
    matrix products would add two library calls per norm to a step whose fixed cost is already
    its kernel count (benchmarks/RESULTS.md, H200), and their default float32 matmul precision
    is reduced (TF32 / bf16 passes). The products here ask for full precision all the same.
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
        compute = statistics_dtype(x.dtype)
        x32 = x.astype(compute)
        # [B, H, W, C] -> [B, H, W * C]: sums over H keep a wide, contiguous minor axis.
        lead = x.shape[1] if x.ndim > 2 else 1
        rows = x32.reshape(batch, lead, -1)
        inner = rows.shape[-1] // channels  # W (positions per row)
        if jax.default_backend() != "cpu" or inner * channels * channels > _MAX_GROUP_MATRIX:
            return self._per_channel_means(x32, scale, bias, compute)
        count = lead * inner * group_size
        # [W * C, C]: entry (w * C + i, j) = 1 / count when channels i and j share a group.
        same_group = np.kron(np.eye(self.num_groups), np.ones((group_size, group_size)))
        to_group_mean = jnp.asarray(np.tile(same_group, (inner, 1)) / count, compute)
        highest = jax.lax.Precision.HIGHEST
        # [B, C], each channel's group mean
        mean = jnp.dot(jnp.sum(rows, axis=1), to_group_mean, precision=highest)
        mean_sq = jnp.dot(jnp.sum(jnp.square(rows), axis=1), to_group_mean, precision=highest)
        var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
        a = jax.lax.rsqrt(var + self.epsilon) * scale.astype(compute).reshape(1, channels)
        b = bias.astype(compute).reshape(1, channels) - a * mean
        return self._affine(x32, a, b)

    def _per_channel_means(self, x32: Array, scale: Array, bias: Array, compute: Dtype) -> Array:
        batch, channels = x32.shape[0], x32.shape[-1]
        group_size = channels // self.num_groups
        spatial = tuple(range(1, x32.ndim - 1))
        # Equal counts per channel, so the group mean is the mean of the channel means.
        mean = jnp.mean(x32, axis=spatial).reshape(batch, self.num_groups, group_size).mean(-1)
        mean_sq = jnp.mean(jnp.square(x32), axis=spatial).reshape(
            batch, self.num_groups, group_size).mean(-1)
        var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
        inv_std = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), group_size, axis=-1)
        a = inv_std * scale.astype(compute).reshape(1, channels)
        b = bias.astype(compute).reshape(1, channels) - a * jnp.repeat(mean, group_size, axis=-1)
        return self._affine(x32, a, b)

    def _affine(self, x32: Array, a: Array, b: Array) -> Array:
        """x * a + b with a, b [B, C]."""
        shape = (x32.shape[0],) + (1,) * (x32.ndim - 2) + (x32.shape[-1],)
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
        compute = statistics_dtype(qkv.dtype)
        q, k, v = (_split_heads(y, self.heads).astype(compute)
                   for y in jnp.split(qkv, 3, axis=-1))  # [B, heads, n, d]
        memory = jnp.broadcast_to(mem_kv.astype(compute).transpose(0, 1, 3, 2)[:, None],
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
        logits = (jnp.einsum("bhid,bhjd->bhij", q, k).astype(statistics_dtype(q.dtype))
                  * self.dim_head ** -0.5)
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
