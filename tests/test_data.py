"""Toy sets, array files, standardisation, and batches as a pure function of the step."""

import json

import numpy as np
import pytest

from jaxdiff.data import (TOY2D_NAMES, PointSource, Standardizer, load_array, make_point_source,
                          sample_toy2d)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_toy_sets_are_seeded(name):
    a = sample_toy2d(name, 500, 1)
    assert a.shape == (500, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, sample_toy2d(name, 500, 1))
    np.testing.assert_array_equal(a, sample_toy2d(name, 500, np.random.default_rng(1)))
    assert not np.array_equal(a, sample_toy2d(name, 500, 2))


def butterfly_curve(theta):
    r = np.exp(np.cos(theta)) - 2 * np.cos(4 * theta) + np.sin(theta / 12) ** 5
    return np.stack([r * np.sin(theta), r * np.cos(theta)], 1)


def test_butterfly_lies_on_the_seed_curve():
    points = sample_toy2d("butterfly", 1000, np.random.default_rng(7), noise=0.0)
    theta = np.random.default_rng(7).uniform(0, 2 * np.pi, 1000)  # the same stream of draws
    assert theta.min() < 0.1 and theta.max() > 2 * np.pi - 0.1  # random over the whole turn
    np.testing.assert_allclose(points, butterfly_curve(theta), rtol=1e-5, atol=1e-5)


def test_butterfly_default_noise_is_gaussian_with_std_0_05():
    n = 20_000
    noisy = sample_toy2d("butterfly", n, 3).astype(np.float64)
    clean = butterfly_curve(np.random.default_rng(3).uniform(0, 2 * np.pi, n))
    residual = noisy - clean
    # std of a sample std of n normals is about sigma / sqrt(2 n); the mean's is sigma / sqrt(n)
    np.testing.assert_allclose(residual.std(0), 0.05, atol=5 * 0.05 / np.sqrt(2 * n))
    np.testing.assert_allclose(residual.mean(0), 0.0, atol=5 * 0.05 / np.sqrt(n))


def test_checkerboard_points_are_uniform_on_the_on_squares():
    n = 16_000
    points = sample_toy2d("checkerboard", n, 0).astype(np.float64)
    column, row = np.floor(points[:, 0] + 2), np.floor(points[:, 1] + 2)
    assert ((column + row) % 2 == 0).all() and np.abs(points).max() <= 2
    counts = np.bincount((4 * row + column).astype(int), minlength=16)
    on = counts[[4 * r + c for r in range(4) for c in range(4) if (r + c) % 2 == 0]]
    # each of the 8 squares holds Binomial(n, 1/8) points: sd sqrt(n / 8 * 7 / 8)
    assert np.abs(on - n / 8).max() < 5 * np.sqrt(n * 7 / 64)


def test_moons_lie_on_two_half_circles_with_the_known_mean():
    points = sample_toy2d("moons", 20_000, 0, noise=0.0).astype(np.float64)
    upper = np.abs(points[:, 0] ** 2 + points[:, 1] ** 2 - 1) < 1e-5
    lower = np.abs((points[:, 0] - 1) ** 2 + (points[:, 1] - 0.5) ** 2 - 1) < 1e-5
    assert (upper | lower).all()
    assert (points[upper, 1] >= -1e-6).all() and (points[lower, 1] <= 0.5 + 1e-6).all()
    # E(cos t) = 0 and E(sin t) = 2 / pi for t ~ U(0, pi); the moons are mirror images, so the
    # mean is (1/2, 1/4) and each coordinate's sd is below 1.
    np.testing.assert_allclose(points.mean(0), [0.5, 0.25], atol=5 / np.sqrt(20_000))


def test_gaussians8_centres():
    points = sample_toy2d("gaussians8", 4000, 0, noise=0.0).astype(np.float64)
    angles = np.round(np.arctan2(points[:, 1], points[:, 0]) / (np.pi / 4)) % 8
    np.testing.assert_allclose(np.hypot(points[:, 0], points[:, 1]), 2.0, rtol=1e-6)
    assert set(angles.astype(int)) == set(range(8))


