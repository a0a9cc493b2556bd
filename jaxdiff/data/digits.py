"""The offline image set: scikit-learn's 8x8 handwritten digits as a TFDS dataset.

scikit-learn ships the 1,797 images of the UCI "Optical Recognition of Handwritten Digits" test
set (grey levels 0..16, 10 classes). `prepare_digits(data_dir)` writes them once as an
array_record TFDS dataset named "digits8" (no TensorFlow needed to write or read), so the digits
go through exactly the `tfds.data_source` path of MNIST, CIFAR-10 and the other TFDS sets.
Split: every 5th image (by index) is "test" (360 images), the rest "train" (1,437).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

NAME = "digits8"
DEFAULT_DATA_DIR = os.path.join(os.path.expanduser("~"), ".cache", "jaxdiff", "tfds")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 images [N, 8, 8, 1] (0..16 rescaled to 0..255) and labels [N]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def in_test_split(indices: np.ndarray) -> np.ndarray:
    """The split rule, in one place: every 5th image by index is "test", the rest "train"."""
    return np.asarray(indices) % 5 == 0


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 images [N, 8, 8, 1] and labels [N] of split "train" (1,437) or "test" (360)."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is invalid: train or test")
    images, labels = digits_arrays()
    chosen = in_test_split(np.arange(len(images))) == (split == "test")
    return images[chosen], labels[chosen]


class Digits8(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for the 8x8 digits (features: image uint8 [8, 8, 1], label 0..9)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn's load_digits, every 5th image held out as test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ship with scikit-learn
        return {"train": self._generate_examples(test=False),
                "test": self._generate_examples(test=True)}

    def _generate_examples(self, test: bool):
        images, labels = digits_arrays()
        for index in range(len(images)):
            if in_test_split(index) == test:
                yield index, {"image": images[index], "label": int(labels[index])}


def prepare_digits(data_dir: str | None = None) -> str:
    """Write the digits8 TFDS dataset under `data_dir` (once); return the data_dir."""
    data_dir = data_dir or DEFAULT_DATA_DIR
    builder = Digits8(data_dir=data_dir, file_format="array_record")
    if not os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
        # nothing to download: never look for a copy on GCS (and keep SSL checks on)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return data_dir
