"""Point metrics against closed forms for Gaussians and brute-force definitions.

Tolerances come from the sample sizes: a U-statistic's standard deviation is, to first order,
sqrt(Var h_x(X) / n + Var h_y(Y) / m) with h the first Hoeffding projection (Hoeffding 1948),
computed below from closed forms; checks allow 5 of these.
"""

import numpy as np
import pytest
from scipy.stats import norm

from jaxdiff.metrics.points import (DEFAULT_BANDWIDTHS, energy_distance, mmd_rbf,
                                    point_quality_report, precision_recall, sliced_wasserstein)


def expected_abs(mu, sd):
    """E|Z| for Z ~ N(mu, sd^2)."""
    return (sd * np.sqrt(2 / np.pi) * np.exp(-mu**2 / (2 * sd**2))
            + mu * (1 - 2 * norm.cdf(-mu / sd)))


def test_sliced_wasserstein_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(3000, 3))
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[::-1]) == 0.0  # order does not matter


def test_sliced_wasserstein_1d_is_the_mean_shift():
    # in D = 1 every direction is +-1, so SW_2 = W_2(N(0,1), N(m,1)) = |m|; the estimate is off
    # by the difference of the sample means, sd sqrt(2 / n)
    n, m = 20_000, 0.7
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, 1)), rng.normal(size=(n, 1)) + m
    assert abs(sliced_wasserstein(a, b, num_projections=4) - m) < 5 * np.sqrt(2 / n)


def test_sliced_wasserstein_2d_shift():
    # E_theta[(theta . m)^2] = |m|^2 E[cos^2] = |m|^2 / 2 for uniform theta in D = 2, so
    # SW_2 = |m| / sqrt(2). Errors: the sample means (sd 1 / sqrt(n) along m / sqrt(2)) and the
    # P random directions (cos^2 has sd sqrt(1/8), so SW has sd |m| / (4 sqrt(P))).
    n, p = 4000, 1000
    rng = np.random.default_rng(1)
    shift = np.array([0.6, -0.8])  # |m| = 1
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + shift
    sd = np.sqrt(1 / n + 1 / (16 * p))
    assert abs(sliced_wasserstein(x, y, num_projections=p) - 1 / np.sqrt(2)) < 5 * sd
    # different sizes: the larger set is subsampled, deterministically
    y_big = np.concatenate([y, rng.normal(size=(1000, 2)) + shift])
    value = sliced_wasserstein(x, y_big, num_projections=p)
    assert value == sliced_wasserstein(x, y_big, num_projections=p)
    assert abs(value - 1 / np.sqrt(2)) < 5 * sd


def brute_force(x, y, kernel):
    """2 mean k(x_i, y_j) - mean_{i != j} k(x_i, x_j) - mean_{i != j} k(y_i, y_j), directly."""
    def within(a):
        k = kernel(np.linalg.norm(a[:, None] - a[None], axis=-1))
        return (k.sum() - np.trace(k)) / (len(a) * (len(a) - 1))
    return 2 * kernel(np.linalg.norm(x[:, None] - y[None], axis=-1)).mean() - within(x) - within(y)


def test_energy_and_mmd_match_their_definitions():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(600, 3)), rng.normal(size=(300, 3)) * 1.5 + 0.2  # > one row block
    expected = brute_force(x, y, lambda d: d)
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10)

    bandwidths = (0.3, 1.0)

    def rbf(d):
        return sum(np.exp(-d**2 / (2 * s**2)) for s in bandwidths)
    # MMD_u^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) = -(the energy-like combination with k)
    assert mmd_rbf(x, y, bandwidths) == pytest.approx(-brute_force(x, y, rbf), rel=1e-10)


def test_energy_distance_closed_form():
    n, m = 4000, 0.8
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n, 1)), rng.normal(size=(n, 1)) + m
    # X - Y ~ N(-m, 2) and X - X' ~ N(0, 2)
    expected = 2 * expected_abs(m, np.sqrt(2)) - 2 * expected_abs(0, np.sqrt(2))
    # h_x(x) = 2 E|x - Y| - 2 E|x - X'| (h_y has the same variance by symmetry)
    grid = np.random.default_rng(2).normal(size=200_000)
    h = 2 * expected_abs(grid - m, 1) - 2 * expected_abs(grid, 1)
    sd = np.sqrt(2 * h.var() / n)
    assert abs(energy_distance(x, y) - expected) < 5 * sd
    # equal laws: the projection vanishes and the estimate shrinks like 1 / n, not 1 / sqrt(n)
    assert abs(energy_distance(x, rng.normal(size=(n, 1)))) < 20 / n
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)


