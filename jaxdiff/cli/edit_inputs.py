"""sample.py's editing inputs: --init (a .npz of data-space samples, or an image), --mask (a
file or a named region) and --t_start, read and checked against the run, each failure a
ConfigError naming the flag."""

import os
import sys

import numpy as np

from jaxdiff.config import sample_option
from jaxdiff.errors import ConfigError

_MASK_NAMES = ("keep_left", "keep_right", "keep_top", "keep_bottom", "keep_center",
               "keep_border")


def editing_t_start(args, run) -> int | None:
    """SDEdit's start time: --t_start, else config.sample.t_start (-1: none); None without
    --init."""
    if args.init.value is None:
        return None
    t_start = args.t_start.value
    if t_start is None:
        t_start = sample_option(run.config, "t_start")
        return None if t_start < 0 else t_start
    return t_start


def _load_array(path: str, flag: str, names: tuple[str, ...]) -> np.ndarray:
    """The array `names[0]` (or the only array) of a .npz or .npy file, or ConfigError."""
    try:
        loaded = np.load(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--{flag}={path!r} cannot be read: {error}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        for name in names:
            if name in loaded.files:
                return loaded[name]
        if len(loaded.files) == 1:
            return loaded[loaded.files[0]]
        raise ConfigError(f"--{flag}={path!r} holds {loaded.files}, none named "
                          f"{' or '.join(names)}")


def _load_image(path: str, flag: str, shape) -> np.ndarray:
    """An image file as uint8 [H, W, C] of the run's image shape (resized if needed)."""
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                print(f"note: --{flag} image {image.size[0]}x{image.size[1]} resized to "
                      f"{width}x{height}", file=sys.stderr)
                image = image.resize((width, height), Image.BICUBIC)
            array = np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise ConfigError(f"--{flag}={path!r} cannot be read as an image: {error}") from None
    return array.reshape(height, width, channels)


def load_init(args, run) -> np.ndarray:
    """--init as data-space inputs [K, ...] of the run's data shape (one image: K = 1)."""
    path = args.init.value
    if not os.path.isfile(path):
        raise ConfigError(f"--init={path!r} is invalid: no such file")
    shape = run.data_shape
    if path.endswith((".npz", ".npy")):
        inputs = _load_array(path, "init", ("samples", "inputs"))
        if inputs.shape == shape:
            inputs = inputs[None]
    elif len(shape) == 3:
        inputs = _load_image(path, "init", shape)[None]
    else:
        raise ConfigError(f"--init={path!r} is invalid: point runs read a .npz or .npy file")
    if inputs.shape[1:] != shape or len(inputs) < 1:
        raise ConfigError(f"--init={path!r} holds an array of shape {inputs.shape}, expected "
                          f"[K, {', '.join(map(str, shape))}] (the run's data)")
    if len(shape) == 3 and inputs.dtype != np.uint8:
        raise ConfigError(f"--init={path!r} holds {inputs.dtype} images: expected uint8 in "
                          f"[0, 255], as sample.py writes them")
    if not np.all(np.isfinite(inputs)):
        raise ConfigError(f"--init={path!r} holds NaN or infinite values")
    return inputs


def load_mask(args, run) -> np.ndarray:
    """--mask as float32 in [0, 1] broadcastable to [K, ...] (1 = known)."""
    spec, shape = args.mask.value, run.data_shape
    if spec in _MASK_NAMES:
        if len(shape) != 3:
            raise ConfigError(f"--mask={spec} is invalid: named masks are for images; give a "
                              f".npz mask for points")
        height, width = shape[:2]
        rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
        inside = ((rows >= height // 4) & (rows < height - height // 4)
                  & (cols >= width // 4) & (cols < width - width // 4))
        kept = {"keep_left": np.broadcast_to(cols < width // 2, (height, width)),
                "keep_right": np.broadcast_to(cols >= width // 2, (height, width)),
                "keep_top": np.broadcast_to(rows < height // 2, (height, width)),
                "keep_bottom": np.broadcast_to(rows >= height // 2, (height, width)),
                "keep_center": inside, "keep_border": ~inside}[spec]
        return kept[:, :, None].astype(np.float32)
    if not os.path.isfile(spec):
        raise ConfigError(f"--mask={spec!r} is invalid: a file (.npz, image) or one of "
                          f"{', '.join(_MASK_NAMES)}")
    if spec.endswith((".npz", ".npy")):
        mask = _load_array(spec, "mask", ("mask",)).astype(np.float32)
    elif len(shape) == 3:
        mask = (_load_image(spec, "mask", shape[:2] + (1,)) > 0).astype(np.float32)
    else:
        raise ConfigError(f"--mask={spec!r} is invalid: point runs read a .npz or .npy file")
    if not np.all((mask >= 0) & (mask <= 1)):
        raise ConfigError(f"--mask={spec!r} is invalid: values must be in [0, 1] (1 = known)")
    return mask


def check_editing_flags(args, run) -> None:
    """ConfigError naming the flag for editing flags that cannot work together."""
    sampler = args.sampler.value or run.config.sample.sampler
    if args.init.value is None:
        for flag in (args.t_start, args.mask):
            if flag.value is not None:
                raise ConfigError(f"--{flag.name}={flag.value} is invalid without --init (the "
                                  f"input to edit)")
        return
    if args.labels.value is not None:
        raise ConfigError("--labels cannot be combined with --init yet: edit with the config's "
                          "conditioning (unconditional or null class)")
    timesteps = run.schedule.timesteps
    t_start = editing_t_start(args, run)
    if t_start is not None and not 0 <= t_start < timesteps:
        raise ConfigError(f"--t_start={t_start} is invalid: an integer in [0, T={timesteps})")
    if args.mask.value is None and t_start is None:
        raise ConfigError(f"--init={args.init.value!r} needs --t_start (SDEdit) or --mask "
                          f"(inpainting), or both")
    if args.mask.value is not None and sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"--mask={args.mask.value} is invalid with the {sampler} sampler: "
                          f"inpainting needs --sampler ddpm or ddim")
