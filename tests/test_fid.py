"""FID: the Fréchet distance, the Inception-v3 network's plumbing and the torch-file loader.

Nothing here needs the real pytorch-fid weight file or torch: the network runs with random
weights, and the loader reads small torch.save-format files written below by a stand-in `torch`
module that exists only while the file is written.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import evaluation, fid

# ----------------------------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------------------------


def _random_covariance(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_is_zero_for_identical_statistics():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_covariance(rng, 16)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_distance_1d_closed_form():
    m1, s1, m2, s2 = 0.3, 1.7, -1.2, 0.4  # means and standard deviations
    expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
    assert fid.frechet_distance(m1, s1**2, m2, s2**2) == pytest.approx(expected, rel=1e-12)
    assert fid.frechet_distance([m1], [[s1**2]], [m2], [[s2**2]]) == pytest.approx(expected,
                                                                                 rel=1e-12)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    a, b = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    s1, s2 = _random_covariance(rng, 12), _random_covariance(rng, 12)
    d12, d21 = fid.frechet_distance(mu1, s1, mu2, s2), fid.frechet_distance(mu2, s2, mu1, s1)
    assert d12 > 0
    assert d12 == pytest.approx(d21, rel=1e-9)


def test_frechet_distance_from_features_same_vs_shifted_distribution():
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(8, 8))
    draw = lambda: rng.normal(size=(4000, 8)) @ mix  # noqa: E731
    a, b, shifted = draw(), draw(), draw() + 1.0
    same = fid.frechet_distance_from_features(a, b)
    far = fid.frechet_distance_from_features(a, shifted)
    assert far == pytest.approx(8.0, rel=0.15)  # ||shift||^2 = 8, covariances equal
    assert 0 <= same < 0.05 * far


def test_feature_statistics():
    x = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    mu, sigma = fid.feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError):
        fid.feature_statistics(x[:, 0])


def test_frechet_distance_singular_product_falls_back_to_eps(monkeypatch):
    rng = np.random.default_rng(5)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = np.diag([1.0, 2.0, 0.0, 0.0]), np.diag([0.5, 0.0, 3.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
    real_sqrtm, calls = evaluation.linalg.sqrtm, []

    def sqrtm_failing_once(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(evaluation.linalg, "sqrtm", sqrtm_failing_once)
    with pytest.warns(RuntimeWarning, match="singular"):
        got = fid.frechet_distance(mu1, s1, mu2, s2, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(4)) @ (s2 + 1e-6 * np.eye(4)))
    assert got == pytest.approx(expected, abs=1e-2)


def test_frechet_distance_rejects_large_imaginary_parts(monkeypatch):
    monkeypatch.setattr(evaluation.linalg, "sqrtm", lambda m: np.eye(2) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    monkeypatch.setattr(evaluation.linalg, "sqrtm", lambda m: np.eye(2) * (1 + 1e-9j))
    assert fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def test_avg_pool_excludes_padding_and_max_pool_ignores_it():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3) - 60.0
    got = np.asarray(fid.avg_pool_exclude_pad(jnp.asarray(x)))
    want = np.empty_like(x)
    for i in range(4):
        for j in range(5):
            win = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
            want[:, i, j] = win.mean(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    got = np.asarray(fid.max_pool(jnp.asarray(x), 3, 1, 1))  # all-negative corner: pad is -inf
    want = np.empty_like(x)
    for i in range(4):
        for j in range(5):
            want[:, i, j] = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(got, want)
    assert fid.max_pool(jnp.asarray(x), 3, 2).shape == (2, 1, 2, 3)


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
    np.testing.assert_allclose(np.asarray(fid.resize_bilinear(jnp.asarray(x), size)), want,
                               atol=1e-5)


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
    abstract = jax.eval_shape(fid.InceptionV3FID().init, jax.random.PRNGKey(0),
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
    assert fid.expected_state_dict_shapes() == expected


def _random_variables(seed=0):
    """Full random variables (He-scaled kernels, BN near identity) without running model.init."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(fid.InceptionV3FID(resize_input=False).init, jax.random.PRNGKey(0),
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
    out = jax.jit(fid.InceptionV3FID().apply)(random_variables, images)
    assert out.shape == (2, fid.FEATURE_DIM)
    assert bool(jnp.all(jnp.isfinite(out))) and bool(jnp.all(out >= 0))  # mean of ReLUs
    assert float(jnp.abs(out[0] - out[1]).max()) > 0


