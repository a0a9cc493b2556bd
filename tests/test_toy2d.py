"""The 2-D toy sets (jaxdiff.data.toy2d): seeded draws, each set's shape against its closed form
(the seed's butterfly curve, the checkerboard's squares, the moons' half circles, the eight
Gaussians' centres), and the argument checks."""

import numpy as np
import pytest

from jaxdiff.data import TOY2D_NAMES, make_point_source, sample_toy2d

from oracles import MOONS_MEAN


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
    # the mean is (1/2, 1/4) (see oracles.MOONS_MEAN) and each coordinate's sd is below 1
    np.testing.assert_allclose(points.mean(0), MOONS_MEAN, atol=5 / np.sqrt(20_000))


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
