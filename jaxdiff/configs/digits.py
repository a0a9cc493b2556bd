"""Offline image diffusion: scikit-learn's 8x8 handwritten digits through the TFDS reading path.

    python train.py --config digits --workdir runs/digits
    python sample.py --workdir runs/digits --num_samples 100 --out digits.npz --trajectory

The data set is written once as an array_record TFDS set under ~/.cache/jaxdiff/tfds (no
download). At the end, train.py reports the digits-classifier Fréchet distance of 1,000 EMA
samples to the test split, next to the train-vs-test floor. `:quick` shrinks it for a smoke test.
"""

from jaxdiff.config import image_config


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "digits"
    config.data.image_size = 8
    config.data.channels = 1
    config.data.random_flip = False  # digits are not mirror-symmetric

    config.model.dim = 32
    config.model.dim_mults = (1, 2)

    config.optim.lr = 1e-3
    config.optim.warmup_steps = 200
    config.optim.decay = "cosine"

    config.train.steps = 3000
    config.train.batch_size = 64
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 2
    config.ema.decay = 0.995

    config.sample.eta = 1.0
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
