"""Point sources (jaxdiff.data.points): toy sets and array files as a data source, batches as a
pure function of the step (epoch permutations from the seed), standardised model space, and
`fresh` draws in data space."""

import numpy as np
import pytest

from jaxdiff.data import PointSource, make_point_source

from oracles import MOONS_MEAN


def test_array_source_needs_a_path():
    for path in (None, ""):
        with pytest.raises(ValueError, match=f"data.path={path!r}"):
            make_point_source("array", path=path, seed=0)


def test_array_batches_follow_the_epoch_permutations(tmp_path):
    count, batch_size, seed = 10, 4, 3
    # column 0 is the example's index, so a batch says exactly which examples it holds
    data = np.stack([np.arange(count), np.random.default_rng(0).normal(size=count)], 1)
    np.save(tmp_path / "d.npy", data)
    # holdout=None: every row trains (as runs of configs without data.holdout do)
    source = make_point_source("array", path=str(tmp_path / "d.npy"), seed=seed, holdout=None)
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
    resumed = make_point_source("array", path=str(tmp_path / "d.npy"), seed=seed, holdout=None)
    np.testing.assert_array_equal(resumed.global_batch(7, batch_size), first[7])
    # batch_size larger than N wraps over several epochs
    big = indices(source.global_batch(1, 25))  # positions 25..49: epochs 2, 3, 4
    np.testing.assert_array_equal(big[5:15], np.random.default_rng([seed, 3]).permutation(count))


def test_array_source_standardises_and_draws_fresh_points_from_held_out_rows(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 3)) * [1, 10, 0] + [0, 5, 7]
    np.save(tmp_path / "d.npy", data)
    source = make_point_source("array", path=str(tmp_path / "d.npy"), seed=1, holdout=0.2)
    assert source.size == 40 and len(source.held_out) == 10
    rows = {tuple(r) for r in data.astype(np.float32)}
    train = {tuple(r) for r in source.array.astype(np.float32)}
    held = {tuple(r) for r in source.held_out.astype(np.float32)}
    assert train | held == rows and not train & held  # a split of the file's rows
    batch = source.global_batch(0, 40)  # one whole epoch of the training rows
    np.testing.assert_allclose(batch.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(batch.std(0), [1, 1, 0], atol=1e-5)  # constant column stays 0
    fresh = source.fresh(200, seed=4)['x']  # more than the held-out rows: with replacement
    assert fresh.shape == (200, 3)
    assert all(tuple(r) in held for r in fresh)  # evaluation never sees a training row
    np.testing.assert_array_equal(fresh, source.fresh(200, seed=4)['x'])
    subset = source.fresh(10, seed=5)['x']  # without replacement when n <= their number
    assert {tuple(r) for r in subset} == held


@pytest.mark.parametrize("rows, fraction, held", [(2, 0.1, 1), (3, 0.9, 2), (50, 0.1, 5),
                                                   (50, 0.001, 1)])
def test_holdout_keeps_at_least_one_row_on_each_side(rows, fraction, held):
    from jaxdiff.data.points import split_holdout

    train, held_out = split_holdout(np.arange(rows)[:, None], fraction, seed=0)
    assert len(held_out) == held and len(train) == rows - held
    np.testing.assert_array_equal(train[:, 0], np.sort(train[:, 0]))  # training rows keep order
    with pytest.raises(ValueError, match="at least 2"):
        split_holdout(np.zeros((1, 2)), 0.5, seed=0)


def test_an_eval_file_replaces_the_holdout(tmp_path):
    np.save(tmp_path / "train.npy", np.zeros((20, 2)))
    np.save(tmp_path / "eval.npy", np.ones((7, 2)))
    source = make_point_source("array", path=str(tmp_path / "train.npy"),
                               eval_path=str(tmp_path / "eval.npy"), seed=0)
    assert source.size == 20 and (source.fresh(30, seed=0)["x"] == 1).all()
    np.save(tmp_path / "wide.npy", np.ones((7, 3)))
    with pytest.raises(ValueError, match="data.eval_path"):
        make_point_source("array", path=str(tmp_path / "train.npy"),
                          eval_path=str(tmp_path / "wide.npy"), seed=0)


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
    np.testing.assert_allclose(fresh.mean(0), MOONS_MEAN, atol=5 / np.sqrt(20_000))
    np.testing.assert_array_equal(fresh, source.fresh(20_000, seed=9)['x'])
    assert not np.array_equal(fresh[:100], source.fresh(100, seed=10)['x'])
