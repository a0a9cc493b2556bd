"""A residual MLP denoiser for point data [B, D]."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdiff.models.embeddings import LabelEmbedding, TimeEmbedding


def fourier_embedding(x: Array, num_frequencies: int) -> Array:
    """[sin(2^k pi x), cos(2^k pi x)] for k = 0..num_frequencies-1 (per coordinate; Tancik et al.
    2020): lets a small MLP represent the sharp edges of low-dimensional densities."""
    frequencies = jnp.pi * 2.0 ** jnp.arange(num_frequencies, dtype=jnp.float32)
    angles = x[..., :, None] * frequencies.reshape((1,) * x.ndim + (-1,))
    angles = angles.reshape(x.shape[:-1] + (-1,))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


class ResidualBlock(nn.Module):
    """h + Dense(act(Dense(act(h)) + Dense(emb))): time (and label) enter every block.

    No normalisation layer: for 2-D inputs a LayerNorm right after the input projection would
    discard the magnitude of x, which the denoiser needs (it blurred toy samples visibly).
    """

    features: int
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, emb: Array, train: bool) -> Array:
        y = nn.Dense(self.features, dtype=self.dtype)(nn.silu(h))
        y = nn.silu(y + nn.Dense(self.features, dtype=self.dtype)(emb))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return h + nn.Dense(self.features, dtype=self.dtype)(y)


class MLPDenoiser(nn.Module):
    """Denoiser for [B, D] points: `apply(params, x_t, t, x_self_cond=None, labels=None)`.

    The output has the shape of x_t and means whatever the training objective says (eps, x0 or v);
    with `learned_variance` it has twice x_t's features, [prediction, v] (Nichol & Dhariwal 2021:
    v interpolates the reverse log variance, see `jaxdiff.diffusion.learned_range_log_variance`).
    `num_classes > 0` adds a label embedding (with a null class) to the time embedding;
    `self_condition` concatenates the previous x0 estimate to the input (zeros if absent).
    """

    hidden: int = 256
    depth: int = 4
    time_dim: int = 64
    num_classes: int = 0
    self_condition: bool = False
    dropout: float = 0.0
    fourier_features: int = 0
    dtype: jnp.dtype = jnp.float32
    learned_variance: bool = False

    @nn.compact
    def __call__(self, x: Array, t: Array, *, x_self_cond: Array | None = None,
                 labels: Array | None = None, train: bool = False) -> Array:
        inputs = x
        if self.self_condition:
            inputs = jnp.concatenate([x, jnp.zeros_like(x) if x_self_cond is None else x_self_cond], -1)
        if self.fourier_features:
            inputs = jnp.concatenate([inputs, fourier_embedding(inputs, self.fourier_features)], -1)
        emb = TimeEmbedding(self.hidden, self.time_dim, dtype=self.dtype)(t)
        if self.num_classes:
            if labels is None:
                labels = jnp.full(t.shape, self.num_classes, jnp.int32)
            emb = emb + LabelEmbedding(self.num_classes, self.hidden, dtype=self.dtype)(labels)
        h = nn.Dense(self.hidden, dtype=self.dtype)(inputs)
        for _ in range(self.depth):
            h = ResidualBlock(self.hidden, self.dropout, dtype=self.dtype)(h, emb, train)
        h = nn.silu(h)
        features = x.shape[-1] * (2 if self.learned_variance else 1)
        out = nn.Dense(features, dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
        return out.astype(x.dtype)
