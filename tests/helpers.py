"""Shared pieces of the tests that are not fixtures: packaged configs by name, the tiny toy run's
config (as a ConfigDict and as train.py flags), running the scripts as a user would, a few
assertions, and the test models and sources that several test files use.

Fixtures built on these live in conftest.py; reference maths lives in oracles.py.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oracles import uint8_levels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- configs -----------------------------------------------------------------------------------

def load_config(name, arg=""):
    """`get_config(arg)` of the packaged config `name` (jaxdiff/configs/<name>.py), unlocked."""
    from jaxdiff import configs

    return configs.get_config(name, arg)


def set_fields(config, fields):
    """config["section"]["name"] = value for each "section.name": value."""
    for field, value in fields.items():
        section, name = field.split(".")
        config[section][name] = value
    return config


# The tiny toy run: a 12-step MLP run on 2-D points that trains in seconds. Checkpoints at 5, 10
# and 12.
TINY_TOY = {
    "model.hidden": 32, "model.depth": 1, "model.time_dim": 16,
    "diffusion.timesteps": 20,
    "train.steps": 12, "train.batch_size": 32, "train.log_every": 4, "train.checkpoint_every": 5,
    "optim.warmup_steps": 2,
    "sample.steps": 5,
    "eval.num_samples": 50, "eval.plots": False, "eval.likelihood_examples": 50,
}


def tiny_toy_config(**overrides):
    """The toy2d config with TINY_TOY and then `overrides` ({"section.name": value}) applied."""
    return set_fields(load_config("toy2d"), {**TINY_TOY, **overrides})


def tiny_toy_flags(**overrides):
    """train.py's arguments for the config of `tiny_toy_config(**overrides)`."""
    fields = {**TINY_TOY, **overrides}
    return ["--config=toy2d"] + [
        f"--config.{field}={str(value).lower() if isinstance(value, bool) else value}"
        for field, value in fields.items()]


# --- the scripts -------------------------------------------------------------------------------

def run_script(script, *arguments, env=None, timeout=300):
    """`python <script> <arguments>` from the repository root, as a user would run it."""
    return subprocess.run([sys.executable, script, *arguments], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


# --- assertions and damage ----------------------------------------------------------------------

def one_line(error: pytest.ExceptionInfo) -> str:
    """The message of a raised exception, which must be one non-empty line."""
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


def truncate_data_files(directory):
    """Cut every array data file of the checkpoint under `directory` to a third, as a crash
    mid-write or a disk error would (every array, so that reading any part of the state fails)."""
    files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
             if os.path.basename(root) == "d"]
    assert files, f"no array data files under {directory}"
    for path in files:
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 3)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- test models -------------------------------------------------------------------------------

NULL = 3  # the null class of `label_model`'s 3 classes


def label_model(x, t, labels, x_self_cond=None):
    """A non-linear 'denoiser' for a 30-step schedule whose output depends on x, t and the label
    (the null class 3 included), elementwise, so every batch row is computed independently and
    exactly."""
    shift = (labels.astype(jnp.float32) - 1.0).reshape((-1,) + (1,) * (x.ndim - 1))
    tt = t.astype(jnp.float32).reshape(shift.shape) / 30.0
    out = 0.3 * jnp.tanh(x) + 0.2 * shift * jnp.cos(x + tt)
    if x_self_cond is not None:
        out = out + 0.1 * x_self_cond
    return out


# --- image sources over arrays -------------------------------------------------------------------

def indexed_image_source(count, *, seed=0, random_flip=False, cache=True, **kwargs):
    """An ImageSource of `count` white 4 x 4 pictures with pixel (0, 0) = i and label i % 10, so
    a batch tells which pictures it holds and whether each was mirrored (see `which`)."""
    from jaxdiff.data.images import ImageSource  # on demand, as jaxdiff.data does (TFDS)

    images = np.full((count, 4, 4, 1), 255, np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    labels = np.arange(count) % 10
    return ImageSource("indexed", lambda idx: (images[idx], labels[idx]), count, image_size=4,
                       channels=1, num_classes=10, seed=seed, random_flip=random_flip,
                       cache=cache, **kwargs)


def which(batch):
    """(picture indices, mirrored flags) of a batch of `indexed_image_source`."""
    pixels = uint8_levels(batch["x"])[..., 0]
    index = pixels.min(axis=(1, 2))
    np.testing.assert_array_equal(batch["labels"], index % 10)
    mirrored = pixels[:, 0, -1] == index
    return index, mirrored