def gaussian_kernel_mean(shift_squared, total_variance, bandwidths, dim):
    """E sum_s exp(-|Z|^2 / (2 s^2)) for Z ~ N(mu, total_variance I_dim), |mu|^2 = shift_squared:
    per dimension the Gaussian integral gives sqrt(s^2 / (s^2 + v)) exp(-mu_i^2 / (2 (s^2 + v)))."""
    s2 = np.asarray(bandwidths, np.float64)[:, None] ** 2
    factor = (s2 / (s2 + total_variance)) ** (dim / 2)
    shift_squared = np.atleast_1d(shift_squared)[None, :]
    return np.sum(factor * np.exp(-shift_squared / (2 * (s2 + total_variance))), axis=0)


def test_mmd_closed_form_for_shifted_gaussians():
    n, dim = 2000, 2
    shift = np.array([0.3, 0.4])
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    y = rng.normal(size=(n, dim)) + shift
    # X - X' ~ N(0, 2I), X - Y ~ N(-m, 2I)
    same = gaussian_kernel_mean(0.0, 2.0, DEFAULT_BANDWIDTHS, dim)[0]
    expected = 2 * same - 2 * gaussian_kernel_mean(shift @ shift, 2.0, DEFAULT_BANDWIDTHS, dim)[0]
    # h_x(x) = 2 E k(x, X') - 2 E k(x, Y): kernel means of N(x, I) and N(x - m, I)
    grid = np.random.default_rng(4).normal(size=(100_000, dim))
    h = 2 * (gaussian_kernel_mean(np.sum(grid**2, 1), 1.0, DEFAULT_BANDWIDTHS, dim)
             - gaussian_kernel_mean(np.sum((grid - shift) ** 2, 1), 1.0, DEFAULT_BANDWIDTHS, dim))
    sd = np.sqrt(2 * h.var() / n)
    assert abs(mmd_rbf(x, y) - expected) < 5 * sd
    assert expected > 5 * sd  # the shift is clearly detected
    assert abs(mmd_rbf(x, z)) < 20 / n  # equal laws: degenerate U-statistic, O(1 / n)


def test_report_floors_are_below_a_shifted_sample():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    report = point_quality_report(a + 0.5, a, b)
    for metric in ("swd", "energy", "mmd"):
        assert metric in report and f"{metric}_floor" in report
        assert report[metric] > 3 * abs(report[f"{metric}_floor"]), (metric, report)
    assert all(isinstance(value, float) for value in report.values())
    # swd and energy are in data space (scale with it); mmd sees standardised data (invariant)
    scaled = point_quality_report(1000 * (a + 0.5), 1000 * a, 1000 * b)
    assert scaled["swd"] == pytest.approx(1000 * report["swd"], rel=1e-9)
    assert scaled["energy"] == pytest.approx(1000 * report["energy"], rel=1e-6)
    assert scaled["mmd"] == pytest.approx(report["mmd"], rel=1e-6)


def test_precision_recall():
    rng = np.random.default_rng(4)
    data = rng.uniform(0, 1, size=(3000, 2))  # the unit square
    # half the samples inside the square, half far away: precision ~ 1/2, recall ~ 1
    samples = np.concatenate([rng.uniform(0, 1, size=(1500, 2)),
                              rng.uniform(5, 6, size=(1500, 2))])
    precision, recall = precision_recall(samples, data)
    assert abs(precision - 0.5) < 0.03 and recall > 0.95  # edges of the square: not quite 1
    # samples covering only the left half: precision ~ 1, recall ~ 1/2
    precision, recall = precision_recall(rng.uniform(0, [0.5, 1], size=(3000, 2)), data)
    assert precision > 0.95 and abs(recall - 0.5) < 0.05


def test_bad_inputs():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="differ in D"):
        sliced_wasserstein(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"x.shape=\(10,\)"):
        energy_distance(np.zeros(10), x)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd_rbf(x, x, bandwidths=(1.0, -1.0))


def test_report_of_diverged_samples_is_nan_not_an_error():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    samples = a.copy()
    samples[3] = np.inf
    report = point_quality_report(samples, a, b)
    assert np.isnan(report["swd"]) and np.isnan(report["mmd"]) and np.isnan(report["energy"])
    assert np.isfinite(report["swd_floor"]) and np.isfinite(report["mmd_floor"])
