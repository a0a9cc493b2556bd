"""Image data (jaxdiff.data.images): TFDS sets through `tfds.data_source` (mocked: no network, no
TensorFlow), a folder of the user's pictures, and the image source's batching contract (per-epoch
shuffles from a seed, pure `batch(step)`, per-process slices). The offline digits are in
test_digits.py, prefetching in test_sources.py.

Expected values come from the inputs the tests build themselves (constant-colour pictures, an
image whose pixel encodes its index), never from the code under test.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxdiff.data.images import make_folder_source, make_tfds_source
from jaxdiff.errors import ConfigError
from jaxdiff.train_loop import prepare

from helpers import indexed_image_source, load_config, one_line, which
from oracles import uint8_levels


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
    pixels = uint8_levels(source.batch(0, 4)["x"][0])
    assert pixels.shape == (64, 64, 3)
    assert np.abs(pixels[:, :28, 0] - 60).max() <= 1
    assert np.abs(pixels[:, 36:, 0] - 190).max() <= 1
    assert np.abs(pixels[..., 1] - 128).max() <= 1 and np.abs(pixels[..., 2]).max() <= 1


def test_any_tfds_name_from_the_config_is_read():
    config = load_config("digits")
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
    config = load_config("digits")
    config.data.name = "imdb_reviews"
    with tfds.testing.mock_data(num_examples=4), pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.name='imdb_reviews'" in one_line(error) and "'image'" in str(error.value)


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
    pixels = uint8_levels(batch["x"])
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
    message = one_line(error)
    assert str(tmp_path) in message and "data.strict" in message
    assert "broken.png" in message or "truncated.jpg" in message


def test_folder_errors_name_the_path(tmp_path):
    common = dict(image_size=8, channels=3, seed=0, random_flip=False)
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError) as error:
        make_folder_source(missing, **common)
    assert f"data.path={missing!r}" in one_line(error)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    with pytest.raises(ValueError) as error:
        make_folder_source(str(tmp_path / "empty"), **common)
    assert f"data.path={str(tmp_path / 'empty')!r}" in one_line(error)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError) as error:
        make_folder_source(str(tmp_path / "bad"), **common)
    assert "data.path=" in one_line(error) and "no readable images" in str(error.value)
    for index in range(3):
        _save(str(tmp_path / "few" / f"{index}.png"), np.full((8, 8, 3), index, np.uint8))
    source = make_folder_source(str(tmp_path / "few"), **common)
    with pytest.raises(ValueError) as error:  # 3 pictures cannot fill a batch of 8
        source.batch(0, 8)
    message = one_line(error)
    assert "train.batch_size=8" in message and str(tmp_path / "few") in message


# --- batches: epochs, purity, processes -------------------------------------------------------

@pytest.mark.parametrize("cache", [True, False])
def test_each_epoch_is_a_fresh_permutation_from_the_seed(cache):
    count, batch_size = 24, 8
    source = indexed_image_source(count, seed=5, cache=cache)
    epochs = [np.concatenate([which(source.batch(step, batch_size))[0]
                              for step in range(3 * epoch, 3 * epoch + 3)]) for epoch in range(3)]
    for epoch, order in enumerate(epochs):
        np.testing.assert_array_equal(np.sort(order), np.arange(count))  # each picture once
        # the documented contract: epoch e is default_rng([seed, e]).permutation(length)
        np.testing.assert_array_equal(order, np.random.default_rng([5, epoch]).permutation(count))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    same_seed = indexed_image_source(count, seed=5, cache=cache)
    np.testing.assert_array_equal(which(same_seed.batch(4, batch_size))[0],
                                  epochs[1][8:16])
    other_seed = indexed_image_source(count, seed=6, cache=cache)
    assert not np.array_equal(which(other_seed.batch(0, batch_size))[0], epochs[0][:8])


def test_batches_straddling_epochs_still_cover_each_epoch_once():
    count, batch_size = 10, 4  # 4 does not divide 10
    source = indexed_image_source(count, seed=1)
    order = np.concatenate([which(source.batch(step, batch_size))[0] for step in range(5)])
    np.testing.assert_array_equal(np.sort(order[:10]), np.arange(count))
    np.testing.assert_array_equal(np.sort(order[10:]), np.arange(count))


def test_batch_is_a_pure_function_of_the_step():
    source = indexed_image_source(30, seed=2, random_flip=True, cache=False)
    first = source.batch(7, 6)
    source.batch(0, 6), source.batch(100, 6)  # other epochs in between
    again = source.batch(7, 6)
    resumed = indexed_image_source(30, seed=2, random_flip=True, cache=False).batch(7, 6)
    for other in (again, resumed):
        np.testing.assert_array_equal(other["x"], first["x"])
        np.testing.assert_array_equal(other["labels"], first["labels"])


@pytest.mark.parametrize("process_count", [2, 3, 4])
def test_processes_take_disjoint_slices_that_make_up_the_global_batch(process_count):
    count, batch_size = 24, 12
    whole = indexed_image_source(count, seed=9, random_flip=True)
    parts = [indexed_image_source(count, seed=9, random_flip=True, process_index=index,
                             process_count=process_count) for index in range(process_count)]
    for step in (0, 1, 2, 5):
        pieces = [part.batch(step, batch_size) for part in parts]
        assert all(len(piece["x"]) == batch_size // process_count for piece in pieces)
        indices = np.concatenate([which(piece)[0] for piece in pieces])
        assert len(set(indices.tolist())) == batch_size  # disjoint
        reference = whole.batch(step, batch_size)
        np.testing.assert_array_equal(np.concatenate([piece["x"] for piece in pieces]),
                                      reference["x"])
        np.testing.assert_array_equal(np.concatenate([piece["labels"] for piece in pieces]),
                                      reference["labels"])


def test_batch_size_must_divide_among_processes():
    source = indexed_image_source(24, process_index=0, process_count=3)
    with pytest.raises(ValueError) as error:
        source.batch(0, 8)
    assert "train.batch_size=8" in one_line(error)


def test_flips_are_per_picture_and_seeded():
    source = indexed_image_source(40, seed=4, random_flip=True)
    mirrored = np.concatenate([which(source.batch(step, 8))[1] for step in range(10)])
    assert 10 < mirrored.sum() < 70  # about half of 80 (binomial sd ~4.5)


# --- errors through the training entry --------------------------------------------------------

def test_unknown_tfds_name_is_a_one_line_config_error(tmp_path):
    config = load_config("digits")
    config.data.name, config.data.data_dir = "no_such_set_xyz", str(tmp_path)
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.name='no_such_set_xyz'" in one_line(error)


def test_unprepared_tfds_set_says_how_to_prepare_it(tmp_path):
    config = load_config("digits")
    config.data.name, config.data.data_dir = "mnist", str(tmp_path)
    config.data.image_size = 28
    with pytest.raises(ConfigError) as error:
        prepare(config)
    message = one_line(error)
    assert "data.name='mnist'" in message and "array_record" in message


def test_wrong_channel_count_of_an_uncached_tfds_set_is_caught_before_training():
    # large sets are read batch by batch, so the check cannot wait for the first batch
    config = load_config("digits")
    # 1,100 pictures of 1024 x 1024 x 1 bytes are over ImageSource's 1 GiB cache limit
    config.data.name, config.data.image_size, config.data.channels = "cifar10", 1024, 1
    with tfds.testing.mock_data(num_examples=1100), pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.channels=1" in one_line(error)


@pytest.mark.parametrize("kind", ["unset", "missing", "empty"])
def test_folder_path_errors_name_data_path(tmp_path, kind):
    config = load_config("digits")
    config.data.name, config.data.channels = "folder", 3
    if kind == "missing":
        config.data.path = str(tmp_path / "nowhere")
    elif kind == "empty":
        config.data.path = str(tmp_path)
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.path=" in one_line(error)
