"""CelebA faces at 64x64 (TFDS "celeb_a": centre crop to a square, then resize), with
denoising-diffusion-pytorch's Unet (dim 64, dim_mults 1,2,4,8) and v-prediction.

    python train.py --config celeb_a64 --workdir runs/celeb_a64

CelebA must be prepared for TFDS once (its files need a manual download); see the README.
"""

from jaxdiff.config import image_config, quick


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "celeb_a"
    config.data.image_size = 64
    config.data.channels = 3
    config.data.random_flip = True

    config.model.dim = 64
    config.model.dim_mults = (1, 2, 4, 8)

    config.diffusion.schedule = "cosine"
    config.diffusion.objective = "pred_v"
    config.diffusion.weighting = "min_snr"

    config.optim.lr = 1e-4
    config.train.steps = 200_000
    config.train.batch_size = 64
    config.train.checkpoint_every = 10_000
    config.ema.decay = 0.9995

    if arg == "quick":
        quick(config)
        config.model.dim = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
