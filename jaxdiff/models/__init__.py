"""Flax denoisers. Each is called as `model.apply(params, x_t, t, **cond)`.

- `mlp.py`: `MLPDenoiser` for points [B, D].
- `unet.py`: `Unet`, denoising-diffusion-pytorch's U-Net for images [B, H, W, C].
- `ddpm_unet.py`: `DDPMUnet`, the CIFAR-10 U-Net of Ho et al. 2020.
- `layers.py`: the blocks the U-Nets share (norms, attention, resampling, input checks).
- `embeddings.py`: time and label embeddings.

`build_model(config)` makes the denoiser a config's `model` section describes.
"""

import jax.numpy as jnp

from jaxdiff.models.ddpm_unet import DDPMUnet
from jaxdiff.models.embeddings import LabelEmbedding, TimeEmbedding, sinusoidal_embedding
from jaxdiff.models.mlp import MLPDenoiser
from jaxdiff.models.unet import Unet


def build_model(config):
    """The Flax denoiser described by `config.model` (and the data's channels)."""
    model = config.model
    learned_variance = bool(model.get("learned_variance", False))  # absent in older configs
    if model.name == "mlp":
        return MLPDenoiser(
            hidden=model.hidden, depth=model.depth, time_dim=model.time_dim,
            num_classes=model.num_classes, self_condition=model.self_condition,
            dropout=model.dropout, fourier_features=model.get("fourier_features", 0),
            learned_variance=learned_variance,
        )
    dtype = jnp.bfloat16 if model.get("dtype", "float32") == "bfloat16" else jnp.float32
    if model.name == "ddpm_unet":
        return DDPMUnet(
            ch=model.dim, ch_mult=tuple(model.dim_mults), num_res_blocks=model.num_res_blocks,
            attn_resolutions=tuple(model.attn_resolutions), dropout=model.dropout,
            channels=config.data.channels, num_classes=model.num_classes,
            self_condition=model.self_condition, dtype=dtype, param_dtype=jnp.float32,
            learned_variance=learned_variance, remat=model.get("remat", False),
        )
    per_stage = lambda v: tuple(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    return Unet(
        dim=model.dim, dim_mults=tuple(model.dim_mults), channels=config.data.channels,
        dropout=model.dropout, self_condition=model.self_condition,
        # configs saved before the field existed used the [x, x_self_cond] order
        self_cond_first=model.get("self_cond_first", False),
        num_classes=model.num_classes,
        learned_sinusoidal_cond=model.get("learned_sinusoidal_cond", False),
        random_fourier_features=model.get("random_fourier_features", False),
        learned_sinusoidal_dim=model.get("learned_sinusoidal_dim", 16),
        sinusoidal_pos_emb_theta=model.get("sinusoidal_pos_emb_theta", 10_000.0),
        init_dim=model.get("init_dim", 0) or None,
        attn_heads=per_stage(model.get("attn_heads", 4)),
        attn_dim_head=per_stage(model.get("attn_dim_head", 32)),
        full_attn=tuple(model.get("full_attn", ())) or None,
        resnet_block_groups=model.get("resnet_block_groups", 8),
        dtype=dtype, param_dtype=jnp.float32, learned_variance=learned_variance,
        remat=model.get("remat", False),
    )
