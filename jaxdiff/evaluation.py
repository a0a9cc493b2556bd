"""Sample-quality metrics for point data (NumPy float64; no Flax, Orbax or TFDS)."""

from __future__ import annotations

import numpy as np


def _equal_size(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two point sets [N, D] of the same D, got {x.shape} and {y.shape}")
    n = min(len(x), len(y))  # the first n points of each: deterministic, no resampling
    return x[:n], y[:n]


def sliced_wasserstein(x, y, *, num_projections: int = 512, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    SW_2(x, y) = sqrt(E_theta[W_2^2(<theta, x>, <theta, y>)]) over uniform unit directions
    theta; each 1-D W_2^2 between equal-size samples is the mean squared difference of the
    sorted projections. Sets of different sizes are cut to the smaller size."""
    x, y = _equal_size(x, y)
    directions = np.random.default_rng(seed).standard_normal((x.shape[1], num_projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    projected_x = np.sort(x @ directions, axis=0)
    projected_y = np.sort(y @ directions, axis=0)
    return float(np.sqrt(np.mean((projected_x - projected_y) ** 2)))


def _mean_distance(x: np.ndarray, y: np.ndarray, exclude_diagonal: bool, block: int = 1024) -> float:
    total = 0.0
    for start in range(0, len(x), block):
        part = x[start:start + block]
        squared = (np.sum(part**2, 1)[:, None] + np.sum(y**2, 1)[None, :] - 2.0 * part @ y.T)
        total += np.sqrt(np.maximum(squared, 0.0)).sum()
    pairs = len(x) * len(y)
    if exclude_diagonal:  # the diagonal distances are 0 (up to rounding) and are not pairs
        pairs -= len(x)
    return total / pairs


def energy_distance(x, y) -> float:
    """Energy distance (Székely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|, with the
    within-set means taken over distinct pairs (unbiased). It is >= 0 and 0 iff X ~ Y."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(2.0 * _mean_distance(x, y, False) - _mean_distance(x, x, True)
                 - _mean_distance(y, y, True))


def _kth_neighbour_radius(x: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    radii = np.empty(len(x))
    for start in range(0, len(x), block):
        part = x[start:start + block]
        squared = np.sum(part**2, 1)[:, None] + np.sum(x**2, 1)[None, :] - 2.0 * part @ x.T
        # index k, not k - 1: the nearest "neighbour" of each point is itself
        radii[start:start + block] = np.sqrt(np.maximum(np.partition(squared, k, axis=1)[:, k], 0))
    return radii


def _coverage(points: np.ndarray, reference: np.ndarray, radii: np.ndarray,
              block: int = 1024) -> float:
    inside = 0
    for start in range(0, len(points), block):
        part = points[start:start + block]
        squared = (np.sum(part**2, 1)[:, None] + np.sum(reference**2, 1)[None, :]
                   - 2.0 * part @ reference.T)
        inside += int((squared <= radii[None, :] ** 2).any(axis=1).sum())
    return inside / len(points)


def precision_recall(samples, data, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): the data manifold is the union
    of balls around each data point reaching its k-th nearest data neighbour; precision is the
    fraction of samples inside it, recall the fraction of data inside the samples' manifold.
    Unlike sliced distances, precision drops at once when samples blur across empty space."""
    samples, data = np.asarray(samples, np.float64), np.asarray(data, np.float64)
    precision = _coverage(samples, data, _kth_neighbour_radius(data, k))
    recall = _coverage(data, samples, _kth_neighbour_radius(samples, k))
    return precision, recall


def point_quality_report(samples, fresh_a, fresh_b, *, seed: int = 0) -> dict[str, float]:
    """Distances from `samples` to fresh data `fresh_a`, next to the floor: the same distance
    between two independent fresh draws `fresh_a` and `fresh_b` of the same size."""
    precision, recall = precision_recall(samples, fresh_a)
    precision_floor, recall_floor = precision_recall(fresh_b, fresh_a)
    return {
        "swd": sliced_wasserstein(samples, fresh_a, seed=seed),
        "swd_floor": sliced_wasserstein(fresh_b, fresh_a, seed=seed),
        "energy": energy_distance(samples, fresh_a),
        "energy_floor": energy_distance(fresh_b, fresh_a),
        "precision": precision,
        "precision_floor": precision_floor,
        "recall": recall,
        "recall_floor": recall_floor,
    }
