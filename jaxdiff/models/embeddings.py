"""Embeddings shared by the denoisers: diffusion time and class labels."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array


def sinusoidal_embedding(t: Array, dim: int, max_period: float = 10_000.0,
                         dtype=jnp.float32) -> Array:
    """Transformer-style embedding of (possibly fractional) times t [B] -> [B, dim] in `dtype`.

    emb = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_k = exp(k * -(log(max_period) / (h - 1))), h = dim / 2 (Vaswani et al. 2017; as in Ho et
    al. 2020 and denoising-diffusion-pytorch's SinusoidalPosEmb).

    The frequencies are computed in that order (the scalar log(max_period) / (h - 1) in float64,
    then k times it in `dtype`), as both reference implementations do: in float32 another order
    (e.g. -log(max_period) * k / (h - 1)) moves w_k by an ulp, which t ~ 1000 turns into a 3e-5
    difference of the embedding.
    """
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got dim={dim}")
    half = dim // 2
    step = math.log(max_period) / max(half - 1, 1)
    frequencies = jnp.exp(jnp.arange(half, dtype=dtype) * jnp.asarray(-step, dtype))
    angles = t.astype(dtype)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class LearnedSinusoidalEmbedding(nn.Module):
    """Random/learned Fourier features of t (Kingma et al. 2021; Crowson's v-diffusion):
    [t, sin(2 pi t w), cos(2 pi t w)] with w ~ N(0, 1) of size dim / 2, learned unless `frozen`."""

    dim: int
    frozen: bool = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        if self.dim % 2:
            raise ValueError(f"learned sinusoidal dim must be even, got dim={self.dim}")
        weights = self.param("weights", nn.initializers.normal(1.0), (self.dim // 2,),
                             self.param_dtype)
        if self.frozen:
            weights = jax.lax.stop_gradient(weights)
        t = t.astype(jnp.promote_types(self.param_dtype, jnp.float32))[:, None]
        angles = t * weights[None, :] * 2 * math.pi
        return jnp.concatenate([t, jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeEmbedding(nn.Module):
    """t [B] -> [B, features]: a sinusoidal (or learned Fourier) embedding and a 2-layer MLP."""

    features: int
    sinusoidal_dim: int = 64
    learned: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        if self.learned:
            emb = LearnedSinusoidalEmbedding(self.sinusoidal_dim)(t)
        else:
            emb = sinusoidal_embedding(t, self.sinusoidal_dim)
        emb = nn.Dense(self.features, dtype=self.dtype)(emb)
        return nn.Dense(self.features, dtype=self.dtype)(nn.gelu(emb))


class LabelEmbedding(nn.Module):
    """Class labels [B] in [0, num_classes) -> [B, features]; the extra index `num_classes` is a
    learned "null" class, used for unconditional predictions in classifier-free guidance."""

    num_classes: int
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, labels: Array) -> Array:
        return nn.Embed(self.num_classes + 1, self.features, dtype=self.dtype)(labels)
