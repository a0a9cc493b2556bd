"""Classifier-free guidance on Fashion-MNIST: the NVIDIA DLI course recipe.

    python train.py --config fashion_mnist_cfg --workdir runs/fashion_mnist_cfg
    python sample.py --workdir runs/fashion_mnist_cfg --labels 0,1,2,3,4,5,6,7,8,9 \
        --guidance_scale 0,1,2,5 --out fashion_cfg.npz

Needs the TFDS "fashion_mnist" set prepared in data.data_dir (`tfds build fashion_mnist`).

The recipe, as the DLI notebook has it:
  * 16x16x1 images (IMG_SIZE = 16), batch 128, Adam at lr 1e-3, 5 epochs (5 x 468 steps), no
    EMA, no gradient clipping; a U-Net with widths 64, 64, 128;
  * linear betas with T = 150 and the eps objective (plain MSE);
  * label dropout on a schedule, c_drop_prob = max(0.1, 1 - epoch / epochs): here
    train.cond_drop_schedule = "linear", p = max(0.1, 1.0 (1 - step / steps)), the same decay
    per step instead of per epoch (the first steps train almost only the null class);
  * guided ancestral sampling with e_t = w e_keep + (1 - w) e_drop, w = 5. That is jaxdiff's
    guidance with guidance_scale = w (diffusers' convention: eps_uncond + s (eps_cond -
    eps_uncond); Ho & Salimans write (1 + w') eps_cond - w' eps_uncond, so s = 1 + w').
Two differences, both deliberate: jaxdiff's "linear" schedule scales beta_start / beta_end by
1000 / T (Ho et al.'s 1e-4 .. 0.02 become 6.7e-4 .. 0.133 at T = 150), so that x_T is pure noise
(abar_T = 2.7e-5; the notebook's unscaled betas leave abar_T = 0.22, so its x_T still holds
0.47 x0, which sampling from N(0, I) does not match); and the ancestral step uses beta_t as its
variance ("fixed_large"), where the notebook adds noise with beta_{t-1}.
`:quick` shrinks it for a smoke test.
"""

from jaxdiff.config import image_config, quick


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "fashion_mnist"
    config.data.image_size = 16
    config.data.channels = 1
    config.data.random_flip = False

    config.model.dim = 64
    config.model.dim_mults = (1, 1, 2)  # the notebook's down_chs = (64, 64, 128)
    config.model.num_classes = 10
    config.model.cond_drop_prob = 0.1  # the floor of the schedule
    config.train.cond_drop_schedule = "linear"
    config.train.cond_drop_start = 1.0

    config.diffusion.schedule = "linear"
    config.diffusion.timesteps = 150
    config.diffusion.objective = "pred_noise"

    config.optim.lr = 1e-3
    config.optim.warmup_steps = 0
    config.optim.decay = "constant"
    config.optim.grad_clip = 0.0

    config.train.steps = 5 * (60_000 // 128)  # 5 epochs of the 60,000 training images
    config.train.batch_size = 128
    config.train.checkpoint_every = 468
    config.ema.decay = 0.0  # the notebook samples the raw weights

    config.sample.sampler = "ddpm"
    config.sample.variance = "fixed_large"
    config.sample.clip_x0 = False  # the notebook does not clip
    config.sample.steps = 150
    config.sample.guidance_scale = 5.0  # the notebook's w
    config.sample.guidance_rescale = 0.0
    config.eval.guidance_scales = (0.0, 1.0, 2.0, 5.0)
    config.eval.sample_every = 468

    if arg == "quick":
        quick(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
