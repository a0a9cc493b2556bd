"""The offline digits (jaxdiff.data.digits): scikit-learn's 8 x 8 digits written once as a TFDS
set (ArrayRecord), read back equal to scikit-learn's, and opened by the digits config.

Expected values come from scikit-learn's digits themselves, never from the code under test.
"""

import os

import numpy as np
import pytest

from jaxdiff.data.digits import Digits8, prepare_digits
from jaxdiff.data.images import make_tfds_source
from jaxdiff.errors import ConfigError
from jaxdiff.train_loop import prepare

from helpers import load_config, one_line


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


def test_digits_config_opens_the_digits(digits_dir):
    config = load_config("digits")
    config.data.data_dir = digits_dir
    source = prepare(config)
    assert source.shape == (8, 8, 1) and source.num_classes == 10 and source.length == 1437


def test_wrong_channel_count_names_data_channels(digits_dir):
    """The check is the image source's (jaxdiff.data.images); the digits are its 1-channel set."""
    config = load_config("digits")
    config.data.data_dir, config.data.channels = digits_dir, 3
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.channels=3" in one_line(error)
