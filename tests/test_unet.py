"""denoising-diffusion-pytorch's Unet: shapes, attention kinds, conditioning paths, dtypes,
dropout, input checks, parameter counts against the PyTorch package.

Speed: `model.init` and `jax.jit` take 5-30 s each to compile on a small CPU, so shapes come from
`jax.eval_shape`, parameters are drawn with NumPy from the shapes `init` would produce
(tests/unet_helpers.py), and the few numerical checks run eagerly on one small configuration (the
compiled ops are then cached).
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.models import Unet
from unet_helpers import dropout_rngs, inputs, param_shapes, random_params


# A small configuration shared by the numerical tests, so eager ops compile once.
SMALL = dict(dim=8, dim_mults=(1, 2), channels=3)


@pytest.mark.parametrize("kwargs, size", [
    (dict(dim=8, dim_mults=(1, 2), channels=1), 8),
    (dict(dim=8, dim_mults=(1, 2, 2), channels=3), 28),
    (dict(dim=8, dim_mults=(1, 2, 4, 8), channels=3, resnet_block_groups=None), 16),
    (dict(dim=16, dim_mults=(1, 2), channels=1, resnet_block_groups=4), 16),
    (dict(dim=8, dim_mults=(1, 2, 2), channels=1, out_dim=2, init_dim=16, full_attn=True), 16),
])
def test_unet_output_shape(kwargs, size):
    model = Unet(**kwargs)
    x, t = inputs(2, size, kwargs["channels"])
    params = param_shapes(model, x, t)
    y = jax.eval_shape(model.apply, params, x, t)
    assert y.shape == x.shape[:3] + (kwargs.get("out_dim") or kwargs["channels"],)
    assert y.dtype == jnp.float32


def test_unet_runs_and_is_finite():
    model = Unet(**SMALL)
    x, t = inputs(2, 8, 3)
    y = model.apply(random_params(model, x, t), x, t)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert np.isfinite(np.asarray(y)).all() and np.abs(np.asarray(y)).max() > 0


def test_unet_attention_kinds():
    shapes = param_shapes(Unet(dim=8, dim_mults=(1, 2, 2), channels=1), *inputs(1, 8, 1))
    shapes = shapes["params"]
    # Default: linear attention (which ends in conv -> RMSNorm) except at the innermost stage.
    for stage, linear in ((0, True), (1, True), (2, False)):
        for path in ("down", "up"):
            assert ("to_out_norm" in shapes[f"{path}_{stage}_attn"]) == linear
    assert "to_out_norm" not in shapes["mid_attn"]
    # Memory keys/values as lucidrains stores them: [2, heads, dim_head, n] (linear), [2, h, n, d].
    assert shapes["down_0_attn"]["mem_kv"].shape == (2, 4, 32, 4)
    assert shapes["mid_attn"]["mem_kv"].shape == (2, 4, 4, 32)
    full = param_shapes(Unet(dim=8, dim_mults=(1, 2), channels=1, full_attn=(True, False),
                              attn_heads=2, attn_dim_head=8), *inputs(1, 8, 1))["params"]
    assert "to_out_norm" not in full["down_0_attn"] and "to_out_norm" in full["down_1_attn"]
    assert full["down_0_attn"]["to_qkv"]["kernel"].shape == (1, 1, 8, 3 * 2 * 8)


def test_unet_time_embedding_variants():
    x, t = inputs(2, 8, 1)
    plain = param_shapes(Unet(dim=8, dim_mults=(1, 2), channels=1), x, t)["params"]
    assert "time_fourier" not in plain and plain["time_mlp_0"]["kernel"].shape == (8, 32)
    for flag in ("learned_sinusoidal_cond", "random_fourier_features"):
        model = Unet(dim=8, dim_mults=(1, 2), channels=1, learned_sinusoidal_dim=6, **{flag: True})
        shapes = param_shapes(model, x, t)["params"]
        assert shapes["time_fourier"]["weights"].shape == (3,)
        assert shapes["time_mlp_0"]["kernel"].shape == (7, 32)  # [t, sin, cos] -> 4 * dim


def test_unet_self_condition():
    model = Unet(**SMALL, self_condition=True)
    x, t = inputs(2, 8, 3)
    params = random_params(model, x, t)
    assert params["params"]["init_conv"]["kernel"].shape == (7, 7, 6, 8)
    y_none = model.apply(params, x, t)
    np.testing.assert_array_equal(y_none, model.apply(params, x, t, x_self_cond=jnp.zeros_like(x)))
    y_cond = model.apply(params, x, t, x_self_cond=x)
    assert y_cond.shape == x.shape
    assert not np.allclose(y_none, y_cond)


@pytest.mark.parametrize("cond_first", [True, False])
def test_unet_self_condition_channel_order(cond_first):
    # denoising-diffusion-pytorch concatenates (x_self_cond, x): with cond_first the init conv's
    # first C input channels read x_self_cond, so zeroing them removes its influence.
    model = Unet(**SMALL, self_condition=True, self_cond_first=cond_first)
    x, t = inputs(2, 8, 3)
    params = random_params(model, x, t)
    kernel = np.array(params["params"]["init_conv"]["kernel"])
    cond = slice(0, 3) if cond_first else slice(3, 6)
    kernel[:, :, cond, :] = 0.0
    params["params"]["init_conv"]["kernel"] = jnp.asarray(kernel)
    np.testing.assert_array_equal(model.apply(params, x, t, x_self_cond=x + 1.0),
                                  model.apply(params, x, t, x_self_cond=-x))


def test_configs_saved_before_the_order_field_keep_the_old_order():
    from jaxdiff.config import image_config
    from jaxdiff.models import build_model

    config = image_config()
    config.model.self_condition = True
    assert build_model(config).self_cond_first  # new runs: PyTorch's order
    del config.model["self_cond_first"]  # a config.json written before 2026-11-30
    assert not build_model(config).self_cond_first


@pytest.mark.parametrize("name", ["unet", "ddpm_unet"])
def test_remat_keeps_parameters_outputs_and_gradients(name):
    from jaxdiff.models import DDPMUnet

    model = (Unet(**SMALL, dropout=0.1) if name == "unet"
             else DDPMUnet(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)))
    x, t = inputs(2, 8, 3)
    params = random_params(model, x, t)
    rematerialised = model.clone(remat=True)
    assert jax.tree.structure(param_shapes(rematerialised, x, t)) == jax.tree.structure(params)

    def loss(module, p):
        out = module.apply(p, x, t, train=True, rngs=dropout_rngs(3))
        return jnp.mean(jnp.square(out - x))

    plain_loss, plain_grads = jax.value_and_grad(functools.partial(loss, model))(params)
    remat_loss, remat_grads = jax.value_and_grad(functools.partial(loss, rematerialised))(params)
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # recomputed in another order


def test_unet_labels_route_through_their_embedding_rows():
    model = Unet(**SMALL, num_classes=5)
    x, t = inputs(2, 8, 3)
    labels = jnp.array([1, 3], jnp.int32)
    params = random_params(model, x, t)
    table = params["params"]["label_emb"]["Embed_0"]["embedding"]
    assert table.shape == (6, 32)  # 5 classes + the null class, time_dim = 4 * dim

    def with_row_moved(row):
        moved = flax.core.copy(params, {})
        moved["params"]["label_emb"]["Embed_0"]["embedding"] = table.at[row].add(1.0)
        return moved

    y = np.asarray(model.apply(params, x, t, labels=labels))
    assert not np.allclose(y, model.apply(params, x, t))  # labels=None is the null class
    # Moving the row of class 3 changes only the second example; class 0 is unused.
    y_moved = np.asarray(model.apply(with_row_moved(3), x, t, labels=labels))
    np.testing.assert_array_equal(y_moved[0], y[0])
    assert not np.allclose(y_moved[1], y[1])
    np.testing.assert_array_equal(model.apply(with_row_moved(0), x, t, labels=labels), y)
    # labels=None reads the null row (index num_classes).
    y_null = np.asarray(model.apply(params, x, t))
    assert not np.allclose(model.apply(with_row_moved(5), x, t), y_null)


def test_unet_bfloat16_compute_keeps_float32_params():
    x, t = inputs(2, 8, 3)
    model16 = Unet(**SMALL, num_classes=2, dtype=jnp.bfloat16)
    shapes = param_shapes(model16, x, t)
    assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    params = random_params(model16, x, t)
    y16 = model16.apply(params, x, t)
    y32 = Unet(**SMALL, num_classes=2).apply(params, x, t)
    assert y16.dtype == jnp.float32 and y16.shape == x.shape
    assert np.isfinite(np.asarray(y16)).all()
    assert np.abs(y16 - y32).max() < 0.1 * np.abs(y32).max()


def test_unet_dropout_only_when_training():
    model = Unet(**SMALL, dropout=0.5)
    x, t = inputs(2, 8, 3)
    params = random_params(model, x, t)
    eval_a = model.apply(params, x, t, train=False, rngs=dropout_rngs(1))
    np.testing.assert_array_equal(eval_a, model.apply(params, x, t))
    np.testing.assert_array_equal(eval_a, Unet(**SMALL).apply(params, x, t))
    train_a = model.apply(params, x, t, train=True, rngs=dropout_rngs(1))
    train_b = model.apply(params, x, t, train=True, rngs=dropout_rngs(2))
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)
    np.testing.assert_array_equal(train_a, model.apply(params, x, t, train=True,
                                                       rngs=dropout_rngs(1)))


@pytest.mark.parametrize("model, shape, pattern", [
    (Unet(dim=8, dim_mults=(1, 2, 4, 8), channels=1), (1, 12, 12, 1),
     r"image size 12x12 .*2\*\*\(len\(dim_mults\)-1\)=8 .*dim_mults=\(1, 2, 4, 8\)"),
    (Unet(dim=8, dim_mults=(1, 2), channels=1), (1, 9, 8, 1), r"image size 9x8 "),
    (Unet(dim=8, dim_mults=(1, 2), channels=1), (1, 8, 8, 3), r"3 channels .*channels=1"),
    (Unet(dim=8, dim_mults=(), channels=1), (1, 8, 8, 1), r"dim_mults=\(\)"),
    (Unet(dim=8, dim_mults=(1, 0), channels=1), (1, 8, 8, 1), r"dim_mults=\(1, 0\)"),
    (Unet(dim=8, dim_mults=(1, 2), channels=1, full_attn=(True,)), (1, 8, 8, 1),
     r"full_attn has 1 entries .* 2 stages"),
])
def test_invalid_configurations_raise(model, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        param_shapes(model, jnp.zeros(shape), jnp.zeros(shape[:1], jnp.int32))


def test_unet_param_tree_does_not_depend_on_image_size():
    model = Unet(dim=8, dim_mults=(1, 2), channels=1)
    small = flax.traverse_util.flatten_dict(param_shapes(model, *inputs(1, 8, 1))["params"])
    large = flax.traverse_util.flatten_dict(param_shapes(model, *inputs(1, 16, 1))["params"])
    assert {k: v.shape for k, v in small.items()} == {k: v.shape for k, v in large.items()}


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
@pytest.mark.parametrize("shape, groups", [((3, 7, 5, 12), 4), ((2, 3, 128, 96), 8),
                                           ((2, 6, 16), 2)])
def test_group_norm_equals_flax_group_norm_on_every_path(monkeypatch, backend, shape, groups):
    """jaxdiff's GroupNorm takes its statistics through a small matrix product on the CPU backend
    (row sums and a [W*C, C] group-mean matrix), and per-channel means elsewhere and when that
    matrix would exceed 2^20 entries (the 128 x 96 case); every path is nn.GroupNorm's function
    (float64 here, so the comparison is exact to rounding), including a gain and bias."""
    from jaxdiff.models.layers import GroupNorm

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(1.5, 2.0, shape))
        ours = GroupNorm(groups, epsilon=1e-5, dtype=jnp.float64, param_dtype=jnp.float64)
        reference = flax.linen.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=jnp.float64,
                                         param_dtype=jnp.float64)
        variables = reference.init(jax.random.key(0), x)
        variables = jax.tree.map(
            lambda v: v + jnp.asarray(np.random.default_rng(1).normal(size=v.shape)), variables)
        got, want = ours.apply(variables, x), reference.apply(variables, x)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
