"""MNIST 28x28x1 (TFDS "mnist"; prepare it once with `pip install -e .[tfds-prepare]` and
`tfds build mnist`, or point data.data_dir at a prepared copy).

    python train.py --config mnist --workdir runs/mnist
    python train.py --config mnist --workdir runs/fmnist --config.data.name=fashion_mnist

dim_mults (1, 2, 4) halves 28 twice (28 -> 14 -> 7). `:quick` is a smoke test.
"""

from jaxdiff.config import image_config, quick


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "mnist"
    config.data.image_size = 28
    config.data.channels = 1
    config.data.random_flip = False

    config.model.dim = 64
    config.model.dim_mults = (1, 2, 4)

    config.optim.lr = 2e-4
    config.train.steps = 50_000
    config.train.batch_size = 128
    config.ema.decay = 0.999

    if arg == "quick":
        quick(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
