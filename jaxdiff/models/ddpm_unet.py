"""The CIFAR-10 U-Net of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", 35.7M
parameters), following the official diffusion_tf/models/unet.py, for images [B, H, W, C] (NHWC).

`DDPMUnet` is called as `model.apply(params, x_t, t, x_self_cond=None, labels=None, train=False)`,
like `MLPDenoiser`; dropout draws from the "dropout" rng when `train=True`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxdiff.models.embeddings import sinusoidal_embedding
from jaxdiff.models.layers import (Dtype, GroupNorm, _add_label_embedding, _check_image,
                                   _check_multipliers, _model_inputs, _upsample_nearest,
                                   statistics_dtype)


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
        logits = (jnp.einsum("bic,bjc->bij", q, k).astype(statistics_dtype(q.dtype))
                  * channels ** -0.5)
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
    `learned_variance` doubles conv_out's channels: [prediction, v] (Nichol & Dhariwal 2021).
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
    learned_variance: bool = False
    remat: bool = False  # rematerialise the ResNet blocks in the backward pass

    @nn.compact
    def __call__(self, x: Array, t: Array, *, x_self_cond: Array | None = None,
                 labels: Array | None = None, train: bool = False) -> Array:
        _check_multipliers("ch_mult", self.ch_mult)
        _check_image(x, self.channels, "ch_mult", self.ch_mult)
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        num_levels = len(self.ch_mult)

        # remat: activations recomputed in the backward pass (argument 3, `train`, is static)
        block_class = (nn.remat(DDPMResnetBlock, static_argnums=(3,)) if self.remat
                       else DDPMResnetBlock)

        def resnet_block(features: int, name: str) -> DDPMResnetBlock:
            return block_class(features, self.dropout, name=name, **kwargs)

        temb = sinusoidal_embedding(t, self.ch, dtype=statistics_dtype(self.param_dtype))
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
        out_channels = self.channels * (2 if self.learned_variance else 1)
        out = nn.Conv(out_channels, (3, 3), kernel_init=_ddpm_init(0.0), name="conv_out",
                      **kwargs)(h)
        return out.astype(statistics_dtype(out.dtype))
