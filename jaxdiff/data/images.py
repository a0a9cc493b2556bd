"""Image data: TFDS sets read through `tfds.data_source` (no TensorFlow), the offline digits, and
a folder of the user's own pictures.

Every source is a random-access list of uint8 images [H, W, C] (and labels). `ImageSource` turns
it into training batches: for step k the global batch is examples k*B ... (k+1)*B - 1 of an
endless sequence of shuffled epochs (the permutation of epoch e comes from
default_rng([seed, e])), so a batch is a pure function of (seed, step) and a resumed run reads
exactly what an uninterrupted one would. Each process of a multi-host job takes its own slice of
the global batch. Images are centre-cropped to a square, resized to `image_size`, optionally
flipped left-right, and scaled to [-1, 1].
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Callable, Sequence

import numpy as np

from jaxdiff.data.codecs import ImageCodec, to_model_space, to_uint8  # noqa: F401

log = logging.getLogger("jaxdiff")

# name -> (TFDS name, image key, label key or None, number of classes)
TFDS_SETS = {
    "mnist": ("mnist", "image", "label", 10),
    "fashion_mnist": ("fashion_mnist", "image", "label", 10),
    "cifar10": ("cifar10", "image", "label", 10),
    "celeb_a": ("celeb_a", "image", None, 0),
    "oxford_flowers102": ("oxford_flowers102", "image", "label", 102),
    "digits": ("digits8", "image", "label", 10),
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop uint8 [H, W, C] to a square and resize it to [size, size, C] (bicubic, PIL)."""
    height, width = image.shape[:2]
    if height == width == size:
        return image
    from PIL import Image

    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    squeeze = square.shape[-1] == 1
    pil = Image.fromarray(square[..., 0] if squeeze else square)
    resized = np.asarray(pil.resize((size, size), Image.BICUBIC))
    return resized[..., None] if squeeze else resized


