"""Ho et al.'s DDPMUnet: structure (attention resolutions, skips, NIN shortcuts), conditioning
paths, input checks and the CIFAR-10 parameter count.

Shapes come from `jax.eval_shape` and parameters are drawn with NumPy (tests/unet_helpers.py), as
`model.init` and `jax.jit` take 5-30 s each to compile on a small CPU.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models import DDPMUnet
from unet_helpers import dropout_rngs, inputs, num_params, param_shapes, random_params


@pytest.mark.parametrize("model, shape, pattern", [
    (DDPMUnet(ch=32, ch_mult=(1, 2, 2)), (1, 30, 30, 3), r"image size 30x30 .*ch_mult=\(1, 2, 2\)"),
    (DDPMUnet(ch=32, ch_mult=(1, 2)), (1, 8, 8, 1), r"1 channels .*channels=3"),
    (DDPMUnet(ch=32, ch_mult=(2, -1)), (1, 8, 8, 3), r"ch_mult=\(2, -1\)"),
])
def test_invalid_configurations_raise(model, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        param_shapes(model, jnp.zeros(shape), jnp.zeros(shape[:1], jnp.int32))


def test_ddpm_unet_structure_and_conditioning():
    model = DDPMUnet(ch=32, ch_mult=(1, 2), attn_resolutions=(4,), num_classes=3,
                     self_condition=True, dropout=0.1)
    x, t = inputs(2, 8, 3)
    params = random_params(model, x, t)
    names = set(params["params"])
    # Attention only where the feature map is 4x4: level 1 down (2 blocks), up (3 blocks), mid.
    assert {n for n in names if "attn" in n} == {
        "down_1_attn_0", "down_1_attn_1", "up_1_attn_0", "up_1_attn_1", "up_1_attn_2", "mid_attn_1"}
    assert {n for n in names if n.startswith("up_0_block")} == {f"up_0_block_{i}" for i in range(3)}
    assert params["params"]["conv_in"]["kernel"].shape == (3, 3, 6, 32)
    assert params["params"]["mid_attn_1"]["q"]["kernel"].shape == (64, 64)  # single head
    assert "nin_shortcut" in params["params"]["down_1_block_0"]
    labels = jnp.array([0, 2], jnp.int32)
    y = model.apply(params, x, t, labels=labels)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert not np.allclose(y, model.apply(params, x, t))  # the null class differs
    assert not np.allclose(y, model.apply(params, x, t, labels=labels, x_self_cond=x))
    y_train = model.apply(params, x, t, labels=labels, train=True, rngs=dropout_rngs(0))
    assert not np.allclose(y, y_train)


def test_ddpm_unet_cifar10_parameter_count():
    # Ho et al. 2020, Section 4: the CIFAR-10 model has 35.7M parameters.
    assert abs(num_params(DDPMUnet(), 32, 3) - 35.7e6) <= 0.1e6
