"""Deterministic stand-in weights for pytorch-fid's InceptionV3 (NumPy only).

The real FID weights (pt_inception-2015-12-05) are a 91 MB download that neither the tests nor
benchmarks/ddp_reference.py fetch. Instead both sides build the network from the same synthetic
weights: benchmarks/ddp_reference.py loads them into pytorch-fid's InceptionV3 (torch, its own
venv) to write tests/data/ddp_reference/inception.npz, and jaxdiff's tests load them into
jaxdiff's Inception to compare features. Nothing here imports torch or jaxdiff.

Every tensor depends only on (seed, name, shape): it is drawn from
np.random.default_rng([seed, zlib.crc32(name)]), so the order of the table does not matter and
either side may pass its own name -> shape table (they must agree on the names, which are those
of pytorch-fid's weight file, e.g. "Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.bias").

The scales keep activations O(1) through all the BasicConv2d (conv -> BatchNorm(eval) -> ReLU)
layers in eval mode: conv weights are He-scaled normals times CONV_GAIN; BatchNorm's affine and
running statistics are mildly perturbed around the identity, so every parameter matters.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

CONV_GAIN = 1.1  # multiplies the He scale sqrt(2 / fan_in); see inception_reference_weights


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def inception_reference_weights(shapes: Mapping[str, tuple[int, ...]],
                                seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic weights for every name in `shapes` (pytorch-fid weight-file keys).

    * `*.weight` with 4 dims (conv, OIHW): N(0, 1) * CONV_GAIN * sqrt(2 / (in_ch * kh * kw))
    * `*.bn.weight`: 1 + 0.1 n; `*.bn.bias`: 0.1 n   (n standard normal, per channel)
    * `*.bn.running_mean`: 0.1 n; `*.bn.running_var`: 1 + 0.1 |n|
    * `*.bn.num_batches_tracked`: int64 zeros (shape as given, normally ())

    All arrays are float32 except num_batches_tracked. Raises ValueError on a name it does not
    recognise (so a changed table fails loudly instead of getting made-up weights).
    """
    out: dict[str, np.ndarray] = {}
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        if name.endswith("num_batches_tracked"):
            out[name] = np.zeros(shape, np.int64)
            continue
        n = _rng(seed, name).standard_normal(shape)
        if name.endswith(".weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            value = n * (CONV_GAIN * np.sqrt(2.0 / fan_in))
        elif name.endswith("bn.weight"):
            value = 1.0 + 0.1 * n
        elif name.endswith("bn.bias"):
            value = 0.1 * n
        elif name.endswith("bn.running_mean"):
            value = 0.1 * n
        elif name.endswith("bn.running_var"):
            value = 1.0 + 0.1 * np.abs(n)
        else:
            raise ValueError(f"no reference-weight rule for {name!r} with shape {shape}")
        out[name] = value.astype(np.float32)
    return out
