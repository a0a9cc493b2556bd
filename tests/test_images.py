"""Image data: TFDS sets through `tfds.data_source` (mocked: no network, no TensorFlow), the
offline digits written as a TFDS set, a folder of the user's pictures, and the batching contract
(per-epoch shuffles from a seed, pure `batch(step)`, per-process slices, bounded prefetch).

Expected values come from the inputs the tests build themselves (constant-colour pictures, an
image whose pixel encodes its index, scikit-learn's digits), never from the code under test.
"""

import importlib.util
import logging
import os
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxdiff.data.digits import Digits8, prepare_digits
from jaxdiff.data.codecs import to_model_space, to_uint8
from jaxdiff.data.images import ImageSource, make_folder_source, make_tfds_source
from jaxdiff.data.sources import prefetch_batches
from jaxdiff.errors import ConfigError
from jaxdiff.train_loop import prepare

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config(file_name: str = "digits.py"):
    spec = importlib.util.spec_from_file_location("config_under_test",
                                                  os.path.join(CONFIGS, file_name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _uint8(x: np.ndarray) -> np.ndarray:
    """Model space [-1, 1] back to 0..255 by the definition x = u / 127.5 - 1."""
    return np.round((np.asarray(x, np.float64) + 1.0) * 127.5).astype(np.int64)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


def test_model_space_maps_0_255_onto_minus_one_one_and_back():
    levels = np.arange(256, dtype=np.uint8)
    x = to_model_space(levels)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, levels / 127.5 - 1.0, atol=1e-6)
    assert x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_array_equal(to_uint8(x), levels)
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, 3.0])), [0, 255])  # clipped


# --- TFDS sets (tfds.testing.mock_data: random examples with each set's real features) ---------

@pytest.mark.parametrize("name, size, channels, num_classes", [
    ("mnist", 28, 1, 10),
    ("fashion_mnist", 28, 1, 10),
    ("cifar10", 32, 3, 10),
    ("celeb_a", 64, 3, 0),
    ("oxford_flowers102", 32, 3, 102),
])
def test_tfds_sets_give_normalised_batches_of_the_configured_shape(name, size, channels,
                                                                    num_classes):
    count = 12
    with tfds.testing.mock_data(num_examples=count):
        source = make_tfds_source(name, image_size=size, channels=channels, seed=0,
                                  random_flip=False)
        batch = source.batch(0, count)
        raw = tfds.data_source(name, split="train")
        records = [raw[i] for i in range(count)]
    assert source.length == count and source.num_classes == num_classes
    assert source.shape == (size, size, channels)
    assert batch["x"].shape == (count, size, size, channels) and batch["x"].dtype == np.float32
    assert batch["x"].min() >= -1.0 and batch["x"].max() <= 1.0
    assert batch["labels"].shape == (count,) and batch["labels"].dtype == np.int32
    order = source.indices(0, count)
    np.testing.assert_array_equal(np.sort(order), np.arange(count))  # one epoch: each once
    if num_classes:
        np.testing.assert_array_equal(batch["labels"], [records[i]["label"] for i in order])
    else:
        assert not batch["labels"].any()
    if records[0]["image"].shape == (size, size, channels):  # native size: no resampling
        expected = np.stack([records[i]["image"] for i in order]).astype(np.float64)
        np.testing.assert_allclose(batch["x"], expected / 127.5 - 1.0, atol=1e-6)


class _ListDataSource:
    """What `tfds.data_source` returns, over examples the test chose."""

    def __init__(self, dataset_info, examples):
        self.dataset_info, self._examples = dataset_info, examples

    def __len__(self):
        return len(self._examples)

    def __getitem__(self, index):
        return self._examples[index]


def test_celeb_a_is_centre_cropped_to_a_square_then_resized():
    # A 218 x 178 portrait: a white band above and a black band below the central 178 x 178
    # square, whose red channel is 60 on the left half and 190 on the right. A centre crop keeps
    # neither band; resizing keeps the two halves apart.
    image = np.zeros((218, 178, 3), np.uint8)
    image[:20] = 255
    image[20:198, :89, 0], image[20:198, 89:, 0] = 60, 190
    image[20:198, :, 1] = 128
    examples = [{"image": image}] * 4

    def as_data_source(builder, split, **kwargs):
        del split, kwargs
        return _ListDataSource(builder.info, examples)

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        source = make_tfds_source("celeb_a", image_size=64, channels=3, seed=0, random_flip=False)
    pixels = _uint8(source.batch(0, 4)["x"][0])
    assert pixels.shape == (64, 64, 3)
    assert np.abs(pixels[:, :28, 0] - 60).max() <= 1
    assert np.abs(pixels[:, 36:, 0] - 190).max() <= 1
    assert np.abs(pixels[..., 1] - 128).max() <= 1 and np.abs(pixels[..., 2]).max() <= 1