def test_bad_toy_arguments():
    with pytest.raises(ValueError, match="data.name='unicorn'") as error:
        sample_toy2d("unicorn", 10, 0)
    assert all(name in str(error.value) for name in TOY2D_NAMES)
    for n in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"n={n!r}"):
            sample_toy2d("moons", n, 0)
    with pytest.raises(ValueError, match="data.noise=-0.1"):
        sample_toy2d("moons", 10, 0, noise=-0.1)
    with pytest.raises(ValueError, match="data.name='unicorn'"):
        make_point_source("unicorn", seed=0)


def test_array_files(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "b.npz", x=data, data=data + 1, labels=np.arange(6))
    np.savez(tmp_path / "c.npz", data=data, labels=np.arange(6))
    np.savez_compressed(tmp_path / "d.npz", only=data)
    for name in ("a.npy", "b.npz", "c.npz", "d.npz"):
        loaded = load_array(str(tmp_path / name))
        assert loaded.dtype == np.float32
        np.testing.assert_array_equal(loaded, data)
    for shape in ((2, 1), (3, 7)):
        np.save(tmp_path / "e.npy", np.ones(shape, np.int64))
        assert load_array(str(tmp_path / "e.npy")).shape == shape


def make_bad_files(tmp_path):
    np.save(tmp_path / "3d.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "1d.npy", np.zeros(5))
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan], [1, 2]]))
    np.save(tmp_path / "inf.npy", np.array([[0.0, 1.0], [np.inf, 2]]))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", np.ones((3, 2), np.complex64))
    np.save(tmp_path / "object.npy", np.array([[1, None], [2, 3]], dtype=object),
            allow_pickle=True)
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    np.savez(tmp_path / "empty.npz")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    return [("missing.npy", "does not exist"), ("3d.npy", "(2, 2, 2)"), ("1d.npy", "[N, D]"),
            ("one.npy", "2 rows"), ("nan.npy", "non-finite"), ("inf.npy", "non-finite"),
            ("text.npy", "non-numeric"), ("complex.npy", "non-numeric"),
            ("object.npy", "cannot be read"), ("two.npz", "'a', 'b'"),
            ("empty.npz", "no arrays"), ("junk.npy", "cannot be read"),
            ("junk.npz", "cannot be read"), ("x.csv", ".npy or .npz")]


def test_bad_array_files_name_the_path(tmp_path):
    for name, needle in make_bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as error:
            load_array(path)
        message = str(error.value)
        assert f"data.path={path!r}" in message and needle in message, message
        assert "\n" not in message, message


def test_array_source_needs_a_path():
    for path in (None, ""):
        with pytest.raises(ValueError, match=f"data.path={path!r}"):
            make_point_source("array", path=path, seed=0)


def test_array_batches_follow_the_epoch_permutations(tmp_path):
    count, batch_size, seed = 10, 4, 3
    # column 0 is the example's index, so a batch says exactly which examples it holds
    data = np.stack([np.arange(count), np.random.default_rng(0).normal(size=count)], 1)
    np.save(tmp_path / "d.npy", data)
    source = make_point_source("array", path=str(tmp_path / "d.npy"), seed=seed)
    assert isinstance(source, PointSource) and source.dim == 2 and source.name == "array"

    def indices(batch):
        return np.round(source.standardizer.inverse(batch)[:, 0]).astype(int)

    steps = 10  # 40 positions: 4 epochs, batches 2 and 7 straddle an epoch edge
    first = [source.global_batch(step, batch_size) for step in range(steps)]
    order = np.concatenate([indices(b) for b in first])
    for epoch in range(4):
        expected = np.random.default_rng([seed, epoch]).permutation(count)
        np.testing.assert_array_equal(order[epoch * count:(epoch + 1) * count], expected)
    assert not np.array_equal(order[:count], order[count:2 * count])
    # any call order, and a new source (a resumed run), gives the same batches
    for step in (9, 2, 0, 7, 7, 5):
        np.testing.assert_array_equal(source.global_batch(step, batch_size), first[step])
    resumed = make_point_source("array", path=str(tmp_path / "d.npy"), seed=seed)
    np.testing.assert_array_equal(resumed.global_batch(7, batch_size), first[7])
    # batch_size larger than N wraps over several epochs
    big = indices(source.global_batch(1, 25))  # positions 25..49: epochs 2, 3, 4
    np.testing.assert_array_equal(big[5:15], np.random.default_rng([seed, 3]).permutation(count))


