"""One interface for every training data set, and `open_source(config)`.

A data source, points or images, has
  name         the data set's name
  shape        one example's shape in model space: (D,) for points, (H, W, C) for images
  num_classes  labels per example (0: none)
  size         number of examples, or None for an endless generator (the toy sets)
  codec        data space <-> model space (`jaxdiff.data.codecs`), stored in run.json
  batch(step, batch_size)
               {"x": float32 model space, "labels": int32 (labelled sets)}: this process's
               slice of the global batch of `step`, a pure function of (seed, step), so a resumed
               run reads exactly the batches of an uninterrupted one
  fresh(n, seed)
               {"x": n examples in data space (, "labels")} for evaluation
The training loop, the evaluation and `Run` see only this interface.
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Iterable, Iterator, Protocol

import jax
import numpy as np

from jaxdiff.errors import ConfigError


class DataSource(Protocol):
    name: str
    shape: tuple[int, ...]
    num_classes: int
    size: int | None
    codec: object

    def batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]: ...

    def fresh(self, n: int, seed: int) -> dict[str, np.ndarray]: ...


def open_source(config) -> DataSource:
    """The data source of `config.data` (a validated config), split over this job's processes;
    ConfigError naming the field on bad input (missing files, unknown sets, too few examples)."""
    data = config.data
    common = dict(seed=config.seed, process_index=jax.process_index(),
                  process_count=jax.process_count())
    try:
        if "image_size" not in data:  # a point-data config
            from jaxdiff.data.points import make_point_source

            noise = None if data.noise < 0 else float(data.noise)
            source = make_point_source(data.name, path=data.path or None, noise=noise,
                                       holdout=data.get("holdout"),
                                       eval_path=data.get("eval_path") or None, **common)
        else:
            from jaxdiff.data.images import make_folder_source, make_tfds_source

            common.update(image_size=data.image_size, channels=data.channels,
                          random_flip=data.random_flip)
            if data.name == "folder":
                source = make_folder_source(data.path, strict=data.get("strict", False), **common)
            else:
                source = make_tfds_source(data.name, split=data.get("split", "train"),
                                          data_dir=data.get("data_dir") or None, **common)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    _check_fits(config, source)
    return source


def _check_fits(config, source: DataSource) -> None:
    """The model's classes and the batch size against what the data holds."""
    num_classes = config.model.num_classes
    if num_classes and source.num_classes == 0:
        raise ConfigError(
            f"config.model.num_classes={num_classes} is invalid: data.name={config.data.name!r} "
            f"has no class labels")
    if num_classes and num_classes < source.num_classes:
        raise ConfigError(
            f"config.model.num_classes={num_classes} is invalid: data.name={config.data.name!r} "
            f"has {source.num_classes} classes")
    if source.size is not None and source.size < config.train.batch_size:
        where = (f"data.path={config.data.path!r}" if config.data.path
                 else f"data.name={config.data.name!r}")
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} is invalid: {where} holds only "
            f"{source.size} examples, fewer than one batch")


def prefetch_batches(source, steps: Iterable[int], batch_size: int, *,
                     size: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """`source.batch(step, batch_size)` for each step in order, read ahead by one background
    thread that keeps at most `size` batches waiting (so memory stays bounded)."""
    if size < 1:
        raise ValueError(f"prefetch size={size} must be >= 1")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = collections.deque()
        for step in steps:
            pending.append(pool.submit(source.batch, step, batch_size))
            if len(pending) > size:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
