"""Codecs: the map between a data set's own values (data space) and model space.

Every data source carries one, and run.json stores it (`to_dict`), so a restored run turns
samples back into data without the data:
  Standardizer  point data: z = (x - mean) / std per dimension, fit on the training data
  ImageCodec    images: uint8 [0, 255] <-> float32 [-1, 1]
Both have `encode(data) -> model space`, `decode(model) -> data space` and `to_dict()`;
`codec_from_dict` reads any of them back (and run.json files written before codecs had a kind).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

_MIN_STD = 1e-6


def to_model_space(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return np.asarray(images).astype(np.float32) / 127.5 - 1.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255] (clipped)."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: == on array fields is ambiguous
class Standardizer:
    """Per-dimension affine map to zero mean and unit variance, z = (x - mean) / std, with
    mean [D] and std [D] in float64 (the fit statistics; the maps return float32)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardizer":
        """Sample mean and (population) std of x [N, D]; std is floored at 1e-6 so that a
        constant column maps to 0 instead of dividing by zero."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or len(x) < 1:
            raise ValueError(f"x.shape={x.shape} cannot be standardised; expected [N, D]")
        return cls(mean=x.mean(axis=0), std=np.maximum(x.std(axis=0), _MIN_STD))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """z = (x - mean) / std as float32."""
        return ((np.asarray(x, np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """x = z * std + mean as float32."""
        return (np.asarray(z, np.float64) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-serialisable {"mean": [...], "std": [...]} (float64 values round-trip exactly)."""
        return {"mean": np.asarray(self.mean, np.float64).tolist(),
                "std": np.asarray(self.std, np.float64).tolist()}

    @classmethod
    def from_dict(cls, payload: dict) -> "Standardizer":
        """Inverse of `to_dict`."""
        mean = np.asarray(payload["mean"], np.float64)
        std = np.asarray(payload["std"], np.float64)
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise ValueError(f"standardizer mean {mean.shape} and std {std.shape} must be two "
                             f"[D] lists with std > 0")
        return cls(mean=mean, std=std)

    def save(self, path: str) -> None:
        """Write `to_dict()` as JSON."""
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle)

    @classmethod
    def load(cls, path: str) -> "Standardizer":
        """Read a file written by `save`."""
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Data space -> model space (`transform`)."""
        return self.transform(x)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Model space -> data space (`inverse`)."""
        return self.inverse(z)


class ImageCodec:
    """uint8 images [..., H, W, C] in [0, 255] <-> float32 in [-1, 1]."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 [0, 255] -> float32 [-1, 1]; float input is taken as model space already."""
        images = np.asarray(images)
        return to_model_space(images) if images.dtype == np.uint8 else images.astype(np.float32)

    def decode(self, x: np.ndarray) -> np.ndarray:
        """float [-1, 1] -> uint8 [0, 255] (clipped)."""
        return to_uint8(x)

    def to_dict(self) -> dict:
        return {"kind": "uint8_image"}

    def __eq__(self, other):
        return isinstance(other, ImageCodec)

    def __hash__(self):
        return hash(ImageCodec)


def codec_to_dict(codec) -> dict:
    """`codec.to_dict()` with its kind, as run.json stores it."""
    payload = dict(codec.to_dict())
    payload.setdefault("kind", "standardizer")
    return payload


def codec_from_dict(payload: dict | None):
    """The codec that `codec_to_dict` wrote. None (run.json files of images written before codecs
    were stored) is the image codec; a dict without a kind is a Standardizer."""
    if payload is None or payload.get("kind") == "uint8_image":
        return ImageCodec()
    if payload.get("kind", "standardizer") != "standardizer":
        raise ValueError(f"unknown codec kind {payload['kind']!r} in run.json")
    return Standardizer.from_dict(payload)
