"""Point data for training: a toy set or a user's array, standardised, batches as a pure
function of the step (so a resumed run sees exactly the batches of an uninterrupted one)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from jaxdiff.data.arrays import load_array
from jaxdiff.data.toy2d import sample_toy2d


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-dimension affine map to zero mean and unit variance: z = (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        x = np.asarray(x, np.float64)
        # a constant column keeps std 1e-6 instead of dividing by zero
        return cls(mean=x.mean(axis=0), std=np.maximum(x.std(axis=0), 1e-6))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, np.float64) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}

    @classmethod
    def from_dict(cls, payload: dict) -> "Standardizer":
        return cls(mean=np.asarray(payload["mean"], np.float64),
                   std=np.asarray(payload["std"], np.float64))

    def save(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path: str) -> "Standardizer":
        with open(path) as handle:
            return cls.from_dict(json.load(handle))


class PointSource:
    """Batches of standardised points [B, D]: fresh toy draws per step, or shuffled epochs of an
    array (the permutation of epoch e comes from default_rng([seed, e]))."""

    def __init__(self, name: str, *, array: np.ndarray | None, noise: float | None, seed: int,
                 num_fit: int):
        self.name, self.noise, self.seed = name, noise, seed
        self.array = array
        fit_data = array if array is not None else self._toy(num_fit, [seed, 2**31 - 1])
        self.dim = fit_data.shape[1]
        self.standardizer = Standardizer.fit(fit_data)
        self._epoch, self._permutation = -1, None

    def _toy(self, n: int, seed) -> np.ndarray:
        return sample_toy2d(self.name, n, np.random.default_rng(seed), self.noise)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._permutation = epoch, rng.permutation(len(self.array))
        return self._permutation

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Standardised float32 [batch_size, D] for training step `step`."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
        if self.array is None:
            points = self._toy(batch_size, [self.seed, step])
        else:
            count = len(self.array)
            positions = step * batch_size + np.arange(batch_size)
            epochs, offsets = np.divmod(positions, count)
            indices = np.empty(batch_size, np.int64)
            for epoch in np.unique(epochs):
                where = epochs == epoch
                indices[where] = self._epoch_permutation(int(epoch))[offsets[where]]
            points = self.array[indices]
        return self.standardizer.transform(points)

    def fresh(self, n: int, seed: int) -> np.ndarray:
        """n points in data space for evaluation: new toy draws, or a random subset of the array
        (with replacement when n exceeds its size)."""
        if self.array is None:
            return self._toy(n, [seed, 2**31 - 2])
        rng = np.random.default_rng([seed, 2**31 - 2])
        replace = n > len(self.array)
        return self.array[rng.choice(len(self.array), n, replace=replace)]


def make_point_source(name: str, *, path: str | None = None, noise: float | None = None,
                      seed: int = 0, num_fit: int = 100_000) -> PointSource:
    """A toy set by name, or name="array" with `path` to a .npy/.npz file of shape [N, D]."""
    if name == "array":
        if not path:
            raise ValueError("data.path is empty: data.name='array' needs a .npy or .npz file")
        return PointSource(name, array=load_array(path), noise=None, seed=seed, num_fit=0)
    sample_toy2d(name, 1, 0)  # validates the name with the data set's message
    return PointSource(name, array=None, noise=noise, seed=seed, num_fit=num_fit)
