"""Default experiment: DDPM on the 2-D "butterfly" point set, CPU in minutes.

    python train.py --config toy2d --workdir runs/toy
    python train.py --config toy2d --workdir runs/moons --config.data.name=moons
    python sample.py --workdir runs/toy --num_samples 1000 --out samples.npz

`--config toy2d:quick` shrinks the run for a smoke test (a few hundred steps).
"""

import ml_collections

from jaxdiff.config import add_training_sections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "butterfly"  # a 2-D toy set (see jaxdiff.data.TOY2D_NAMES) or "array"
    config.data.path = ""  # for name="array": a .npy / .npz file of shape [N, D]
    config.data.noise = -1.0  # toy-set noise; < 0 uses the set's default
    config.data.holdout = 0.1  # array: this fraction of rows is held out for the evaluation
    config.data.eval_path = ""  # array: or a separate [M, D] file to evaluate against

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.hidden = 128
    config.model.depth = 3
    config.model.time_dim = 64
    config.model.fourier_features = 4  # sin/cos(2^k pi x) input features, k < this
    config.model.dropout = 0.0
    config.model.num_classes = 0
    config.model.cond_drop_prob = 0.0  # label dropout for classifier-free guidance
    config.model.self_condition = False
    config.model.learned_variance = False  # [prediction, v] output, hybrid loss (improved DDPM)

    add_training_sections(config)  # shared with the image configs; point-data changes:
    config.diffusion.schedule = "linear"
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 500
    config.optim.decay = "cosine"
    config.train.steps = 10_000
    config.train.batch_size = 512
    config.train.log_every = 200
    config.ema.decay = 0.999
    config.sample.sampler = "ddpm"  # or "ddim"
    config.sample.clip_x0 = False  # standardised points are not confined to [-1, 1]

    config.eval = ml_collections.ConfigDict()
    config.eval.num_samples = 5_000
    config.eval.plots = True
    config.eval.sample_every = 0  # > 0: a scatter picture of samples in TensorBoard every N steps
    config.eval.likelihood = True  # held-out nats/dim: the VLB and the probability-flow ODE
    config.eval.likelihood_examples = 1_000

    if arg == "quick":
        config.train.steps = 300
        config.train.log_every = 50
        config.train.checkpoint_every = 100
        config.optim.warmup_steps = 50
        config.eval.num_samples = 1_000
        config.eval.likelihood_examples = 200
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
