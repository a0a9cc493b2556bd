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


def diffusion_tf_param_count(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_res=(16,),
                             resolution=32, channels=3) -> int:
    """The parameter count of diffusion_tf/models/unet.py's `model`, layer by layer: conv 3x3
    9 c_in c_out + c_out, dense / NIN c_in c_out + c_out, GroupNorm 2c; skips as in its
    `hs` list. (Independent of the Flax module: only the paper's architecture.)"""
    conv3 = lambda cin, cout: 9 * cin * cout + cout  # noqa: E731
    dense = lambda cin, cout: cin * cout + cout  # noqa: E731

    def resnet(cin, cout):
        count = 2 * cin + conv3(cin, cout) + dense(4 * ch, cout) + 2 * cout + conv3(cout, cout)
        return count + (dense(cin, cout) if cin != cout else 0)

    attn = lambda c: 2 * c + 4 * dense(c, c)  # noqa: E731 - norm, q, k, v, proj_out
    total = dense(ch, 4 * ch) + dense(4 * ch, 4 * ch) + conv3(channels, ch)
    skips, c, res = [ch], ch, resolution
    for level, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            total += resnet(c, ch * mult) + (attn(ch * mult) if res in attn_res else 0)
            c = ch * mult
            skips.append(c)
        if level != len(ch_mult) - 1:
            total += conv3(c, c)
            skips.append(c)
            res //= 2
    total += resnet(c, c) + attn(c) + resnet(c, c)
    for level, mult in reversed(list(enumerate(ch_mult))):
        for _ in range(num_res_blocks + 1):
            total += resnet(c + skips.pop(), ch * mult) + (attn(ch * mult) if res in attn_res
                                                            else 0)
            c = ch * mult
        if level != 0:
            total += conv3(c, c)
            res *= 2
    return total + 2 * c + conv3(c, channels)


def test_ddpm_unet_cifar10_parameter_count():
    # Ho et al. 2020, Section 4: "35.7M parameters"; exactly, by the layer-by-layer count.
    expected = diffusion_tf_param_count()
    assert expected == 35_746_307
    assert num_params(DDPMUnet(), 32, 3) == expected
    small = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_res=(4,), resolution=8,
                 channels=1)
    model = DDPMUnet(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), channels=1)
    assert num_params(model, 8, 1) == diffusion_tf_param_count(**small)
