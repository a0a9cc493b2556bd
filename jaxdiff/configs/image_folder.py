"""Your own pictures: every JPEG/PNG under data.path (subfolders included), centre-cropped and
resized to image_size, randomly flipped. By default the image DDPM template's recipe (Stanford
Cars at 64x64).

    python train.py --config image_folder --workdir runs/cars \
        --config.data.path=/data/cars_train

Unreadable files are skipped and counted in the log; --config.data.strict=true makes them fatal.
"""

from jaxdiff.config import image_config, quick


def get_config(arg: str = ""):
    config = image_config()
    config.data.name = "folder"
    config.data.path = ""  # required: the directory of images
    config.data.image_size = 64
    config.data.channels = 3
    config.data.random_flip = True

    config.model.dim = 64
    config.model.dim_mults = (1, 2, 4, 8)

    config.diffusion.schedule = "linear"
    config.optim.lr = 2e-4
    config.train.steps = 100_000
    config.train.batch_size = 64
    config.ema.decay = 0.9995

    if arg == "quick":
        quick(config)
        config.model.dim = 16
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
    return config
