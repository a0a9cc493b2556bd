"""A small digits classifier: the feature space of the offline "digits Fréchet distance".

FID needs Inception-v3 weights that cannot be fetched offline, and Inception features of 8x8
digits would mean little anyway. For the offline digits set jaxdiff instead trains this CNN on
the digits *train* split (98-99% test accuracy) and measures
  * the Fréchet distance between its penultimate-layer features of two image sets
    ("digits-FD", not FID: a different, much smaller feature network), and
  * the accuracy it gives class-conditional samples (does a sample of class c look like a c?).
The trained parameters are cached (keyed by the training recipe) so every run uses the same
feature network.
"""

from __future__ import annotations

import os

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.data.codecs import ImageCodec
from jaxdiff.data.digits import DEFAULT_DATA_DIR, digits_split

_RECIPE = "cnn32-64-128_adam1e-3_steps2000_batch128_seed0_v1"


class DigitsClassifier(nn.Module):
    """conv(32) -> conv(64) -> pool -> dense(128) features -> dense(10) logits, on 8x8x1."""

    @nn.compact
    def __call__(self, x: jax.Array, *, features: bool = False) -> jax.Array:
        x = nn.gelu(nn.Conv(32, (3, 3))(x))
        x = nn.gelu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        h = nn.gelu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
        return h if features else nn.Dense(10)(h)


def _split():
    """(train, test) pairs of model-space images and labels (the digits8 TFDS split)."""
    codec = ImageCodec()
    (x_train, y_train), (x_test, y_test) = digits_split("train"), digits_split("test")
    return (codec.encode(x_train), y_train), (codec.encode(x_test), y_test)


def train_classifier(steps: int = 2000, seed: int = 0):
    """Train on the digits train split; return (params, test accuracy)."""
    (x_train, y_train), (x_test, y_test) = _split()
    model = DigitsClassifier()
    params = model.init(jax.random.key(seed), x_train[:1])
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = rng.integers(0, len(x_train), 128)
        # small random shifts make the classifier robust to slightly misplaced strokes
        shift = rng.integers(-1, 2, 2)
        x = np.roll(x_train[index], tuple(shift), axis=(1, 2))
        params, opt_state = step(params, opt_state, x, y_train[index])
    accuracy = float((predict(params, x_test) == y_test).mean())
    return params, accuracy


def load_classifier(cache_dir: str | None = None):
    """The cached classifier parameters (trained on first use, ~10 s on a CPU)."""
    path = os.path.join(cache_dir or DEFAULT_DATA_DIR, f"digits_classifier_{_RECIPE}.msgpack")
    template = DigitsClassifier().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    if os.path.exists(path):
        with open(path, "rb") as handle:
            return flax.serialization.from_bytes(template, handle.read())
    params, _ = train_classifier()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(flax.serialization.to_bytes(params))
    os.replace(temporary, path)
    return params


@jax.jit
def _logits_and_features(params, x):
    model = DigitsClassifier()
    return model.apply(params, x), model.apply(params, x, features=True)


def predict(params, images: np.ndarray) -> np.ndarray:
    """Predicted class of each image (uint8 [0, 255] or float [-1, 1], [N, 8, 8, 1])."""
    return np.asarray(jnp.argmax(_logits_and_features(params, ImageCodec().encode(images))[0], -1))


def features(params, images: np.ndarray) -> np.ndarray:
    """Penultimate-layer features [N, 128] (float64)."""
    return np.asarray(_logits_and_features(params, ImageCodec().encode(images))[1], np.float64)


def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as uint8 images and labels."""
    return digits_split("test")


def train_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits train split as uint8 images and labels."""
    return digits_split("train")