class ImageSource:
    """Shuffled, resized, normalised batches from a random-access image list."""

    def __init__(self, name: str, read: Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]],
                 length: int, *, image_size: int, channels: int, num_classes: int, seed: int,
                 random_flip: bool, process_index: int = 0, process_count: int = 1,
                 cache: bool = True):
        if length < 1:
            raise ValueError(f"data.name={name!r} holds no images")
        self.name, self.length, self.seed = name, length, seed
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.random_flip = random_flip
        self.process_index, self.process_count = process_index, process_count
        self._read = read
        self._epoch, self._permutation = -1, None
        self._cache = None
        self.shape = (image_size, image_size, channels)
        self.size = length
        self.codec = ImageCodec()
        if cache and length * image_size * image_size * channels <= 2**30:
            self._cache = self._load(np.arange(length))

    def _load(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None:
            return self._cache[0][indices], self._cache[1][indices]
        images, labels = self._read(indices)
        return self._prepare(images), labels

    def _prepare(self, images) -> np.ndarray:
        out = np.empty((len(images),) + self.shape, np.uint8)
        for i, image in enumerate(images):
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[..., None]
            if image.shape[-1] != self.channels:
                raise ValueError(
                    f"data.channels={self.channels} but {self.name} images have "
                    f"{image.shape[-1]} channel(s) (shape {image.shape})")
            out[i] = center_crop_resize(image, self.image_size)
        return out

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.length)
        return self._permutation

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        """Dataset indices of this process's share of the global batch of `step`."""
        if batch_size % self.process_count:
            raise ValueError(f"train.batch_size={batch_size} is not divisible by the "
                             f"{self.process_count} processes")
        if batch_size > self.length:  # a batch would repeat images
            raise ValueError(f"train.batch_size={batch_size} is larger than data.name="
                             f"{self.name!r}, which holds {self.length} images")
        local = batch_size // self.process_count
        positions = step * batch_size + self.process_index * local + np.arange(local)
        epochs, offsets = np.divmod(positions, self.length)
        out = np.empty(local, np.int64)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            out[where] = self._epoch_permutation(int(epoch))[offsets[where]]
        return out

    def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """{"x": float32 [b, H, W, C] in [-1, 1], "labels": int32 [b]} for training step `step`."""
        images, labels = self._load(self.indices(step, batch_size))
        if self.random_flip:
            flip = np.random.default_rng([self.seed, step, 1]).random(batch_size)
            flip = flip[self.process_index * len(images):(self.process_index + 1) * len(images)]
            images = np.where(flip[:, None, None, None] < 0.5, images[:, :, ::-1], images)
        return {"x": to_model_space(images), "labels": labels.astype(np.int32)}

    def fresh(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """{"x": n uint8 images, "labels": their labels}, drawn without replacement when
        possible, for evaluation."""
        rng = np.random.default_rng([seed, 2**31 - 2])
        indices = rng.choice(self.length, n, replace=n > self.length)
        images, labels = self._load(indices)
        return {"x": images, "labels": labels}


def tfds_reader(source, image_key: str, label_key: str | None):
    """A `read(indices)` over a `tfds.data_source`."""

    def read(indices):
        # one record at a time: __getitems__ of some tfds / array_record versions is broken
        records = [source[int(index)] for index in indices]
        images = [record[image_key] for record in records]
        labels = np.array([record[label_key] if label_key else 0 for record in records])
        return images, labels

    return read


def make_tfds_source(name: str, *, split: str = "train", data_dir: str | None = None,
                     image_size: int, channels: int, seed: int, random_flip: bool,
                     process_index: int = 0, process_count: int = 1) -> ImageSource:
    """A TFDS image set by our short name (see TFDS_SETS) or any TFDS name with "image" and
    "label" features. The set must already be prepared in `data_dir` in a random-access format
    (`tfds build NAME --file_format=array_record`, or `tfds.builder(name,
    file_format="array_record").download_and_prepare()`; TFDS's default, TFRecord, cannot be
    read without TensorFlow, and preparing may itself need TensorFlow). "digits" is written on
    first use from scikit-learn's copy."""
    import tensorflow_datasets as tfds

    tfds_name, image_key, label_key, num_classes = TFDS_SETS.get(name, (name, "image", "label", 0))
    if name == "digits":
        from jaxdiff.data.digits import prepare_digits

        data_dir = prepare_digits(data_dir)
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir,
                                  download=False)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(f"data.name={name!r} is neither one of {', '.join(TFDS_SETS)}, folder "
                         f"nor a TFDS data set name") from None
    except Exception as error:  # tfds raises several types for "not prepared" / "no such split"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if first.endswith(":") and ". " in first:  # "... not supported. Possible root causes:"
            first = first.rsplit(". ", 1)[0] + "."
        where = f" --data_dir={data_dir}" if data_dir else ""
        raise ValueError(f"data.name={name!r}: TFDS cannot open {tfds_name!r} split {split!r} "
                         f"in data_dir={data_dir!r} ({first}); is it prepared for random access? "
                         f"`tfds build {tfds_name} --file_format=array_record{where}`") from None
    features = source.dataset_info.features
    if image_key not in features:
        raise ValueError(f"data.name={name!r} has no {image_key!r} feature (it has "
                         f"{', '.join(features.keys())})")
    # checked here too because sets too large to cache are read only when training starts
    image_channels = (getattr(features[image_key], "shape", None) or (None,))[-1]
    if image_channels is not None and image_channels != channels:
        raise ValueError(f"data.channels={channels} but {name} images have {image_channels} "
                         f"channel(s)")
    if label_key and label_key not in features:
        label_key = None
    if label_key and not num_classes:
        num_classes = getattr(features[label_key], "num_classes", 0) or 0
    return ImageSource(name, tfds_reader(source, image_key, label_key), len(source),
                       image_size=image_size, channels=channels,
                       num_classes=num_classes if label_key else 0, seed=seed,
                       random_flip=random_flip, process_index=process_index,
                       process_count=process_count)


def list_images(folder: str) -> list[str]:
    """Image files (by extension) under `folder`, recursively, sorted."""
    if not os.path.isdir(folder):
        raise ValueError(f"data.path={folder!r} is not a directory")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise ValueError(f"data.path={folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def _decode(path: str, channels: int, size: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if array.ndim == 2:
        array = array[..., None]
    return center_crop_resize(array, size)


def make_folder_source(folder: str, *, image_size: int, channels: int, seed: int,
                       random_flip: bool, strict: bool = False, process_index: int = 0,
                       process_count: int = 1) -> ImageSource:
    """The images under `folder` (converted to `channels`), decoded once in parallel.
    Unreadable files are skipped and counted in the log; with `strict` the first one is an error.
    """
    paths = list_images(folder)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        decoded = list(pool.map(lambda p: _decode(p, channels, image_size), paths))
    bad = [path for path, image in zip(paths, decoded) if image is None]
    if bad and strict:
        raise ValueError(f"data.path={folder!r}: cannot decode {bad[0]!r} (data.strict=True)")
    if bad:
        log.warning("skipped %d unreadable image file(s) in %s, e.g. %s", len(bad), folder, bad[0])
    images = np.stack([image for image in decoded if image is not None]) if len(bad) < len(paths) \
        else np.zeros((0, image_size, image_size, channels), np.uint8)
    if not len(images):
        raise ValueError(f"data.path={folder!r} holds no readable images ({len(bad)} unreadable)")
    labels = np.zeros(len(images), np.int64)
    return ImageSource(folder, lambda idx: (images[idx], labels[idx]), len(images),
                       image_size=image_size, channels=channels, num_classes=0, seed=seed,
                       random_flip=random_flip, process_index=process_index,
                       process_count=process_count)
