"""Offline image diffusion: scikit-learn's 8x8 handwritten digits through the TFDS reading path.

    python train.py --config configs/digits.py --workdir runs/digits
    python sample.py --workdir runs/digits --num_samples 100 --out digits.npz --trajectory

The data set is written once as an array_record TFDS set under ~/.cache/jaxdiff/tfds (no
download). At the end, train.py reports the digits-classifier Fréchet distance of 1,000 EMA
samples to the test split, next to the train-vs-test floor. `:quick` shrinks it for a smoke test.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.path = ""  # for name="folder"
    config.data.data_dir = ""  # TFDS data_dir ("" = the default)
    config.data.split = "train"
    config.data.image_size = 8
    config.data.channels = 1
    config.data.random_flip = False  # digits are not mirror-symmetric
    config.data.strict = False

    config.model = ml_collections.ConfigDict()
    config.model.name = "unet"
    config.model.dim = 32
    config.model.dim_mults = (1, 2)
    config.model.dropout = 0.0
    config.model.num_classes = 0
    config.model.self_condition = False
    config.model.learned_sinusoidal_cond = False
    config.model.dtype = "float32"

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.schedule = "cosine"
    config.diffusion.timesteps = 1000
    config.diffusion.objective = "pred_noise"
    config.diffusion.loss_type = "l2"
    config.diffusion.weighting = "none"
    config.diffusion.min_snr_gamma = 5.0

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.optim.decay = "cosine"
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.weight_decay = 0.0
    config.optim.grad_clip = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.steps = 4000
    config.train.batch_size = 128
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 2

    config.ema = ml_collections.ConfigDict()
    config.ema.decay = 0.995
    config.ema.warmup = True

    config.sample = ml_collections.ConfigDict()
    config.sample.sampler = "ddim"
    config.sample.steps = 100
    config.sample.eta = 1.0
    config.sample.variance = "fixed_small"
    config.sample.clip_x0 = True
    config.sample.timestep_spacing = "trailing"

    config.eval = ml_collections.ConfigDict()
    config.eval.num_samples = 1000
    config.eval.plots = True
    config.eval.sample_every = 1000

    if arg == "quick":
        config.train.steps = 100
        config.train.log_every = 20
        config.train.checkpoint_every = 50
        config.eval.num_samples = 100
        config.eval.sample_every = 0
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
