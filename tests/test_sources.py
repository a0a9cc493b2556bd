"""The one data-source interface (jaxdiff.data.sources): points and images offer the same
attributes and methods, batches are this process's slice of the global batch, `fresh` returns
data space, the codec maps data space to model space and back, and `prefetch_batches` reads a
source's batches ahead, a bounded number at a time."""

import re
import threading
import time

import numpy as np
import pytest

from jaxdiff.data import ImageCodec, Standardizer, make_point_source
from jaxdiff.data.images import ImageSource
from jaxdiff.data.sources import prefetch_batches

from helpers import indexed_image_source, load_config, set_fields

INTERFACE = ("name", "shape", "num_classes", "size", "codec", "batch", "fresh")


def _image_source(count=12, **kwargs) -> ImageSource:
    images = (np.arange(count * 16).reshape(count, 4, 4, 1) % 251).astype(np.uint8)
    labels = np.arange(count) % 3
    return ImageSource("tiny", lambda idx: (images[idx], labels[idx]), count, image_size=4,
                       channels=1, num_classes=3, seed=0, random_flip=False, **kwargs)


def _array_source(tmp_path, **kwargs):
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 3)) * [1.0, 5.0, 0.1] + [0, 2, -1])
    return make_point_source("array", path=str(path), seed=1, **kwargs)


def test_points_and_images_offer_the_same_interface(tmp_path):
    sources = {"toy": make_point_source("moons", seed=0, num_fit=100),
               "array": _array_source(tmp_path), "images": _image_source()}
    for name, source in sources.items():
        assert all(hasattr(source, field) for field in INTERFACE), name
        batch = source.batch(0, 4)
        assert batch["x"].dtype == np.float32 and batch["x"].shape == (4,) + source.shape, name
        fresh = source.fresh(5, seed=2)
        assert len(fresh["x"]) == 5, name
        # the codec maps fresh data-space examples to model space like a training batch's
        encoded = source.codec.encode(fresh["x"])
        assert encoded.dtype == np.float32 and encoded.shape == (5,) + source.shape, name
    assert sources["toy"].size is None and sources["array"].size == 36  # 4 of 40 held out
    assert sources["images"].size == 12 and sources["images"].num_classes == 3
    assert sources["toy"].num_classes == 0
    assert isinstance(sources["array"].codec, Standardizer)
    assert isinstance(sources["images"].codec, ImageCodec)


@pytest.mark.parametrize("kind", ["toy", "array", "images"])
def test_process_slices_make_up_the_global_batch(tmp_path, kind):
    def make(index, count):
        split = dict(process_index=index, process_count=count)
        if kind == "toy":
            return make_point_source("moons", seed=0, num_fit=100, **split)
        if kind == "array":
            return _array_source(tmp_path, **split)
        return _image_source(**split)

    whole = make(0, 1)
    for step in (0, 3, 7):
        parts = [make(index, 2).batch(step, 6) for index in range(2)]
        np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]),
                                      whole.batch(step, 6)["x"])
    with pytest.raises(ValueError, match="not divisible"):
        make(0, 4).batch(0, 6)


def test_point_codec_round_trip(tmp_path):
    source = _array_source(tmp_path)
    x = source.fresh(10, seed=0)["x"]
    z = source.codec.encode(x)
    np.testing.assert_allclose(z, (x - source.array.mean(0)) / source.array.std(0), rtol=1e-5,
                               atol=1e-5)  # the training rows' statistics
    np.testing.assert_allclose(source.codec.decode(z), x, rtol=1e-5, atol=1e-5)


def test_prefetch_over_a_point_source_gives_its_batches():
    source = make_point_source("moons", seed=0, num_fit=100)
    got = list(prefetch_batches(source, range(2, 6), 8, size=2))
    for step, batch in zip(range(2, 6), got):
        np.testing.assert_array_equal(batch["x"], source.batch(step, 8)["x"])


def test_prefetch_yields_the_batches_of_batch_step():
    source = indexed_image_source(24, seed=8, random_flip=True)
    reference = indexed_image_source(24, seed=8, random_flip=True)
    got = list(prefetch_batches(source, range(3, 11), 8, size=2))
    assert len(got) == 8
    for step, batch in zip(range(3, 11), got):
        expected = reference.batch(step, 8)
        np.testing.assert_array_equal(batch["x"], expected["x"])
        np.testing.assert_array_equal(batch["labels"], expected["labels"])


def test_prefetch_reads_at_most_size_batches_ahead():
    source = indexed_image_source(24)
    read = []
    lock = threading.Lock()

    class Counting:
        def batch(self, step, batch_size):
            with lock:
                read.append(step)
            return source.batch(step, batch_size)

    batches = prefetch_batches(Counting(), range(1000), 4, size=2)
    next(batches)
    deadline = time.monotonic() + 5
    while len(read) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # room for a runaway reader to show itself
    assert read == [0, 1, 2]  # the one handed out and two waiting
    next(batches)
    deadline = time.monotonic() + 5
    while len(read) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert read == [0, 1, 2, 3]
    batches.close()


@pytest.mark.parametrize("config_name, fields, expected", [
    ("toy2d", {"data.name": "array", "data.path": "{tmp}"}, "data.path="),
    ("toy2d", {"data.name": "array", "data.path": "{tmp}/missing.npy"}, "does not exist"),
    ("toy2d", {"data.name": "array", "data.path": "{tmp}/ok.npy",
               "data.eval_path": "{tmp}/missing.npy"}, "data.eval_path="),
    ("toy2d", {"data.name": "array", "data.path": "{tmp}/ok.npy", "data.eval_path": "{tmp}"},
     "data.eval_path="),
    ("image_folder", {"data.path": "{tmp}/ok.npy"}, "is not a directory"),
    ("digits", {"eval.inception_path": "{tmp}"}, "eval.inception_path="),
], ids=["array-is-a-directory", "array-missing", "eval-file-missing", "eval-file-is-a-directory",
        "folder-is-a-file", "inception-weights-are-a-directory"])
def test_every_path_field_names_itself_when_it_is_unusable(tmp_path, config_name, fields,
                                                           expected):
    from jaxdiff.errors import ConfigError
    from jaxdiff.train_loop import prepare

    np.save(tmp_path / "ok.npy", np.zeros((20, 2), np.float32))
    config = set_fields(load_config(config_name), {
        field: value.format(tmp=tmp_path) if isinstance(value, str) else value
        for field, value in {**fields, "train.batch_size": 4}.items()})
    with pytest.raises(ConfigError, match=re.escape(expected)):
        prepare(config)
