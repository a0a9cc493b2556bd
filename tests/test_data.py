"""Toy sets, array files, standardisation and batches as a pure function of the step."""

import numpy as np
import pytest

from jaxdiff.data import TOY2D_NAMES, Standardizer, load_array, make_point_source, sample_toy2d


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_toy_sets_are_seeded(name):
    a = sample_toy2d(name, 500, 1)
    assert a.shape == (500, 2) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, sample_toy2d(name, 500, 1))
    assert not np.array_equal(a, sample_toy2d(name, 500, 2))


def test_butterfly_lies_on_the_seed_curve():
    points = sample_toy2d("butterfly", 1000, np.random.default_rng(7), noise=0.0)
    theta = np.random.default_rng(7).uniform(0, 2 * np.pi, 1000)  # the same stream of draws
    r = np.exp(np.cos(theta)) - 2 * np.cos(4 * theta) + np.sin(theta / 12) ** 5
    np.testing.assert_allclose(points, np.stack([r * np.sin(theta), r * np.cos(theta)], 1),
                               rtol=1e-5, atol=1e-5)


def test_checkerboard_points_are_on_black_squares():
    points = sample_toy2d("checkerboard", 5000, 0)
    column, row = np.floor(points[:, 0] + 2), np.floor(points[:, 1] + 2)
    assert ((column + row) % 2 == 0).all() and np.abs(points).max() <= 2


def test_unknown_name():
    with pytest.raises(ValueError, match="data.name='unicorn'"):
        sample_toy2d("unicorn", 10, 0)


def test_array_files(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(6, 2)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "b.npz", x=data, labels=np.arange(6))
    np.savez(tmp_path / "c.npz", only=data)
    for name in ("a.npy", "b.npz", "c.npz"):
        np.testing.assert_array_equal(load_array(str(tmp_path / name)), data.astype(np.float32))


def bad_files(tmp_path):
    np.save(tmp_path / "3d.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "one.npy", np.zeros((1, 2)))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan], [1, 2]]))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "x.csv").write_text("1,2\n")
    return [("missing.npy", "does not exist"), ("3d.npy", "(2, 2, 2)"), ("one.npy", "2 rows"),
            ("nan.npy", "non-finite"), ("text.npy", "non-numeric"), ("two.npz", "'a', 'b'"),
            ("junk.npy", "cannot be read"), ("junk.npz", "cannot be read"),
            ("x.csv", ".npy or .npz")]


def test_bad_array_files_name_the_path(tmp_path):
    for name, needle in bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as error:
            load_array(path)
        message = str(error.value)
        assert f"data.path={path!r}" in message and needle in message, message
        assert "\n" not in message


def test_array_batches_are_pure_and_cover_each_epoch(tmp_path):
    data = np.random.default_rng(0).normal(size=(10, 3)) * 4 + 2
    np.save(tmp_path / "d.npy", data)
    source = make_point_source("array", path=str(tmp_path / "d.npy"), seed=3)
    first = [source.batch(step, 4) for step in range(5)]  # 20 examples = two epochs
    again = [source.batch(step, 4) for step in (4, 2, 0, 3, 1)]
    for step, batch in zip((4, 2, 0, 3, 1), again):
        np.testing.assert_array_equal(batch, first[step])
    raw = source.standardizer.inverse(np.concatenate(first))
    for epoch in (raw[:10], raw[10:]):
        np.testing.assert_allclose(np.sort(epoch, 0), np.sort(data, 0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(raw[:10], raw[10:])  # each epoch has its own order


def test_toy_batches_are_standardised_and_pure():
    source = make_point_source("moons", seed=0)
    batch = source.batch(5, 20_000)
    np.testing.assert_allclose(batch.mean(0), 0, atol=0.03)
    np.testing.assert_allclose(batch.std(0), 1, atol=0.03)
    np.testing.assert_array_equal(source.batch(5, 100), make_point_source("moons", seed=0).batch(5, 100))
    with pytest.raises(ValueError, match="batch_size=0"):
        source.batch(0, 0)


def test_standardizer_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(100, 3)) * [1, 10, 0] + [0, 5, 7]
    scaler = Standardizer.fit(x)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(x)), x, rtol=1e-5, atol=1e-5)
    scaler.save(str(tmp_path / "s.json"))
    loaded = Standardizer.load(str(tmp_path / "s.json"))
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    np.testing.assert_array_equal(loaded.std, scaler.std)
