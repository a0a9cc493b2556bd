"""Shapes, random parameters and inputs for the U-Net tests, without compiling `model.init`.

`model.init` and `jax.jit` take 5-30 s each to compile on a small CPU, so shapes come from
`jax.eval_shape` and parameters are drawn with NumPy from the shapes `init` would produce.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def inputs(batch, size, channels, seed=0):
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((batch, size, size, channels)),
                    jnp.float32)
    t = jnp.arange(batch, dtype=jnp.int32) * 397 % 1000
    return x, t


def param_shapes(model, x, t, **kwargs):
    return jax.eval_shape(model.init, jax.random.key(0), x, t, **kwargs)


def random_params(model, x, t, seed=0, **kwargs):
    """Parameters of `model` with every entry random: gains ~1, biases ~0, weights ~1/sqrt(fan_in)
    (no zero-initialised layer hides a path)."""
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        name = path[-1].key
        noise = rng.standard_normal(shape.shape)
        if name in ("scale", "g"):
            return jnp.asarray(1 + 0.1 * noise, shape.dtype)
        if name == "bias":
            return jnp.asarray(0.1 * noise, shape.dtype)
        fan_in = math.prod(shape.shape[:-1]) if len(shape.shape) > 1 else 1
        return jnp.asarray(noise / math.sqrt(fan_in), shape.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(model, x, t, **kwargs))


def num_params(model, size, channels):
    """Count without allocating or initialising anything."""
    shapes = param_shapes(model, *inputs(1, size, channels))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def dropout_rngs(seed):
    # The "rbg" generator compiles in ~1 s on CPU, threefry in ~5 s; the model does not care.
    return {"dropout": jax.random.key(seed, impl="rbg")}
