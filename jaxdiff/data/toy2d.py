"""2-D toy distributions, NumPy only.

Each sampler is `(n, rng, noise) -> float32 [n, 2]`: it draws everything from the explicit
`np.random.Generator` it is given, so the same generator state always gives the same points.
`sample_toy2d` looks a set up by name and fills in its default noise.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ToySampler = Callable[[int, np.random.Generator, float], np.ndarray]


def _with_noise(points: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """points + noise * N(0, I), as float32. The normal draws are taken even when noise = 0 so
    that the rng stream (and thus every other draw) does not depend on the noise level."""
    return (points + noise * rng.standard_normal(points.shape)).astype(np.float32)


def butterfly(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The butterfly curve (Fay 1989) as used by the 2-D DDPM butterfly tutorial, with theta ~ U(0, 2 pi):

        r = exp(cos theta) - 2 cos(4 theta) + sin^5(theta / 12),
        (x, y) = (r sin theta, r cos theta) + noise * N(0, I).

    Fay's parametric form subtracts sin^5(t / 12) and runs t over [0, 12 pi]; the tutorial's plus
    sign and single turn are kept, so that the data set is the one that tutorial trains on.
    """
    theta = rng.uniform(0.0, 2.0 * np.pi, n)
    r = np.exp(np.cos(theta)) - 2.0 * np.cos(4.0 * theta) + np.sin(theta / 12.0) ** 5
    return _with_noise(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1), rng, noise)


def moons(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Two interleaving half circles, as scikit-learn's make_moons: with t ~ U(0, pi), the upper
    moon is (cos t, sin t) and the lower one (1 - cos t, 1/2 - sin t); each point picks a moon
    with probability 1/2."""
    t = rng.uniform(0.0, np.pi, n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(t), np.cos(t))
    y = np.where(lower, 0.5 - np.sin(t), np.sin(t))
    return _with_noise(np.stack([x, y], axis=1), rng, noise)


def swiss_roll(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The (x, z) plane of the swiss roll (Marsland 2009; scikit-learn's make_swiss_roll):
    t ~ U(3 pi / 2, 9 pi / 2), (x, z) = (t cos t, t sin t) / 5. The division by 5 is FFJORD's
    (Grathwohl et al. 2019) and brings the roll to about [-3, 3]."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.random(n))
    return _with_noise(np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0, rng, noise)


def gaussians8(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """A mixture of eight equally weighted Gaussians N(c_k, noise^2 I) with centres
    c_k = 2 (cos(k pi / 4), sin(k pi / 4)), k = 0..7, on the circle of radius 2."""
    angles = rng.integers(0, 8, n) * (np.pi / 4.0)
    return _with_noise(2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), rng, noise)


def checkerboard(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Uniform on the 8 "on" squares of a 4x4 board over [-2, 2]^2 (the FFJORD toy of Grathwohl
    et al. 2019, before their factor 2): the unit square with lower-left corner (i - 2, j - 2),
    i, j in 0..3, is on when i + j is even."""
    x = rng.uniform(-2.0, 2.0, n)
    column = np.floor(x + 2.0)
    # Two of the four rows of each column are on; which two is set by the column's parity.
    row = 2.0 * rng.integers(0, 2, n) + column % 2
    y = row - 2.0 + rng.uniform(0.0, 1.0, n)
    return _with_noise(np.stack([x, y], axis=1), rng, noise)


def spirals(n: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Two interleaved Archimedean spirals r = theta, the second rotated by pi, scaled by 1/3:
    theta = 3 pi sqrt(u), u ~ U(0, 1), so theta has density proportional to theta, which is
    close to uniform along the arc (ds = sqrt(1 + theta^2) dtheta)."""
    theta = 3.0 * np.pi * np.sqrt(rng.random(n))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    arms = sign * np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    return _with_noise(arms / 3.0, rng, noise)


# name -> (sampler, default noise std). Checkerboard is crisp by default so that its squares stay
# checkable; butterfly's 0.05 is the tutorial's.
_TOY2D: dict[str, tuple[ToySampler, float]] = {
    "butterfly": (butterfly, 0.05),
    "moons": (moons, 0.05),
    "swiss_roll": (swiss_roll, 0.1),
    "gaussians8": (gaussians8, 0.1),
    "checkerboard": (checkerboard, 0.0),
    "spirals": (spirals, 0.1),
}
TOY2D_NAMES: tuple[str, ...] = tuple(_TOY2D)


def check_toy2d_name(name: str) -> None:
    """Raise ValueError unless `name` is a toy set; the message also offers "array"."""
    if name not in _TOY2D:
        raise ValueError(f"data.name={name!r} is not a known data set; choose one of "
                         f"{', '.join(TOY2D_NAMES)}, array")


def default_noise(name: str) -> float:
    """The noise std that `sample_toy2d(name, ...)` uses when given noise=None."""
    check_toy2d_name(name)
    return _TOY2D[name][1]


def sample_toy2d(name: str, n: int, seed_or_rng: int | np.random.Generator | list[int],
                 noise: float | None = None) -> np.ndarray:
    """n points of the toy set `name` as float32 [n, 2].

    seed_or_rng: anything `np.random.default_rng` accepts (an int, a list of ints, or a
    Generator, which is used and advanced as is). noise None uses the set's default std.
    """
    check_toy2d_name(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r} is not a valid number of points; need an integer >= 1")
    sampler, default = _TOY2D[name]
    noise = default if noise is None else noise
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"data.noise={noise!r} is invalid; need a finite std >= 0")
    return sampler(int(n), np.random.default_rng(seed_or_rng), float(noise))
