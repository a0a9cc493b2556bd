"""2-D toy distributions, NumPy only; each draws [n, 2] float32 points from an explicit rng."""

from __future__ import annotations

from typing import Callable

import numpy as np


def butterfly(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The butterfly curve of seed 001 (Fay 1989): r = exp(cos t) - 2 cos 4t + sin^5(t / 12),
    x = r sin t, y = r cos t, with t ~ U(0, 2 pi) and Gaussian noise of std `noise`."""
    theta = rng.uniform(0.0, 2.0 * np.pi, n)
    r = np.exp(np.cos(theta)) - 2.0 * np.cos(4.0 * theta) + np.sin(theta / 12.0) ** 5
    points = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    return points + noise * rng.standard_normal((n, 2))


def moons(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Two interleaving half circles (as scikit-learn's make_moons)."""
    theta = rng.uniform(0.0, np.pi, n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(theta), np.cos(theta))
    y = np.where(lower, 0.5 - np.sin(theta), np.sin(theta))
    return np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))


def swiss_roll(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The (x, z) plane of the swiss roll: t ~ U(1.5 pi, 4.5 pi), (t cos t, t sin t) / 5."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0
    return points + noise * rng.standard_normal((n, 2))


def gaussians8(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Eight Gaussians of std `noise` centred on a circle of radius 2."""
    angles = rng.integers(0, 8, n) * (np.pi / 4.0)
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + noise * rng.standard_normal((n, 2))


def checkerboard(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Uniform on the 8 "black" squares of a 4x4 board on [-2, 2]^2 (Grathwohl et al. 2019)."""
    x = rng.uniform(-2.0, 2.0, n)
    column = np.floor(x + 2.0)  # 0..3
    row_offset = rng.integers(0, 2, n) * 2.0
    # squares where (row + column) is even are black
    y = rng.uniform(0.0, 1.0, n) + row_offset + (column % 2) - 2.0
    return np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))


def spirals(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Two interleaved spirals, r = theta, theta ~ sqrt(U) * 3 pi, the second rotated by pi."""
    theta = np.sqrt(rng.random(n)) * 3.0 * np.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    points = sign[:, None] * np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    return points / 3.0 + noise * rng.standard_normal((n, 2))


_TOY2D: dict[str, tuple[Callable, float]] = {
    "butterfly": (butterfly, 0.05),
    "moons": (moons, 0.05),
    "swiss_roll": (swiss_roll, 0.1),
    "gaussians8": (gaussians8, 0.1),
    "checkerboard": (checkerboard, 0.0),
    "spirals": (spirals, 0.1),
}
TOY2D_NAMES = tuple(_TOY2D)


def sample_toy2d(name: str, n: int, seed_or_rng, noise: float | None = None) -> np.ndarray:
    """n points of the toy set `name` as float32 [n, 2]; noise None uses the set's default."""
    if name not in _TOY2D:
        raise ValueError(f"data.name={name!r} is not a known data set; choose one of "
                         f"{', '.join(TOY2D_NAMES)} or array")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of points n={n!r} must be an integer >= 1")
    sampler, default_noise = _TOY2D[name]
    rng = np.random.default_rng(seed_or_rng)
    return sampler(int(n), rng, default_noise if noise is None else noise).astype(np.float32)