def test_array_source_standardises_and_draws_fresh_points(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 3)) * [1, 10, 0] + [0, 5, 7]
    np.save(tmp_path / "d.npy", data)
    source = make_point_source("array", path=str(tmp_path / "d.npy"), seed=1)
    batch = source.global_batch(0, 50)  # one whole epoch
    np.testing.assert_allclose(batch.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(batch.std(0), [1, 1, 0], atol=1e-5)  # constant column stays 0
    fresh = source.fresh(200, seed=4)['x']  # more than N: drawn with replacement
    assert fresh.shape == (200, 3)
    rows = {tuple(r) for r in data.astype(np.float32)}
    assert all(tuple(r) in rows for r in fresh)
    np.testing.assert_array_equal(fresh, source.fresh(200, seed=4)['x'])
    subset = source.fresh(50, seed=5)['x']  # without replacement when n <= N
    assert len({tuple(r) for r in subset}) == 50


def test_toy_batches_are_standardised_and_pure():
    source = make_point_source("moons", seed=0)
    assert source.dim == 2
    n = 20_000
    batch = source.global_batch(5, n)
    assert batch.dtype == np.float32 and batch.shape == (n, 2)
    # the standardiser was fit on other draws: mean and std agree up to sampling error
    np.testing.assert_allclose(batch.mean(0), 0, atol=5 / np.sqrt(n))
    np.testing.assert_allclose(batch.std(0), 1, atol=5 / np.sqrt(n))
    np.testing.assert_array_equal(source.global_batch(5, 100),
                                  make_point_source("moons", seed=0).global_batch(5, 100))
    assert not np.array_equal(source.global_batch(5, 100), source.global_batch(6, 100))
    other_seed = make_point_source("moons", seed=1)
    assert not np.array_equal(source.global_batch(5, 100), other_seed.global_batch(5, 100))
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match=f"batch_size={bad!r}"):
            source.global_batch(0, bad)
    with pytest.raises(ValueError, match="step=-1"):
        source.global_batch(-1, 10)


def test_toy_fresh_is_in_data_space():
    source = make_point_source("moons", seed=0, num_fit=1000)
    fresh = source.fresh(20_000, seed=9)['x']
    np.testing.assert_allclose(fresh.mean(0), [0.5, 0.25], atol=5 / np.sqrt(20_000))  # see above
    np.testing.assert_array_equal(fresh, source.fresh(20_000, seed=9)['x'])
    assert not np.array_equal(fresh[:100], source.fresh(100, seed=10)['x'])


def test_standardizer_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(100, 3)) * [1, 10, 0] + [0, 5, 7]
    scaler = Standardizer.fit(x)
    np.testing.assert_allclose(scaler.mean, x.mean(0))
    np.testing.assert_allclose(scaler.std, [x[:, 0].std(), x[:, 1].std(), 1e-6])
    z = scaler.transform(x)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 2], 0)
    np.testing.assert_allclose(scaler.inverse(z), x, rtol=1e-5, atol=1e-5)
    json.dumps(scaler.to_dict())
    scaler.save(str(tmp_path / "s.json"))
    loaded = Standardizer.load(str(tmp_path / "s.json"))
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    np.testing.assert_array_equal(loaded.std, scaler.std)
    restored = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.transform(x), z)
