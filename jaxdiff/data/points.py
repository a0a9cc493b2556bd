"""Point data for training: a toy set or a user's array, standardised, with each batch a pure
function of (seed, step, batch_size), so that a run resumed at step k sees exactly the batches
of an uninterrupted one."""

from __future__ import annotations

import numpy as np

from jaxdiff.data.arrays import load_array
from jaxdiff.data.codecs import Standardizer
from jaxdiff.data.toy2d import check_toy2d_name, sample_toy2d

# Second words of the rng seeds [seed, word] for the standardiser's fit draw and for `fresh`.
# Training batches use [seed, step]; these sit at the top of the int32 range so that no
# realistic step collides with them. (SeedSequence pads short entropy with zeros, so a longer
# key such as [seed, step, 1] would not be a safe way to tell the streams apart.)
_FIT_STREAM = 2**31 - 1
_FRESH_STREAM = 2**31 - 2
_HOLDOUT_STREAM = 2**31 - 3


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; need an integer >= {minimum}")
    return int(value)


class PointSource:
    """Standardised training batches [B, D] and data-space evaluation draws for one data set.

    Toy sets draw fresh points for every step from default_rng([seed, step]). An array is read
    in shuffled epochs: epoch e is the permutation default_rng([seed, e]).permutation(N), and
    batch k holds the examples at global positions k B ... (k + 1) B - 1 of the concatenated
    epochs, so every example appears exactly once per epoch and a batch may straddle two.
    `held_out` (arrays) are the rows evaluation draws from, never trained on. Build it with
    `make_point_source`.
    """

    num_classes = 0

    def __init__(self, name: str, *, array: np.ndarray | None, noise: float | None, seed: int,
                 num_fit: int, held_out: np.ndarray | None = None, process_index: int = 0,
                 process_count: int = 1):
        self.name = name
        self.noise = noise
        self.seed = seed
        self.array = array
        self.held_out = held_out
        self.process_index, self.process_count = process_index, process_count
        fit_data = array if array is not None else self._toy(num_fit, [seed, _FIT_STREAM])
        self.dim: int = fit_data.shape[1]
        self.shape: tuple[int, ...] = (self.dim,)
        self.size: int | None = None if array is None else len(array)  # None: endless toy draws
        self.standardizer = Standardizer.fit(fit_data)
        self.codec = self.standardizer
        # epoch -> permutation; holds at most two, enough for a batch straddling an epoch edge.
        self._permutations: dict[int, np.ndarray] = {}

    def _toy(self, n: int, seed: list[int]) -> np.ndarray:
        return sample_toy2d(self.name, n, np.random.default_rng(seed), self.noise)

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(min(self._permutations))
            rng = np.random.default_rng([self.seed, epoch])
            self._permutations[epoch] = rng.permutation(len(self.array))
        return self._permutations[epoch]

    def global_batch(self, step: int, batch_size: int) -> np.ndarray:
        """Standardised float32 [batch_size, D], the global batch of training step `step` (a
        pure function of seed, step and batch_size)."""
        step = _check_count("step", step, 0)
        batch_size = _check_count("batch_size", batch_size, 1)
        if self.array is None:
            return self.standardizer.transform(self._toy(batch_size, [self.seed, step]))
        count = len(self.array)
        epochs, offsets = np.divmod(step * batch_size + np.arange(batch_size), count)
        indices = np.empty(batch_size, np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            indices[chosen] = self._epoch_permutation(int(epoch))[offsets[chosen]]
        return self.standardizer.transform(self.array[indices])

    def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """{"x": this process's slice of `global_batch(step, batch_size)`}."""
        if batch_size % self.process_count:
            raise ValueError(f"train.batch_size={batch_size} is not divisible by the "
                             f"{self.process_count} processes")
        local = batch_size // self.process_count
        start = self.process_index * local
        return {"x": self.global_batch(step, batch_size)[start:start + local]}

    def fresh(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """{"x": n points in data space (not standardised)} for evaluation: a new toy draw, or
        for an array a uniformly random subset of the held-out rows (of the training rows when
        there are none), drawn with replacement only when n exceeds their number."""
        n = _check_count("n", n, 1)
        seed = _check_count("seed", seed, 0)
        if self.array is None:
            return {"x": self._toy(n, [seed, _FRESH_STREAM])}
        rows = self.array if self.held_out is None else self.held_out
        rng = np.random.default_rng([seed, _FRESH_STREAM])
        return {"x": rows[rng.choice(len(rows), n, replace=n > len(rows))]}


def split_holdout(array: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): round(fraction N) rows, at least 1 and at most N - 1,
    chosen by default_rng([seed, 2**31 - 3]); the training rows keep their order."""
    count = len(array)
    if count < 2:
        raise ValueError(f"the array holds {count} row(s): at least 2 are needed, one to train "
                         f"on and one held out for evaluation")
    if not 0 < fraction < 1:
        raise ValueError(f"data.holdout={fraction!r} is invalid: a fraction in (0, 1)")
    held = min(count - 1, max(1, round(fraction * count)))
    order = np.random.default_rng([seed, _HOLDOUT_STREAM]).permutation(count)
    return array[np.sort(order[held:])], array[order[:held]]


def make_point_source(name: str, *, path: str | None = None, noise: float | None = None,
                      seed: int = 0, num_fit: int = 100_000, holdout: float | None = 0.1,
                      eval_path: str | None = None, process_index: int = 0,
                      process_count: int = 1) -> PointSource:
    """A toy set by name (see TOY2D_NAMES), or name="array" with `path` to a .npy/.npz file of
    shape [N, D]. An array's evaluation draws come from `eval_path` (another [M, D] file) when
    given, else from a `holdout` fraction of its rows that training never sees (None: no rows
    held out, evaluation draws from the training rows, as runs written before jaxdiff 0.2 did;
    a config without data.holdout is such a run). The standardiser
    is fit on the training rows, or on `num_fit` toy points from default_rng([seed, 2**31 - 1]).
    `noise` (None: the set's default) applies to toy sets only; the paths to arrays only."""
    seed = _check_count("seed", seed, 0)
    split = dict(process_index=process_index, process_count=process_count)
    if name == "array":
        if not path:
            raise ValueError(f"data.path={path!r} is empty; data.name='array' needs a .npy or "
                             f".npz file of shape [N, D]")
        array = load_array(path)
        if eval_path:
            held_out = load_array(eval_path, field="data.eval_path")
            if held_out.shape[1:] != array.shape[1:]:
                raise ValueError(f"data.eval_path={eval_path!r} holds rows of shape "
                                 f"{held_out.shape[1:]}, data.path {array.shape[1:]}")
        elif holdout is None:
            held_out = None
        else:
            try:
                array, held_out = split_holdout(array, holdout, seed)
            except ValueError as error:
                raise ValueError(f"data.path={path!r}: {error}") from None
        return PointSource(name, array=array, noise=None, seed=seed, num_fit=0,
                           held_out=held_out, **split)
    check_toy2d_name(name)
    num_fit = _check_count("num_fit", num_fit, 2)
    return PointSource(name, array=None, noise=noise, seed=seed, num_fit=num_fit, **split)
