"""The Inception-v3 FID network: pooling and resizing against torch's definitions, the parameter
tree against an independent table of pytorch-fid's layer shapes, the forward pass and
`inception_features`, and the loader mapping a state_dict onto the Flax variables.

Nothing here needs the real pytorch-fid weight file or torch: the network runs with random
weights, and the loader reads small torch.save-format files written by tests/torch_files.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff.metrics import inception
from jaxdiff.torch_checkpoint import read_torch_state_dict
from torch_files import Storage, Tensor, contiguous, write_torch_file

# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def test_avg_pool_excludes_padding_and_max_pool_ignores_it():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3) - 60.0
    got = np.asarray(inception.avg_pool_exclude_pad(jnp.asarray(x)))
    want = np.empty_like(x)
    for i in range(4):
        for j in range(5):
            win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
            want[:, i, j] = win.mean(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # all-negative corner: the padding is -inf
    got = np.asarray(inception.max_pool(jnp.asarray(x), 3, 1, 1))
    want = np.empty_like(x)
    for i in range(4):
        for j in range(5):
            want[:, i, j] = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(got, want)
    assert inception.max_pool(jnp.asarray(x), 3, 2).shape == (2, 1, 2, 3)


def _torch_bilinear_1d(x, out, axis):
    """torch F.interpolate(mode='bilinear', align_corners=False) along one axis, in NumPy."""
    n = x.shape[axis]
    src = np.maximum((np.arange(out) + 0.5) * (n / out) - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return (1 - w) * np.take(x, i0, axis=axis) + w * np.take(x, i1, axis=axis)


@pytest.mark.parametrize("hw", [(20, 13), (37, 45)])
def test_resize_matches_torch_bilinear(hw):
    x = np.random.default_rng(6).uniform(size=(1,) + hw + (3,)).astype(np.float32)
    size = 29  # up-sampling one axis, down-sampling the other (no anti-aliasing in torch)
    want = _torch_bilinear_1d(_torch_bilinear_1d(x, size, 1), size, 2)
    got = np.asarray(inception.resize_bilinear(jnp.asarray(x), size))
    np.testing.assert_allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The network's parameters: an independent table of torchvision/pytorch-fid layer shapes
# ----------------------------------------------------------------------------------------------


def _reference_layers():
    """(name, in, out, kh, kw) of every BasicConv2d of pytorch-fid's Inception up to Mixed_7c."""
    layers = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
              ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
              ("Conv2d_4a_3x3", 80, 192, 3, 3)]

    def a(name, cin, pool):
        return [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
                (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
                (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
                (f"{name}.branch_pool", cin, pool, 1, 1)]

    def b(name, cin):
        return [(f"{name}.branch3x3", cin, 384, 3, 3), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
                (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3)]

    def c(name, cin, c7):
        return [(f"{name}.branch1x1", cin, 192, 1, 1), (f"{name}.branch7x7_1", cin, c7, 1, 1),
                (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
                (f"{name}.branch7x7dbl_1", cin, c7, 1, 1), (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
                (f"{name}.branch7x7dbl_3", c7, c7, 1, 7), (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
                (f"{name}.branch7x7dbl_5", c7, 192, 1, 7), (f"{name}.branch_pool", cin, 192, 1, 1)]

    def d(name, cin):
        return [(f"{name}.branch3x3_1", cin, 192, 1, 1), (f"{name}.branch3x3_2", 192, 320, 3, 3),
                (f"{name}.branch7x7x3_1", cin, 192, 1, 1),
                (f"{name}.branch7x7x3_2", 192, 192, 1, 7),
                (f"{name}.branch7x7x3_3", 192, 192, 7, 1),
                (f"{name}.branch7x7x3_4", 192, 192, 3, 3)]

    def e(name, cin):
        return [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
                (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
                (f"{name}.branch3x3dbl_1", cin, 448, 1, 1),
                (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
                (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3),
                (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
                (f"{name}.branch_pool", cin, 192, 1, 1)]

    layers += a("Mixed_5b", 192, 32) + a("Mixed_5c", 256, 64) + a("Mixed_5d", 288, 64)
    layers += b("Mixed_6a", 288)
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        layers += c(name, 768, c7)
    layers += d("Mixed_7a", 768) + e("Mixed_7b", 1280) + e("Mixed_7c", 2048)
    return layers


# Conv kernels + BatchNorm scale/bias; torchvision's inception_v3 has 27,161,264 parameters, of
# which fc (2048*1000 + 1000) and AuxLogits (98,560 + 2,459,136 + 769,000) are not features.
EXPECTED_PARAMS = 21_785_568
EXPECTED_RUNNING_STATS = 34_432  # BatchNorm mean + var: 2 * (sum of output channels)


def test_reference_table_counts():
    layers = _reference_layers()
    assert len(layers) == 94
    assert sum(i * o * kh * kw + 2 * o for _, i, o, kh, kw in layers) == EXPECTED_PARAMS
    assert EXPECTED_PARAMS == 27_161_264 - (2048 * 1000 + 1000) - (98_560 + 2_459_136 + 769_000)
    assert sum(2 * o for _, _, o, _, _ in layers) == EXPECTED_RUNNING_STATS


def test_parameter_tree_matches_pytorch_fid_layout():
    abstract = jax.eval_shape(inception.InceptionV3FID().init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    assert set(abstract) == {"params", "batch_stats"}
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))  # noqa
    assert count(abstract["params"]) == EXPECTED_PARAMS
    assert count(abstract["batch_stats"]) == EXPECTED_RUNNING_STATS
    conv = abstract["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    assert conv.shape == (1, 7, 128, 128)
    assert abstract["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"].shape == (192,)

    expected = {}
    for name, cin, cout, kh, kw in _reference_layers():
        expected[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for leaf in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            expected[f"{name}.{leaf}"] = (cout,)
    assert inception.expected_state_dict_shapes() == expected


def _random_variables(seed=0):
    """Full random variables (He-scaled kernels, BN near identity) without running model.init."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(inception.InceptionV3FID(resize_input=False).init,
                              jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))

    def make(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:3]))
            return rng.standard_normal(leaf.shape, np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        if name in ("scale", "var"):
            return rng.uniform(0.8, 1.2, leaf.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(make, abstract)


@pytest.fixture(scope="module")
def random_variables():
    return _random_variables()


def test_forward_299_random_weights(random_variables):
    images = np.random.default_rng(7).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    out = jax.jit(inception.InceptionV3FID().apply)(random_variables, images)
    assert out.shape == (2, inception.FEATURE_DIM)
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(out >= 0))  # mean of ReLUs
    assert float(jnp.abs(out[0] - out[1]).max()) > 0


def test_inception_features_batches_grayscale_and_uint8(random_variables):
    rng = np.random.default_rng(8)
    gray = rng.integers(0, 256, (3, 75, 75, 1), dtype=np.uint8)
    feats = inception.inception_features(gray, random_variables, batch_size=2,
                                         resize_input=False)
    assert feats.shape == (3, 2048) and feats.dtype == np.float32 and np.isfinite(feats).all()
    rgb = np.repeat(gray, 3, axis=-1).astype(np.float32) / 255.0
    one_batch = inception.inception_features(rgb, random_variables, batch_size=50,
                                             resize_input=False)
    np.testing.assert_allclose(feats, one_batch, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception.inception_features(rgb * 2 - 1, random_variables, resize_input=False)


# ----------------------------------------------------------------------------------------------
# The loader, on torch.save-format files written with a stand-in `torch` module
# ----------------------------------------------------------------------------------------------


def _full_state_dict(drop=(), reshape=None):
    """Every expected key: Conv2d_1a_3x3 with known values, the rest stride-0 views of one float,
    plus keys the loader must ignore. Returns (state_dict of Tensor, known arrays)."""
    rng = np.random.default_rng(9)
    known = {"Conv2d_1a_3x3.conv.weight": rng.normal(size=(32, 3, 3, 3)).astype(np.float32)}
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        known[f"Conv2d_1a_3x3.bn.{leaf}"] = rng.normal(size=32).astype(np.float32)
    const = Storage("const", np.array([0.25], np.float32))
    shared = Storage("shared", np.concatenate([known[f"Conv2d_1a_3x3.bn.{leaf}"]
                                                for leaf in ("weight", "bias")]))
    sd = {}
    for key, shape in inception.expected_state_dict_shapes().items():
        if key in drop:
            continue
        shape = reshape.get(key, shape) if reshape else shape
        if key == "Conv2d_1a_3x3.conv.weight":
            sd[key] = contiguous(Storage("w1a", known[key]), shape)
        elif key == "Conv2d_1a_3x3.bn.weight":  # two tensors sharing one storage, at offsets
            sd[key] = contiguous(shared, shape)
        elif key == "Conv2d_1a_3x3.bn.bias":
            sd[key] = contiguous(shared, shape, offset=32)
        elif key.startswith("Conv2d_1a_3x3.bn."):
            sd[key] = contiguous(Storage(key.rsplit(".", 1)[1], known[key]), shape)
        else:
            sd[key] = Tensor(const, 0, shape, [0] * len(shape))
    sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = Tensor(Storage("nbt", np.array([7], np.int64)),
                                                         0, (), ())
    sd["fc.weight"] = Tensor(const, 0, (1008, 2048), (0, 0))
    return sd, known


@pytest.mark.parametrize("fmt,prefix", [("zip", "archive"), ("zip", "pt_inception"),
                                        ("legacy", None)])
def test_load_inception_params_from_torch_file(tmp_path, fmt, prefix):
    sd, known = _full_state_dict()
    path = tmp_path / "weights.pth"
    write_torch_file(path, sd, fmt=fmt, prefix=prefix)

    raw = read_torch_state_dict(str(path))
    assert raw["Conv2d_1a_3x3.bn.num_batches_tracked"].dtype == np.int64
    assert int(raw["Conv2d_1a_3x3.bn.num_batches_tracked"]) == 7

    variables = inception.load_inception_params(str(path))
    params, stats = variables["params"], variables["batch_stats"]
    kernel = np.asarray(params["Conv2d_1a_3x3"]["conv"]["kernel"])
    assert kernel.shape == (3, 3, 3, 32) and kernel.dtype == np.float32
    w = known["Conv2d_1a_3x3.conv.weight"]
    np.testing.assert_array_equal(kernel, w.transpose(2, 3, 1, 0))
    assert kernel[1, 2, 0, 5] == w[5, 0, 1, 2]  # kernel[kh, kw, in, out] = weight[out, in, kh, kw]
    bn, bn_stats = params["Conv2d_1a_3x3"]["bn"], stats["Conv2d_1a_3x3"]["bn"]
    np.testing.assert_array_equal(bn["scale"], known["Conv2d_1a_3x3.bn.weight"])
    np.testing.assert_array_equal(bn["bias"], known["Conv2d_1a_3x3.bn.bias"])
    np.testing.assert_array_equal(bn_stats["mean"], known["Conv2d_1a_3x3.bn.running_mean"])
    np.testing.assert_array_equal(bn_stats["var"], known["Conv2d_1a_3x3.bn.running_var"])
    other = np.asarray(params["Mixed_7c"]["branch3x3dbl_2"]["conv"]["kernel"])
    assert other.shape == (3, 3, 448, 384) and np.all(other == 0.25)
    assert "fc" not in params
    abstract = jax.eval_shape(inception.InceptionV3FID().init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(variables)
    assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(abstract),
                                                  jax.tree_util.tree_leaves(variables)))


def test_missing_weight_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        inception.load_inception_params(str(tmp_path / "pt_inception-2015-12-05-6726825d.pth"))
    message = str(info.value)
    assert inception.FID_WEIGHTS_URL in message and "\n" not in message
    assert inception.FID_WEIGHTS_URL == (
        "https://github.com/mseitzer/pytorch-fid/releases/download/"
        "fid_weights/pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        inception.inception_features(np.zeros((1, 8, 8, 3), np.uint8), str(tmp_path / "nope.pth"))


def test_missing_or_misshapen_key_is_named(tmp_path):
    path = tmp_path / "weights.pth"
    write_torch_file(path, _full_state_dict(drop={"Mixed_6c.branch7x7_2.bn.running_var"})[0])
    with pytest.raises(ValueError, match=r"Mixed_6c\.branch7x7_2\.bn\.running_var"):
        inception.load_inception_params(str(path))
    bad = {"Mixed_5b.branch_pool.conv.weight": (64, 192, 1, 1)}  # pool_features is 32
    write_torch_file(path, _full_state_dict(reshape=bad)[0])
    with pytest.raises(ValueError, match=r"Mixed_5b\.branch_pool\.conv\.weight"):
        inception.load_inception_params(str(path))
