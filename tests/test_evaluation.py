"""Point metrics against closed forms."""

import numpy as np
from scipy.stats import norm

from jaxdiff import plotting
from jaxdiff.evaluation import (energy_distance, point_quality_report, precision_recall,
                                sliced_wasserstein)


def test_sliced_wasserstein_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    assert sliced_wasserstein(x, x) == 0.0
    # 1-D: every projection is +-1, so SW = W_2(N(0,1), N(m,1)) = |m| (plus sampling noise)
    a, b = rng.normal(size=(20_000, 1)), rng.normal(size=(20_000, 1)) + 0.7
    assert abs(sliced_wasserstein(a, b) - 0.7) < 0.03
    # 2-D isotropic shift m: E_theta[<theta, m>^2] = |m|^2 / 2, so SW = |m| / sqrt(2)
    shift = np.array([0.6, -0.8])
    y = rng.normal(size=(20_000, 2)) + shift
    x = rng.normal(size=(20_000, 2))
    assert abs(sliced_wasserstein(x, y, num_projections=2000) - 1 / np.sqrt(2)) < 0.03


def expected_abs(mu, sd):
    """E|Z| for Z ~ N(mu, sd^2)."""
    return sd * np.sqrt(2 / np.pi) * np.exp(-mu**2 / (2 * sd**2)) + mu * (1 - 2 * norm.cdf(-mu / sd))


def test_energy_distance_closed_form():
    rng = np.random.default_rng(1)
    m = 0.8
    x, y = rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1)) + m
    # X - Y ~ N(-m, 2), X - X' ~ N(0, 2)
    expected = 2 * expected_abs(m, np.sqrt(2)) - 2 * expected_abs(0, np.sqrt(2))
    assert abs(energy_distance(x, y) - expected) < 0.03
    assert abs(energy_distance(x, rng.normal(size=(3000, 1)))) < 0.01


def test_report_floor_below_shifted_samples():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    report = point_quality_report(a + 0.5, a, b)
    assert set(report) == {"swd", "swd_floor", "energy", "energy_floor", "precision",
                           "precision_floor", "recall", "recall_floor"}
    assert report["swd"] > 3 * report["swd_floor"] and report["energy"] > report["energy_floor"]


def test_precision_recall():
    rng = np.random.default_rng(4)
    data = rng.uniform(0, 1, size=(3000, 2))  # the unit square
    # samples half inside the square, half far away: precision ~ 0.5, recall ~ 1
    samples = np.concatenate([rng.uniform(0, 1, size=(1500, 2)),
                              rng.uniform(5, 6, size=(1500, 2))])
    precision, recall = precision_recall(samples, data)
    assert abs(precision - 0.5) < 0.03 and recall > 0.95  # edges of the square: not quite 1
    # samples covering only the left half: precision ~ 1, recall ~ 0.5
    precision, recall = precision_recall(rng.uniform(0, [0.5, 1], size=(3000, 2)), data)
    assert precision > 0.95 and abs(recall - 0.5) < 0.05


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200, 3))
    paths = [
        plotting.plot_forward_process({0: points, 10: points * 2}, str(tmp_path / "f.png")),
        plotting.plot_samples_vs_data(points, points + 1, str(tmp_path / "s.png")),
        plotting.plot_points(points, str(tmp_path / "p.png")),
        plotting.plot_trajectory(rng.normal(size=(30, 100, 2)), str(tmp_path / "t.png")),
        plotting.save_image_grid(rng.uniform(size=(10, 8, 8, 1)), str(tmp_path / "g.png")),
        plotting.save_image_grid(rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8),
                                 str(tmp_path / "g3.png")),
    ]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