def test_any_tfds_name_from_the_config_is_read():
    config = _config()
    config.data.name = "svhn_cropped"  # not in TFDS_SETS
    config.data.image_size, config.data.channels = 32, 3
    config.train.batch_size = 8  # the mock set holds 16 examples
    with tfds.testing.mock_data(num_examples=16):
        source = prepare(config)
        batch = source.batch(0, 8)
    assert source.shape == (32, 32, 3) and source.num_classes == 10  # from the ClassLabel
    assert batch["x"].shape == (8, 32, 32, 3) and batch["x"].dtype == np.float32
    assert -1.0 <= batch["x"].min() and batch["x"].max() <= 1.0
    assert ((0 <= batch["labels"]) & (batch["labels"] < 10)).all()


def test_a_tfds_set_without_images_is_a_config_error():
    config = _config()
    config.data.name = "imdb_reviews"
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.name='imdb_reviews'" in _one_line(error) and "'image'" in str(error.value)


# --- the offline digits ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return prepare_digits(str(tmp_path_factory.mktemp("tfds")))


def test_digits_are_written_once_as_array_record(digits_dir, monkeypatch):
    version_dir = os.path.join(digits_dir, "digits8", "1.0.0")
    names = sorted(os.listdir(version_dir))
    assert "dataset_info.json" in names
    assert {name.split(".")[0] for name in names if ".array_record-" in name} == {
        "digits8-train", "digits8-test"}
    before = {name: os.stat(os.path.join(version_dir, name)).st_mtime_ns for name in names}

    def fail(*args, **kwargs):
        raise AssertionError("prepare_digits rewrote a prepared data set")

    monkeypatch.setattr(Digits8, "download_and_prepare", fail)
    assert prepare_digits(digits_dir) == digits_dir
    after = {name: os.stat(os.path.join(version_dir, name)).st_mtime_ns
             for name in os.listdir(version_dir)}
    assert after == before


@pytest.mark.parametrize("split, count", [("train", 1437), ("test", 360)])
def test_digits_read_back_equal_scikit_learns(digits_dir, split, count):
    from sklearn.datasets import load_digits

    digits = load_digits()
    in_split = (np.arange(len(digits.target)) % 5 == 0) == (split == "test")
    source = make_tfds_source("digits", split=split, data_dir=digits_dir, image_size=8,
                              channels=1, seed=0, random_flip=False)
    assert source.length == count and source.num_classes == 10 and source.shape == (8, 8, 1)
    batch = source.batch(0, count)  # one whole epoch
    x = batch["x"][..., 0].astype(np.float64)
    expected_x = digits.images[in_split] / 8.0 - 1.0  # grey levels 0..16 onto [-1, 1]
    expected_labels = digits.target[in_split]
    # TFDS shuffles records on write: compare as multisets, sorted by (label, pixels)
    levels = np.round((x + 1.0) * 8.0).reshape(count, -1)
    got = np.lexsort(np.column_stack([batch["labels"], levels]).T[::-1])
    want = np.lexsort(np.column_stack([expected_labels, digits.images[in_split].reshape(count, -1)])
                      .T[::-1])
    np.testing.assert_array_equal(batch["labels"][got], expected_labels[want])
    np.testing.assert_allclose(x[got], expected_x[want], atol=0.5 / 127.5 + 1e-6)


# --- a folder of the user's pictures ----------------------------------------------------------

def _bands(height, width, axis, colours):
    """An image of three equal bands along `axis` (0: rows, 1: columns)."""
    image = np.zeros((height, width, len(colours[0])), np.uint8)
    step = (height, width)[axis] // 3
    for index, colour in enumerate(colours):
        where = [slice(None), slice(None)]
        where[axis] = slice(index * step, (index + 1) * step)
        image[tuple(where)] = colour
    return image


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path, **kwargs)


