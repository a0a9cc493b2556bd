"""denoising-diffusion-pytorch's U-Net (lucidrains) for images [B, H, W, C] (NHWC throughout).

`Unet` has the architecture of denoising-diffusion-pytorch's `Unet`, so a config moves across with
the same field names and the same parameter count. It is called as
`model.apply(params, x_t, t, x_self_cond=None, labels=None, train=False)`, like `MLPDenoiser`;
dropout draws from the "dropout" rng when `train=True`. Its blocks live in `layers.py`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdiff.models.embeddings import LearnedSinusoidalEmbedding, sinusoidal_embedding
from jaxdiff.models.layers import (Attention, Conv1x1, Downsample, Dtype, LinearAttention,
                                   ResnetBlock, Upsample, _add_label_embedding, _check_image,
                                   _check_multipliers, _model_inputs, statistics_dtype)


def _as_stage_tuple(value, num_stages: int, name: str) -> tuple:
    """lucidrains' cast_tuple: one value for every stage, or a tuple with one per stage."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * num_stages
    if len(values) != num_stages:
        raise ValueError(f"{name} has {len(values)} entries but dim_mults has {num_stages} stages")
    return values


class Unet(nn.Module):
    """denoising-diffusion-pytorch's `Unet` (same fields, same layers, same parameter count).

    init conv7x7 -> per stage (dim * dim_mults[i]): 2 ResnetBlocks, attention (linear, or full
    per `full_attn`; default full only at the innermost stage), Downsample (3x3 conv at the last
    stage) -> mid ResnetBlock, full Attention, ResnetBlock -> up stages mirrored, each
    ResnetBlock taking one skip, Upsample (3x3 conv at the last) -> ResnetBlock on concat with the
    init conv output -> conv1x1 to `out_dim`. Time: sinusoidal(dim) (or learned / random Fourier
    features) -> Dense(4 dim) -> GELU -> Dense(4 dim), plus a label embedding when
    `num_classes > 0` (labels=None uses the null class `num_classes`).

    `remat` rematerialises every ResnetBlock (activation memory for compute, same function).

    `learned_variance` doubles the default output channels ([prediction, v], Nichol & Dhariwal
    2021), as lucidrains' `learned_variance`; an explicit `out_dim` wins.

    `resnet_block_groups=None` selects the RMSNorm of lucidrains' 2.x Blocks, an int the
    GroupNorm of its 1.x (the default, 8 groups). Self-conditioning concatenates
    [x_self_cond, x] on channels, as lucidrains does, so its weights port one to one
    (`jaxdiff.port`); `self_cond_first=False` is the [x, x_self_cond] order of jaxdiff runs saved
    before 2026-11-30 (their config.json has no `model.self_cond_first`, and `build_model` reads
    them so). With `dtype=param_dtype=jnp.float64` (jax_enable_x64) every part, norms and time
    embedding included, runs in float64.
    """

    dim: int = 64
    dim_mults: Sequence[int] = (1, 2, 4, 8)
    channels: int = 3
    out_dim: int | None = None
    init_dim: int | None = None
    resnet_block_groups: int | None = 8
    self_condition: bool = False
    self_cond_first: bool = True
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
    learned_variance: bool = False
    remat: bool = False

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

        # remat: each ResnetBlock's activations are recomputed in the backward pass instead of
        # stored (argument 3, `train`, is a Python bool); same parameters and outputs.
        block_class = nn.remat(ResnetBlock, static_argnums=(3,)) if self.remat else ResnetBlock

        def resnet_block(features: int, name: str) -> ResnetBlock:
            return block_class(features, self.resnet_block_groups, self.dropout, name=name,
                               **kwargs)

        def attention(full: bool, stage: int, name: str) -> nn.Module:
            module = Attention if full else LinearAttention
            return module(heads[stage], dim_heads[stage], name=name, **kwargs)

        if self.learned_sinusoidal_cond or self.random_fourier_features:
            emb = LearnedSinusoidalEmbedding(self.learned_sinusoidal_dim,
                                             frozen=self.random_fourier_features,
                                             param_dtype=self.param_dtype,
                                             name="time_fourier")(t)
        else:
            emb = sinusoidal_embedding(t, self.dim, max_period=self.sinusoidal_pos_emb_theta,
                                       dtype=statistics_dtype(self.param_dtype))
        emb = nn.Dense(time_dim, name="time_mlp_0", **kwargs)(emb)
        emb = nn.Dense(time_dim, name="time_mlp_1", **kwargs)(nn.gelu(emb, approximate=False))
        emb = _add_label_embedding(emb, labels, self.num_classes, self.dtype)

        h = nn.Conv(init_dim, (7, 7), name="init_conv", **kwargs)(
            _model_inputs(x, x_self_cond, self.self_condition, self.self_cond_first))
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
        out_dim = self.out_dim or self.channels * (2 if self.learned_variance else 1)
        out = Conv1x1(out_dim, name="final_conv", **kwargs)(h)
        return out.astype(statistics_dtype(out.dtype))
