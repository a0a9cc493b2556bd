"""The DDPM CIFAR-10 experiment of Ho et al. 2020: their 35.7M-parameter U-Net (ch 128, ch_mult
1,2,2,2, two res blocks per level, attention at 16x16, dropout 0.1), linear betas 1e-4..0.02 over
T = 1000, eps prediction, Adam lr 2e-4 with 5,000 warm-up steps, batch 128, gradient clipping at 1,
EMA 0.9999, random horizontal flips, 800k steps; ancestral sampling with sigma_t^2 = beta_t.

    python train.py --config cifar10 --workdir runs/cifar10

bf16 compute: --config.model.dtype=bfloat16. `:quick` is a smoke test with a small net.
"""

from jaxdiff.config import image_config, quick


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "cifar10"
    config.data.image_size = 32
    config.data.channels = 3
    config.data.random_flip = True

    config.model.name = "ddpm_unet"
    config.model.dim = 128
    config.model.dim_mults = (1, 2, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attn_resolutions = (16,)
    config.model.dropout = 0.1

    config.diffusion.schedule = "linear"
    config.diffusion.timesteps = 1000

    config.optim.lr = 2e-4
    config.optim.warmup_steps = 5000
    config.optim.grad_clip = 1.0
    config.train.steps = 800_000
    config.train.batch_size = 128
    config.train.checkpoint_every = 10_000
    config.ema.decay = 0.9999

    config.sample.sampler = "ddpm"
    config.sample.variance = "fixed_large"
    config.eval.num_samples = 10_000
    config.eval.sample_every = 10_000

    if arg == "quick":
        quick(config)
        config.model.dim = 32
        config.model.dim_mults = (1, 2)
        config.sample.sampler = "ddim"
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
