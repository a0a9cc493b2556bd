"""Embeddings shared by the denoisers: diffusion time and class labels."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array


def sinusoidal_embedding(t: Array, dim: int, max_period: float = 10_000.0) -> Array:
    """Transformer-style embedding of (possibly fractional) times t [B] -> [B, dim].

    emb = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_k = max_period^(-k / (h - 1)), h = dim / 2 (Vaswani et al. 2017; as in Ho et al. 2020 and
    denoising-diffusion-pytorch's SinusoidalPosEmb).
    """
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got dim={dim}")
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half) / max(half - 1, 1))
    angles = t.astype(jnp.float32)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class LearnedSinusoidalEmbedding(nn.Module):
    """Random/learned Fourier features of t (Kingma et al. 2021; Crowson's v-diffusion):
    [t, sin(2 pi t w), cos(2 pi t w)] with w ~ N(0, 1) of size dim / 2, learned unless `frozen`."""

    dim: int
    frozen: bool = False

    @nn.compact
    def __call__(self, t: Array) -> Array:
        if self.dim % 2:
            raise ValueError(f"learned sinusoidal dim must be even, got dim={self.dim}")
        weights = self.param("weights", nn.initializers.normal(1.0), (self.dim // 2,))
        if self.frozen:
            weights = jax.lax.stop_gradient(weights)
        t = t.astype(jnp.float32)[:, None]
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
