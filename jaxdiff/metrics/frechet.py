"""The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017), the
"F" of FID: the features are Inception-v3's for images (`inception.py`) or the digits
classifier's for the offline digits set (`digits_classifier.py`).

Computed in float64 NumPy/SciPy with the same numerical safeguards as pytorch-fid: eps * I added
to both covariances when their product has no finite square root, negligible imaginary parts
dropped. No JAX or Flax.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and unbiased covariance [F, F] (float64) of a feature array [N, F]."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must have shape [N, F], got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2).

    Scalars are read as 1-D Gaussians (sigma is then the variance). Computed in float64. When
    S1 S2 has no finite square root (a singular product), eps is added to both diagonals, as
    pytorch-fid does; an imaginary part left by round-off is dropped, a large one raises.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors must have equal shapes [F], got {mu1.shape}, {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must have shape {(dim, dim)}, got {sigma1.shape}, "
                         f"{sigma2.shape}")

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: the product of the covariances is singular; adding {eps} to the "
                      "diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(dim) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ValueError(f"FID: matrix square root has an imaginary component of {imag:g}")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(value)


def frechet_distance_from_features(features1, features2) -> float:
    """Fréchet distance between Gaussians fitted to two feature arrays [N1, F] and [N2, F]."""
    mu1, sigma1 = feature_statistics(features1)
    mu2, sigma2 = feature_statistics(features2)
    return frechet_distance(mu1, sigma1, mu2, sigma2)