# after a centre crop, each picture is one colour (RGB), listed with its PIL luma
FOLDER_COLOURS = [(10, 200, 30), (200, 40, 90), (77, 77, 77), (150, 150, 150), (40, 20, 250)]


def _luma(rgb):
    r, g, b = rgb
    return round(r * 299 / 1000 + g * 587 / 1000 + b * 114 / 1000)  # ITU-R 601-2, as PIL's "L"


@pytest.fixture(scope="module")
def picture_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    jpeg = dict(quality=95, subsampling=0)
    _save(str(folder / "wide.png"),
          _bands(16, 48, 1, [(255, 0, 0), FOLDER_COLOURS[0], (0, 0, 255)]))
    _save(str(folder / "tall.jpg"),
          _bands(48, 16, 0, [(255, 255, 255), FOLDER_COLOURS[1], (0, 0, 0)]), **jpeg)
    _save(str(folder / "sub" / "grey.png"), np.full((24, 24, 1), 77, np.uint8))
    _save(str(folder / "sub" / "deeper" / "grey_wide.jpeg"),
          _bands(16, 48, 1, [(0,), (150,), (255,)]), **jpeg)
    _save(str(folder / "sub" / "tiny.PNG"), np.full((4, 4, 3), FOLDER_COLOURS[4], np.uint8))
    (folder / "notes.txt").write_text("not a picture")
    return str(folder)