def test_inception_features_batches_grayscale_and_uint8(random_variables):
    rng = np.random.default_rng(8)
    gray = rng.integers(0, 256, (3, 75, 75, 1), dtype=np.uint8)
    feats = fid.inception_features(gray, random_variables, batch_size=2, resize_input=False)
    assert feats.shape == (3, 2048) and feats.dtype == np.float32 and np.isfinite(feats).all()
    rgb = np.repeat(gray, 3, axis=-1).astype(np.float32) / 255.0
    one_batch = fid.inception_features(rgb, random_variables, batch_size=50, resize_input=False)
    np.testing.assert_allclose(feats, one_batch, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid.inception_features(rgb * 2 - 1, random_variables, resize_input=False)


# ----------------------------------------------------------------------------------------------
# The loader, on torch.save-format files written with a stand-in `torch` module
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fake_torch():
    """Modules `torch` and `torch._utils` with just the names a state_dict pickle refers to."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used to be pickled by reference")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                         collections.OrderedDict())


def _contiguous(storage, shape, offset=0):
    strides = [int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    return _Tensor(storage, offset, shape, strides)


def _write_torch_file(path, state_dict, fmt="zip", prefix="archive"):
    """torch.save(state_dict) of _Tensor values, in the zip (>= 1.6) or legacy format."""
    storages = {}
    for tensor in state_dict.values():
        storages[tensor.storage.key] = tensor.storage
    with _fake_torch() as torch:
        def storage_type(storage):
            return torch.LongStorage if storage.array.dtype == np.int64 else torch.FloatStorage

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if not isinstance(obj, _Storage):
                    return None
                pid = ("storage", storage_type(obj), obj.key, "cpu", obj.array.size)
                return pid if fmt == "zip" else pid + (None,)

        body = io.BytesIO()
        Pickler(body, protocol=2).dump(collections.OrderedDict(state_dict))
    raw = {key: storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes()
           for key, storage in storages.items()}
    if fmt == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{prefix}/data.pkl", body.getvalue())
            zf.writestr(f"{prefix}/byteorder", "little")
            for key, data in raw.items():
                zf.writestr(f"{prefix}/data/{key}", data)
            zf.writestr(f"{prefix}/version", "3\n")
    else:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001,
                           {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, f, protocol=2)
            f.write(body.getvalue())
            keys = sorted(raw)
            pickle.dump(keys, f, protocol=2)
            for key in keys:
                f.write(struct.pack("<q", storages[key].array.size) + raw[key])


def _full_state_dict(drop=(), reshape=None):
    """Every expected key: Conv2d_1a_3x3 with known values, the rest stride-0 views of one float,
    plus keys the loader must ignore. Returns (state_dict of _Tensor, known arrays)."""
    rng = np.random.default_rng(9)
    known = {"Conv2d_1a_3x3.conv.weight": rng.normal(size=(32, 3, 3, 3)).astype(np.float32)}
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        known[f"Conv2d_1a_3x3.bn.{leaf}"] = rng.normal(size=32).astype(np.float32)
    const = _Storage("const", np.array([0.25], np.float32))
    shared = _Storage("shared", np.concatenate([known[f"Conv2d_1a_3x3.bn.{leaf}"]
                                                for leaf in ("weight", "bias")]))
    sd = {}
    for key, shape in fid.expected_state_dict_shapes().items():
        if key in drop:
            continue
        shape = reshape.get(key, shape) if reshape else shape
        if key == "Conv2d_1a_3x3.conv.weight":
            sd[key] = _contiguous(_Storage("w1a", known[key]), shape)
        elif key == "Conv2d_1a_3x3.bn.weight":  # two tensors sharing one storage, at offsets
            sd[key] = _contiguous(shared, shape)
        elif key == "Conv2d_1a_3x3.bn.bias":
            sd[key] = _contiguous(shared, shape, offset=32)
        elif key.startswith("Conv2d_1a_3x3.bn."):
            sd[key] = _contiguous(_Storage(key.rsplit(".", 1)[1], known[key]), shape)
        else:
            sd[key] = _Tensor(const, 0, shape, [0] * len(shape))
    sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = _Tensor(_Storage("nbt", np.array([7], np.int64)),
                                                         0, (), ())
    sd["fc.weight"] = _Tensor(const, 0, (1008, 2048), (0, 0))
    return sd, known


@pytest.mark.parametrize("fmt,prefix", [("zip", "archive"), ("zip", "pt_inception"),
                                        ("legacy", None)])
def test_load_inception_params_from_torch_file(tmp_path, fmt, prefix):
    sd, known = _full_state_dict()
    path = tmp_path / "weights.pth"
    _write_torch_file(path, sd, fmt=fmt, prefix=prefix)

    raw = fid.read_torch_state_dict(str(path))
    assert raw["Conv2d_1a_3x3.bn.num_batches_tracked"].dtype == np.int64
    assert int(raw["Conv2d_1a_3x3.bn.num_batches_tracked"]) == 7

    variables = fid.load_inception_params(str(path))
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
    abstract = jax.eval_shape(fid.InceptionV3FID().init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
    assert jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(variables)
    assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(abstract),
                                                  jax.tree_util.tree_leaves(variables)))


def test_reads_strided_tensor_views(tmp_path):
    storage = _Storage("s", np.arange(20, dtype=np.float32))
    sd = {"transposed": _Tensor(storage, 2, (3, 4), (1, 3)),  # a .t() view of a [4, 3] at 2
          "every_other": _Tensor(storage, 1, (5,), (2,)),
          "broadcast": _Tensor(storage, 7, (2, 3), (0, 1))}
    path = tmp_path / "views.pth"
    _write_torch_file(path, sd)
    got = fid.read_torch_state_dict(str(path))
    np.testing.assert_array_equal(got["transposed"], (np.arange(12) + 2).reshape(4, 3).T)
    np.testing.assert_array_equal(got["every_other"], [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(got["broadcast"], [[7, 8, 9], [7, 8, 9]])
    sd = {"too_long": _Tensor(storage, 15, (6,), (1,))}
    _write_torch_file(path, sd)
    with pytest.raises(ValueError, match="exceeds"):
        fid.read_torch_state_dict(str(path))


def test_missing_weight_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        fid.load_inception_params(str(tmp_path / "pt_inception-2015-12-05-6726825d.pth"))
    message = str(info.value)
    assert fid.FID_WEIGHTS_URL in message and "\n" not in message
    assert fid.FID_WEIGHTS_URL == ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                                   "fid_weights/pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        fid.inception_features(np.zeros((1, 8, 8, 3), np.uint8), str(tmp_path / "nope.pth"))


def test_missing_or_misshapen_key_is_named(tmp_path):
    path = tmp_path / "weights.pth"
    _write_torch_file(path, _full_state_dict(drop={"Mixed_6c.branch7x7_2.bn.running_var"})[0])
    with pytest.raises(ValueError, match=r"Mixed_6c\.branch7x7_2\.bn\.running_var"):
        fid.load_inception_params(str(path))
    bad = {"Mixed_5b.branch_pool.conv.weight": (64, 192, 1, 1)}  # pool_features is 32
    _write_torch_file(path, _full_state_dict(reshape=bad)[0])
    with pytest.raises(ValueError, match=r"Mixed_5b\.branch_pool\.conv\.weight"):
        fid.load_inception_params(str(path))


def test_refuses_pickles_with_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="print"):
        fid.read_torch_state_dict(str(path))
