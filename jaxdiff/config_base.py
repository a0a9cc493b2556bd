"""The full field set of an image experiment, shared by the files in configs/.

Each image config file starts from `image_config()` and overrides what its experiment changes,
so every image config has the same fields (and `validate_config` checks them all); the
diffusion, optim, train, ema and sample sections come from `add_training_sections`, which
configs/toy2d.py uses too. Field meanings:

data      name (a TFDS set, "digits", or "folder"), path (folder), data_dir (TFDS data_dir, ""
          for the default), split, image_size, channels, random_flip, strict (corrupt folder
          files are fatal instead of skipped)
model     name "unet" (denoising-diffusion-pytorch's Unet: dim, dim_mults, resnet_block_groups,
          learned_sinusoidal_cond) or "ddpm_unet" (Ho et al.'s CIFAR-10 net: dim is its ch,
          dim_mults its ch_mult, num_res_blocks, attn_resolutions); dropout, num_classes
          (0: unconditional), self_condition, dtype (bfloat16: bf16 compute, float32 params)
diffusion schedule, timesteps, objective, loss_type, weighting, min_snr_gamma
optim     AdamW: lr, warmup_steps, decay (constant / cosine), b1, b2, weight_decay, grad_clip
train     steps, batch_size (global, over all devices), log_every, checkpoint_every,
          keep_checkpoints, max_skipped_steps (consecutive non-finite steps before stopping),
          steps_per_call (k steps per dispatch, a lax.scan), num_devices (0: all)
ema       decay, warmup
sample    sampler (ddpm / ddim), steps (DDIM), eta, variance (DDPM), clip_x0, timestep_spacing
eval      num_samples (at the end of training), plots, sample_every (grids during training,
          0: never), inception_path (pytorch-fid's weight file: FID against the training data
          when given), guidance_scales (conditional models: accuracy / FD per scale)
conditioning  model.num_classes > 0 with model.cond_drop_prob (label dropout, on
          train.cond_drop_schedule "constant" or "linear" from train.cond_drop_start), and
          sample.guidance_scale / guidance_rescale (classifier-free guidance)
"""

from __future__ import annotations

import ml_collections


def add_training_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add the diffusion, optim, train, ema and sample sections with their defaults (the image
    defaults; configs/toy2d.py overrides what points need). Every config, image or point, gets
    these fields from here, so a new training option is added once."""
    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.schedule = "cosine"
    config.diffusion.timesteps = 1000
    config.diffusion.objective = "pred_noise"
    config.diffusion.loss_type = "l2"
    config.diffusion.weighting = "none"
    config.diffusion.min_snr_gamma = 5.0

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-4
    config.optim.warmup_steps = 1000
    config.optim.decay = "constant"
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.weight_decay = 0.0
    config.optim.grad_clip = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.steps = 100_000
    config.train.batch_size = 128
    config.train.log_every = 100
    config.train.checkpoint_every = 5_000
    config.train.keep_checkpoints = 3
    config.train.max_skipped_steps = 20  # stop after this many consecutive non-finite steps
    config.train.steps_per_call = 1  # train steps per dispatch (a lax.scan over k steps)
    config.train.num_devices = 0  # devices the batch is split over; 0: all of them, all hosts
    config.train.cond_drop_schedule = "constant"  # or "linear": from cond_drop_start down
    config.train.cond_drop_start = 1.0

    config.ema = ml_collections.ConfigDict()
    config.ema.decay = 0.9999
    config.ema.warmup = True

    config.sample = ml_collections.ConfigDict()
    config.sample.sampler = "ddim"
    config.sample.steps = 100
    config.sample.eta = 0.0
    config.sample.variance = "fixed_small"
    config.sample.clip_x0 = True
    config.sample.timestep_spacing = "trailing"
    config.sample.guidance_scale = 1.0  # 1: plain conditional sampling
    config.sample.guidance_rescale = 0.0
    return config


def image_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.path = ""
    config.data.data_dir = ""
    config.data.split = "train"
    config.data.image_size = 8
    config.data.channels = 1
    config.data.random_flip = False
    config.data.strict = False

    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.dim = 64
    config.model.dim_mults = (1, 2, 4, 8)
    config.model.resnet_block_groups = 8
    config.model.num_res_blocks = 2  # ddpm_unet only
    config.model.attn_resolutions = (16,)  # ddpm_unet only
    config.model.dropout = 0.0
    config.model.num_classes = 0
    config.model.cond_drop_prob = 0.0  # label dropout for classifier-free guidance
    config.model.self_condition = False
    config.model.learned_sinusoidal_cond = False
    config.model.dtype = "float32"

    add_training_sections(config)

    config.eval = ml_collections.ConfigDict()
    config.eval.num_samples = 1000
    config.eval.plots = True
    config.eval.sample_every = 5_000
    config.eval.inception_path = ""
    config.eval.guidance_scales = ()  # conditional models: a guidance sweep at the end
    return config


def quick(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a config to a smoke test: a few steps, a tiny model, few samples."""
    config.train.steps = 20
    config.train.log_every = 10
    config.train.checkpoint_every = 10
    config.optim.warmup_steps = 5
    config.eval.num_samples = 16
    config.eval.sample_every = 0
    config.sample.steps = 10
    return config
