"""The Fréchet distance against closed forms (1-D, diagonal covariances), its symmetry, and the
pytorch-fid safeguards (eps fallback for a singular product, imaginary parts)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdiff.metrics import frechet
from jaxdiff.metrics.frechet import (feature_statistics, frechet_distance,
                                     frechet_distance_from_features)


def _random_covariance(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_is_zero_for_identical_statistics():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), _random_covariance(rng, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_distance_1d_closed_form():
    m1, s1, m2, s2 = 0.3, 1.7, -1.2, 0.4  # means and standard deviations
    expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
    assert frechet_distance(m1, s1**2, m2, s2**2) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance([m1], [[s1**2]], [m2], [[s2**2]]) == pytest.approx(expected,
                                                                             rel=1e-12)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    a, b = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    s1, s2 = _random_covariance(rng, 12), _random_covariance(rng, 12)
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert d12 > 0
    assert d12 == pytest.approx(d21, rel=1e-9)


def test_frechet_distance_from_features_same_vs_shifted_distribution():
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(8, 8))
    draw = lambda: rng.normal(size=(4000, 8)) @ mix  # noqa: E731
    a, b, shifted = draw(), draw(), draw() + 1.0
    same = frechet_distance_from_features(a, b)
    far = frechet_distance_from_features(a, shifted)
    assert far == pytest.approx(8.0, rel=0.15)  # ||shift||^2 = 8, covariances equal
    assert 0 <= same < 0.05 * far


def test_feature_statistics():
    x = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError):
        feature_statistics(x[:, 0])


def test_frechet_distance_singular_product_falls_back_to_eps(monkeypatch):
    rng = np.random.default_rng(5)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = np.diag([1.0, 2.0, 0.0, 0.0]), np.diag([0.5, 0.0, 3.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2)
    real_sqrtm, calls = frechet.linalg.sqrtm, []

    def sqrtm_failing_once(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(frechet.linalg, "sqrtm", sqrtm_failing_once)
    with pytest.warns(RuntimeWarning, match="singular"):
        got = frechet_distance(mu1, s1, mu2, s2, eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(4)) @ (s2 + 1e-6 * np.eye(4)))
    assert got == pytest.approx(expected, abs=1e-2)


def test_frechet_distance_rejects_large_imaginary_parts(monkeypatch):
    monkeypatch.setattr(frechet.linalg, "sqrtm", lambda m: np.eye(2) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    monkeypatch.setattr(frechet.linalg, "sqrtm", lambda m: np.eye(2) * (1 + 1e-9j))
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0)
