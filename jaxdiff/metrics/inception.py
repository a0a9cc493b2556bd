"""The Inception-v3 feature network of pytorch-fid's FID, in Flax, with no PyTorch dependency.

* ``InceptionV3FID``: a Flax Linen port of the Inception-v3 feature network that pytorch-fid
  uses (torchvision's ``Inception3`` with pytorch-fid's ``FIDInceptionA/C/E_1/E_2`` blocks, i.e.
  the TensorFlow FID graph), NHWC, BatchNorm in inference mode (eps 1e-3), returning the 2048
  global-average-pooled features of ``Mixed_7c``.
* ``load_inception_params``: reads pytorch-fid's weight file
  ``pt_inception-2015-12-05-6726825d.pth`` (a ``torch.save``-d state_dict) with
  ``jaxdiff.torch_checkpoint`` (``zipfile`` + ``pickle`` only), and maps it onto the module's
  variables. ``inception_features`` runs the jitted network over an image array in batches; the
  Fréchet distance of two feature sets is in ``frechet.py``.

Parameter layout (each ``BasicConv2d`` is a bias-free conv + BatchNorm + ReLU; the state_dict key
``<block>.<conv>.conv.weight`` [O, I, kh, kw] is the Flax ``params/<block>/<conv>/conv/kernel``
[kh, kw, I, O], ``.bn.weight/.bn.bias`` are ``params/.../bn/scale|bias`` and
``.bn.running_mean/.bn.running_var`` are ``batch_stats/.../bn/mean|var``). In (in -> out, kh x kw):

  stem      Conv2d_1a_3x3 3->32 3x3 s2, Conv2d_2a_3x3 32->32 3x3, Conv2d_2b_3x3 32->64 3x3 p1,
            maxpool 3 s2, Conv2d_3b_1x1 64->80 1x1, Conv2d_4a_3x3 80->192 3x3, maxpool 3 s2
  Mixed_5b/5c/5d  FIDInceptionA(in=192/256/288, pool_features=32/64/64) -> 256/288/288 channels:
            branch1x1 in->64; branch5x5_1 in->48, _2 48->64 5x5 p2; branch3x3dbl_1 in->64,
            _2 64->96 3x3 p1, _3 96->96 3x3 p1; avgpool 3 s1 p1 (count_include_pad=False),
            branch_pool in->pool_features
  Mixed_6a  InceptionB(288) -> 768: branch3x3 288->384 3x3 s2; branch3x3dbl_1 288->64,
            _2 64->96 3x3 p1, _3 96->96 3x3 s2; maxpool 3 s2
  Mixed_6b..6e  FIDInceptionC(768, c7=128/160/160/192) -> 768: branch1x1 768->192;
            branch7x7_1 768->c7, _2 c7->c7 1x7, _3 c7->192 7x1; branch7x7dbl_1 768->c7,
            _2 c7->c7 7x1, _3 1x7, _4 7x1, _5 c7->192 1x7; avgpool (excl. pad), branch_pool 768->192
  Mixed_7a  InceptionD(768) -> 1280: branch3x3_1 768->192, _2 192->320 3x3 s2;
            branch7x7x3_1 768->192, _2 1x7, _3 7x1, _4 192->192 3x3 s2; maxpool 3 s2
  Mixed_7b/7c  FIDInceptionE_1(1280) / FIDInceptionE_2(2048) -> 2048: branch1x1 in->320;
            branch3x3_1 in->384, _2a 384->384 1x3, _2b 3x1; branch3x3dbl_1 in->448,
            _2 448->384 3x3 p1, _3a 1x3, _3b 3x1; pool (E_1: avg excl. pad, E_2: max 3 s1 p1),
            branch_pool in->192
  global average pool -> [N, 2048]

Summing in*out*kh*kw + 2*out (conv kernel + BN scale/bias) over these 94 convolutions gives
21,785,568 trainable parameters (torchvision's inception_v3, 27,161,264, less its 1000-way fc
and AuxLogits), plus 2 * 17,216 = 34,432 BatchNorm running statistics; 470 state_dict tensors.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdiff.torch_checkpoint import read_torch_state_dict

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
# Where a training config would take the weight file's path (the programmatic entry points take
# it as `path` of load_inception_params and `params_or_path` of inception_features).
INCEPTION_PATH_CONFIG_FIELD = "eval.inception_path"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048

__all__ = [
    "FEATURE_DIM",
    "FID_WEIGHTS_URL",
    "InceptionV3FID",
    "expected_state_dict_shapes",
    "inception_features",
    "load_inception_params",
    "state_dict_to_variables",
]


# ----------------------------------------------------------------------------------------------
# The Inception-v3 feature network
# ----------------------------------------------------------------------------------------------


def _window(size: int, stride: int, pad: int):
    return ((1, size, size, 1), (1, stride, stride, 1),
            ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def avg_pool_exclude_pad(x: jax.Array, size: int = 3, stride: int = 1, pad: int = 1) -> jax.Array:
    """Average pool over NHWC windows that counts only real pixels (count_include_pad=False)."""
    dims, strides, padding = _window(size, stride, pad)
    total = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, dims, strides, padding)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    count = jax.lax.reduce_window(ones, jnp.array(0, x.dtype), jax.lax.add, dims, strides, padding)
    return total / count


def max_pool(x: jax.Array, size: int = 3, stride: int = 2, pad: int = 0) -> jax.Array:
    """Max pool over NHWC windows; padding (if any) never wins (it is -inf)."""
    dims, strides, padding = _window(size, stride, pad)
    return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, dims, strides,
                                 padding)


def resize_bilinear(x: jax.Array, size: int = INCEPTION_SIZE) -> jax.Array:
    """NHWC bilinear resize to size x size as torch's F.interpolate(align_corners=False).

    Half-pixel centres and no anti-aliasing when shrinking (pytorch-fid's resize_input).
    """
    if x.shape[1:3] == (size, size):
        return x
    return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear",
                            antialias=False)


class BasicConv2d(nn.Module):
    """Bias-free convolution, BatchNorm (inference statistics, eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, tuple(self.kernel_size), strides=tuple(self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                    name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _cat(*xs: jax.Array) -> jax.Array:
    return jnp.concatenate(xs, axis=-1)


class FIDInceptionA(nn.Module):
    pool_features: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, name="branch1x1")(x)
        b5 = conv(48, name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, name="branch_pool")(avg_pool_exclude_pad(x))
        return _cat(b1, b5, b3, bp)


class InceptionB(nn.Module):
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return _cat(b3, bd, max_pool(x, 3, 2))


class FIDInceptionC(nn.Module):
    channels_7x7: int
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        row = dict(kernel_size=(1, 7), padding=(0, 3))
        col = dict(kernel_size=(7, 1), padding=(3, 0))
        b1 = conv(192, name="branch1x1")(x)
        b7 = conv(c7, name="branch7x7_1")(x)
        b7 = conv(c7, **row, name="branch7x7_2")(b7)
        b7 = conv(192, **col, name="branch7x7_3")(b7)
        bd = conv(c7, name="branch7x7dbl_1")(x)
        bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = conv(192, **row, name="branch7x7dbl_5")(bd)
        bp = conv(192, name="branch_pool")(avg_pool_exclude_pad(x))
        return _cat(b1, b7, bd, bp)


class InceptionD(nn.Module):
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(192, name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return _cat(b3, b7, max_pool(x, 3, 2))


class FIDInceptionE(nn.Module):
    """pool="avg": FIDInceptionE_1 (avg pool, count_include_pad=False); "max": FIDInceptionE_2."""

    pool: str = "avg"
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv2d, precision=self.precision)
        row = dict(kernel_size=(1, 3), padding=(0, 1))
        col = dict(kernel_size=(3, 1), padding=(1, 0))
        b1 = conv(320, name="branch1x1")(x)
        b3 = conv(384, name="branch3x3_1")(x)
        b3 = _cat(conv(384, **row, name="branch3x3_2a")(b3),
                  conv(384, **col, name="branch3x3_2b")(b3))
        bd = conv(448, name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = _cat(conv(384, **row, name="branch3x3dbl_3a")(bd),
                  conv(384, **col, name="branch3x3dbl_3b")(bd))
        if self.pool == "avg":
            pooled = avg_pool_exclude_pad(x)
        elif self.pool == "max":
            pooled = max_pool(x, 3, 1, 1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        bp = conv(192, name="branch_pool")(pooled)
        return _cat(b1, b3, bd, bp)


class InceptionV3FID(nn.Module):
    """pytorch-fid's Inception-v3 feature extractor: NHWC images -> [N, 2048] pool features.

    Images are uint8 in [0, 255] or float in [0, 1], with 1 (repeated to RGB) or 3 channels.
    With resize_input they are resized to 299x299 (bilinear, as pytorch-fid), and with
    normalize_input scaled from [0, 1] to [-1, 1]. At least 75x75 without resizing.
    """

    resize_input: bool = True
    normalize_input: bool = True
    precision: Any = None
    dtype: Any = jnp.float32  # float64 (with float64 variables, jax_enable_x64) for parity checks

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"images must be NHWC, got shape {x.shape}")
        if jnp.issubdtype(x.dtype, jnp.integer):
            x = x.astype(self.dtype) / 255.0
        else:
            x = x.astype(self.dtype)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if x.shape[-1] != 3:
            raise ValueError(f"images must have 1 or 3 channels, got {x.shape[-1]}")
        if self.resize_input:
            x = resize_bilinear(x, INCEPTION_SIZE)
        if self.normalize_input:
            x = 2.0 * x - 1.0

        conv = functools.partial(BasicConv2d, precision=self.precision)
        p = dict(precision=self.precision)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool(x, 3, 2)
        x = conv(80, name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = max_pool(x, 3, 2)
        x = FIDInceptionA(32, **p, name="Mixed_5b")(x)
        x = FIDInceptionA(64, **p, name="Mixed_5c")(x)
        x = FIDInceptionA(64, **p, name="Mixed_5d")(x)
        x = InceptionB(**p, name="Mixed_6a")(x)
        x = FIDInceptionC(128, **p, name="Mixed_6b")(x)
        x = FIDInceptionC(160, **p, name="Mixed_6c")(x)
        x = FIDInceptionC(160, **p, name="Mixed_6d")(x)
        x = FIDInceptionC(192, **p, name="Mixed_6e")(x)
        x = InceptionD(**p, name="Mixed_7a")(x)
        x = FIDInceptionE("avg", **p, name="Mixed_7b")(x)
        x = FIDInceptionE("max", **p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------------------------
# state_dict -> Flax variables
# ----------------------------------------------------------------------------------------------

_LEAF_TO_TORCH = {
    ("params", "conv", "kernel"): "conv.weight",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
}


def _torch_key(path: tuple[str, ...]) -> str:
    suffix = _LEAF_TO_TORCH[(path[0],) + tuple(path[-2:])]
    return ".".join(path[1:-2] + (suffix,))


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flattened {('params'|'batch_stats', ..., leaf): shape} of InceptionV3FID, in layer order."""
    model = InceptionV3FID(resize_input=False)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
    flat = {path: tuple(leaf.shape)
            for path, leaf in traverse_util.flatten_dict(dict(abstract)).items()}
    layers = list(dict.fromkeys(path[1:-2] for path in flat if path[0] == "params"))
    ordered = {}
    for layer in layers:  # conv kernel, bn scale/bias, bn mean/var of each layer in turn
        for collection, module, leaf in _LEAF_TO_TORCH:
            path = (collection,) + layer + (module, leaf)
            ordered[path] = flat[path]
    if len(ordered) != len(flat):
        raise AssertionError("unexpected variables in InceptionV3FID")
    return ordered


def expected_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """{pytorch-fid state_dict key: torch shape} for every tensor the feature network needs."""
    out = {}
    for path, shape in _variable_shapes().items():
        if path[-1] == "kernel":
            kh, kw, cin, cout = shape
            shape = (cout, cin, kh, kw)
        out[_torch_key(path)] = tuple(shape)
    return out


def state_dict_to_variables(state_dict: dict, dtype=np.float32) -> dict:
    """Map a pytorch-fid Inception state_dict onto InceptionV3FID's {'params', 'batch_stats'}.

    Conv weights [O, I, kh, kw] become kernels [kh, kw, I, O]; extra keys (fc, AuxLogits,
    num_batches_tracked) are ignored. Raises ValueError naming the first missing or misshapen key.
    """
    shapes = _variable_shapes()
    torch_shapes = expected_state_dict_shapes()
    for path in shapes:  # check everything first, in layer order, before converting anything
        key = _torch_key(path)
        if key not in state_dict:
            missing = sum(_torch_key(p) not in state_dict for p in shapes)
            raise ValueError(f"Inception weights: missing key {key!r} ({missing} of {len(shapes)} "
                             "expected tensors missing; is this pytorch-fid's "
                             "pt_inception-2015-12-05 state_dict?)")
        got = tuple(np.shape(state_dict[key]))
        if got != torch_shapes[key]:
            raise ValueError(f"Inception weights: {key!r} has shape {got}, expected "
                             f"{torch_shapes[key]}")
    flat = {}
    for path in shapes:
        value = np.asarray(state_dict[_torch_key(path)], dtype=dtype)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
        flat[path] = jnp.asarray(value)
    return traverse_util.unflatten_dict(flat)


def load_inception_params(path: str) -> dict:
    """Variables {'params', 'batch_stats'} of InceptionV3FID from pytorch-fid's weight file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"FID Inception weights not found at {path!r}: download {FID_WEIGHTS_URL} and pass its "
            f"path as the config field {INCEPTION_PATH_CONFIG_FIELD} (or the `path` argument of "
            "jaxdiff.metrics.inception.load_inception_params / `params_or_path` of "
            "inception_features)")
    return state_dict_to_variables(read_torch_state_dict(path))


# ----------------------------------------------------------------------------------------------
# Features of an image array
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _forward(resize_input: bool) -> Callable:
    model = InceptionV3FID(resize_input=resize_input)
    return jax.jit(lambda variables, images: model.apply(variables, images))


def inception_features(images, params_or_path, batch_size: int = 50, *,
                       resize_input: bool = True) -> np.ndarray:
    """[N, 2048] float32 pool features of NHWC images (uint8, or float in [0, 1]; C = 1 or 3).

    params_or_path: variables from load_inception_params, or the weight file's path. Runs one
    jitted forward per batch of batch_size (the last batch zero-padded, so it compiles once).
    """
    variables = (load_inception_params(params_or_path)
                 if isinstance(params_or_path, (str, os.PathLike)) else params_or_path)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, C] with C in (1, 3), got {images.shape}")
    if images.dtype == np.bool_ or not (np.issubdtype(images.dtype, np.integer)
                                        or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"images must be uint8 or float, got {images.dtype}")
    if np.issubdtype(images.dtype, np.integer) and images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError("integer images must lie in [0, 255]")
        images = images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating) and images.size:
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = images.shape[0]
    if n == 0:
        return np.zeros((0, FEATURE_DIM), np.float32)
    batch = min(batch_size, n)
    forward = _forward(bool(resize_input))
    out = np.empty((n, FEATURE_DIM), np.float32)
    for start in range(0, n, batch):
        chunk = images[start:start + batch]
        count = chunk.shape[0]
        if count < batch:
            pad = np.zeros((batch - count,) + chunk.shape[1:], chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        out[start:start + count] = np.asarray(forward(variables, chunk))[:count]
    return out