@pytest.mark.parametrize("channels", [3, 1])
def test_folder_pictures_are_cropped_resized_and_converted(picture_folder, channels):
    source = make_folder_source(picture_folder, image_size=8, channels=channels, seed=0,
                                random_flip=False)
    assert source.length == len(FOLDER_COLOURS) and source.num_classes == 0
    batch = source.batch(0, len(FOLDER_COLOURS))
    assert batch["x"].shape == (5, 8, 8, channels) and batch["x"].dtype == np.float32
    pixels = _uint8(batch["x"])
    # every picture is one colour after the centre crop (JPEG may be off by a few levels)
    assert (pixels.max(axis=(1, 2)) - pixels.min(axis=(1, 2))).max() <= 3
    colours = pixels.mean(axis=(1, 2))
    expected = np.array(FOLDER_COLOURS if channels == 3
                        else [(_luma(colour),) for colour in FOLDER_COLOURS], np.float64)
    order = lambda rows: rows[np.lexsort(rows.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(colours), order(expected), atol=3)


def test_random_flip_mirrors_some_pictures_the_same_way_for_a_seed(tmp_path):
    # 8 x 8 pictures (no resampling): left half black, right half a grey level per picture
    for index in range(6):
        image = np.zeros((8, 8, 3), np.uint8)
        image[:, 4:] = 40 * (index + 1)
        _save(str(tmp_path / f"{index}.png"), image)
    common = dict(image_size=8, channels=3)
    plain = make_folder_source(str(tmp_path), seed=3, random_flip=False, **common)
    flipped = make_folder_source(str(tmp_path), seed=3, random_flip=True, **common)
    again = make_folder_source(str(tmp_path), seed=3, random_flip=True, **common)
    other_seed = make_folder_source(str(tmp_path), seed=4, random_flip=True, **common)

    def mirrored(source):  # left half black unless mirrored
        return np.concatenate([source.batch(step, 6)["x"][:, 0, 0, 0] > -1 for step in range(8)])

    for step in range(8):
        x, reference = flipped.batch(step, 6)["x"], plain.batch(step, 6)["x"]
        mirror = np.all(x == reference[:, :, ::-1], axis=(1, 2, 3))
        assert np.all(mirror | np.all(x == reference, axis=(1, 2, 3)))  # whole pictures only
    mask = mirrored(flipped)
    assert 0 < mask.sum() < len(mask)
    assert not mirrored(plain).any()
    np.testing.assert_array_equal(mirrored(again), mask)
    assert not np.array_equal(mirrored(other_seed), mask)


def test_unreadable_pictures_are_counted_and_fatal_when_strict(tmp_path, caplog):
    for index in range(2):
        _save(str(tmp_path / f"good{index}.png"), np.full((8, 8, 3), 100, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really" + bytes(range(200)))
    _save(str(tmp_path / "whole.jpg"),
          np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "whole.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="jaxdiff"):
        source = make_folder_source(str(tmp_path), image_size=8, channels=3, seed=0,
                                    random_flip=False)
    assert source.length == 2
    assert any("skipped 2 unreadable" in record.getMessage() for record in caplog.records)
    with pytest.raises(ValueError) as error:
        make_folder_source(str(tmp_path), image_size=8, channels=3, seed=0, random_flip=False,
                           strict=True)
    message = _one_line(error)
    assert str(tmp_path) in message and "data.strict" in message
    assert "broken.png" in message or "truncated.jpg" in message


def test_folder_errors_name_the_path(tmp_path):
    common = dict(image_size=8, channels=3, seed=0, random_flip=False)
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError) as error:
        make_folder_source(missing, **common)
    assert f"data.path={missing!r}" in _one_line(error)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError) as error:
        make_folder_source(str(tmp_path / "empty"), **common)
    assert f"data.path={str(tmp_path / 'empty')!r}" in _one_line(error)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError) as error:
        make_folder_source(str(tmp_path / "bad"), **common)
    assert "data.path=" in _one_line(error) and "no readable images" in str(error.value)
    for index in range(3):
        _save(str(tmp_path / "few" / f"{index}.png"), np.full((8, 8, 3), index, np.uint8))
    source = make_folder_source(str(tmp_path / "few"), **common)
    with pytest.raises(ValueError) as error:  # 3 pictures cannot fill a batch of 8
        source.batch(0, 8)
    message = _one_line(error)
    assert "train.batch_size=8" in message and str(tmp_path / "few") in message


# --- batches: epochs, purity, processes, prefetch ---------------------------------------------

def _indexed_source(count, *, seed=0, random_flip=False, cache=True, **kwargs):
    """Picture i is white with pixel (0, 0) = i, so a batch tells which pictures it holds and
    whether each was mirrored."""
    images = np.full((count, 4, 4, 1), 255, np.uint8)
    images[:, 0, 0, 0] = np.arange(count)
    labels = np.arange(count) % 10
    return ImageSource("indexed", lambda idx: (images[idx], labels[idx]), count, image_size=4,
                       channels=1, num_classes=10, seed=seed, random_flip=random_flip,
                       cache=cache, **kwargs)


def _which(batch):
    pixels = _uint8(batch["x"])[..., 0]
    index = pixels.min(axis=(1, 2))
    np.testing.assert_array_equal(batch["labels"], index % 10)
    mirrored = pixels[:, 0, -1] == index
    return index, mirrored


@pytest.mark.parametrize("cache", [True, False])
def test_each_epoch_is_a_fresh_permutation_from_the_seed(cache):
    count, batch_size = 24, 8
    source = _indexed_source(count, seed=5, cache=cache)
    epochs = [np.concatenate([_which(source.batch(step, batch_size))[0]
                              for step in range(3 * epoch, 3 * epoch + 3)]) for epoch in range(3)]
    for epoch, order in enumerate(epochs):
        np.testing.assert_array_equal(np.sort(order), np.arange(count))  # each picture once
        # the documented contract: epoch e is default_rng([seed, e]).permutation(length)
        np.testing.assert_array_equal(order, np.random.default_rng([5, epoch]).permutation(count))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    same_seed = _indexed_source(count, seed=5, cache=cache)
    np.testing.assert_array_equal(_which(same_seed.batch(4, batch_size))[0],
                                  epochs[1][8:16])
    other_seed = _indexed_source(count, seed=6, cache=cache)
    assert not np.array_equal(_which(other_seed.batch(0, batch_size))[0], epochs[0][:8])


def test_batches_straddling_epochs_still_cover_each_epoch_once():
    count, batch_size = 10, 4  # 4 does not divide 10
    source = _indexed_source(count, seed=1)
    order = np.concatenate([_which(source.batch(step, batch_size))[0] for step in range(5)])
    np.testing.assert_array_equal(np.sort(order[:10]), np.arange(count))
    np.testing.assert_array_equal(np.sort(order[10:]), np.arange(count))


def test_batch_is_a_pure_function_of_the_step():
    source = _indexed_source(30, seed=2, random_flip=True, cache=False)
    first = source.batch(7, 6)
    source.batch(0, 6), source.batch(100, 6)  # other epochs in between
    again = source.batch(7, 6)
    resumed = _indexed_source(30, seed=2, random_flip=True, cache=False).batch(7, 6)
    for other in (again, resumed):
        np.testing.assert_array_equal(other["x"], first["x"])
        np.testing.assert_array_equal(other["labels"], first["labels"])


@pytest.mark.parametrize("process_count", [2, 3, 4])
def test_processes_take_disjoint_slices_that_make_up_the_global_batch(process_count):
    count, batch_size = 24, 12
    whole = _indexed_source(count, seed=9, random_flip=True)
    parts = [_indexed_source(count, seed=9, random_flip=True, process_index=index,
                             process_count=process_count) for index in range(process_count)]
    for step in (0, 1, 2, 5):
        pieces = [part.batch(step, batch_size) for part in parts]
        assert all(len(piece["x"]) == batch_size // process_count for piece in pieces)
        indices = np.concatenate([_which(piece)[0] for piece in pieces])
        assert len(set(indices.tolist())) == batch_size  # disjoint
        reference = whole.batch(step, batch_size)
        np.testing.assert_array_equal(np.concatenate([piece["x"] for piece in pieces]),
                                      reference["x"])
        np.testing.assert_array_equal(np.concatenate([piece["labels"] for piece in pieces]),
                                      reference["labels"])


def test_batch_size_must_divide_among_processes():
    source = _indexed_source(24, process_index=0, process_count=3)
    with pytest.raises(ValueError) as error:
        source.batch(0, 8)
    assert "train.batch_size=8" in _one_line(error)


def test_flips_are_per_picture_and_seeded():
    source = _indexed_source(40, seed=4, random_flip=True)
    mirrored = np.concatenate([_which(source.batch(step, 8))[1] for step in range(10)])
    assert 10 < mirrored.sum() < 70  # about half of 80 (binomial sd ~4.5)


def test_prefetch_yields_the_batches_of_batch_step():
    source = _indexed_source(24, seed=8, random_flip=True)
    reference = _indexed_source(24, seed=8, random_flip=True)
    got = list(prefetch_batches(source, range(3, 11), 8, size=2))
    assert len(got) == 8
    for step, batch in zip(range(3, 11), got):
        expected = reference.batch(step, 8)
        np.testing.assert_array_equal(batch["x"], expected["x"])
        np.testing.assert_array_equal(batch["labels"], expected["labels"])


def test_prefetch_reads_at_most_size_batches_ahead():
    source = _indexed_source(24)
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


# --- errors through the training entry --------------------------------------------------------

def test_digits_config_opens_the_digits(digits_dir):
    config = _config()
    config.data.data_dir = digits_dir
    source = prepare(config)
    assert source.shape == (8, 8, 1) and source.num_classes == 10 and source.length == 1437


def test_unknown_tfds_name_is_a_one_line_config_error(tmp_path):
    config = _config()
    config.data.name, config.data.data_dir = "no_such_set_xyz", str(tmp_path)
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.name='no_such_set_xyz'" in _one_line(error)


def test_unprepared_tfds_set_says_how_to_prepare_it(tmp_path):
    config = _config()
    config.data.name, config.data.data_dir = "mnist", str(tmp_path)
    config.data.image_size = 28
    with pytest.raises(ConfigError) as error:
        prepare(config)
    message = _one_line(error)
    assert "data.name='mnist'" in message and "array_record" in message


def test_wrong_channel_count_names_data_channels(digits_dir):
    config = _config()
    config.data.data_dir, config.data.channels = digits_dir, 3
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.channels=3" in _one_line(error)


def test_wrong_channel_count_of_an_uncached_tfds_set_is_caught_before_training():
    # large sets are read batch by batch, so the check cannot wait for the first batch
    config = _config()
    # 1,100 pictures of 1024 x 1024 x 1 bytes are over ImageSource's 1 GiB cache limit
    config.data.name, config.data.image_size, config.data.channels = "cifar10", 1024, 1
    with tfds.testing.mock_data(num_examples=1100), pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.channels=1" in _one_line(error)


def test_image_size_must_survive_the_unet_downsampling():
    config = _config()
    config.data.image_size, config.model.dim_mults = 6, (1, 2, 4)
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.image_size=6" in _one_line(error)


@pytest.mark.parametrize("kind", ["unset", "missing", "empty"])
def test_folder_path_errors_name_data_path(tmp_path, kind):
    config = _config()
    config.data.name, config.data.channels = "folder", 3
    if kind == "missing":
        config.data.path = str(tmp_path / "nowhere")
    elif kind == "empty":
        config.data.path = str(tmp_path)
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.path=" in _one_line(error)
