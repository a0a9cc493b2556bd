"""Flax denoisers. Each is called as `model.apply(params, x_t, t, **cond)`."""

from jaxdiff.models.embeddings import LabelEmbedding, TimeEmbedding, sinusoidal_embedding
from jaxdiff.models.mlp import MLPDenoiser
from jaxdiff.models.unet import Unet
