"""Noise schedules: beta tables and everything derived from them.

A `Schedule` is a NamedTuple of float32 arrays of shape [T], so it is a pytree that can be passed
into (and closed over by) jitted functions. All tables are computed in float64 NumPy from the
betas and only then cast to float32, so that products such as `alphas_cumprod` keep full precision
for T = 1000 and beyond.

Notation follows Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", eqs. 4, 6, 7):
alpha_t = 1 - beta_t, abar_t = prod_{s <= t} alpha_s, with integer t in [0, T) and t = 0 the
least noisy step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

SCHEDULE_KINDS = ("linear", "cosine", "sigmoid")
_MAX_BETA = 0.999


class Schedule(NamedTuple):
    """Float32 tables of a discrete diffusion process, each of shape [T]."""

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    log_one_minus_alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    snr: np.ndarray

    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps (static: read from the table shape)."""
        return self.betas.shape[0]


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Linear betas of Ho et al. 2020, rescaled so that any T gives the same total noise.

    beta_t = linspace(s * beta_start, s * beta_end, T) with s = 1000 / T (the scaling used by
    denoising-diffusion-pytorch and improved-diffusion). For T < 21 the last betas would reach 1;
    they are clipped to 0.999 like the other schedules so that every T gives a valid process.
    """
    scale = 1000.0 / timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=np.float64)
    return np.clip(betas, 0.0, _MAX_BETA)


def _betas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """beta_t = 1 - abar_t / abar_{t-1} for a table abar of length T + 1, clipped to [0, 0.999]."""
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return np.clip(betas, 0.0, _MAX_BETA)


def cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal 2021 (eq. 17).

    abar(t) = f(t) / f(0), f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2 for t = 0..T, and
    beta_t = 1 - abar(t + 1) / abar(t), clipped to 0.999 to avoid the singularity at t = T.
    """
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi * 0.5) ** 2
    return _betas_from_alphas_cumprod(f / f[0])


def sigmoid_betas(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0
) -> np.ndarray:
    """Sigmoid schedule of Jabri et al. 2022 ("Scalable Adaptive Computation", algorithm 1).

    abar(t) = (sigmoid(end / tau) - sigmoid(((t / T)(end - start) + start) / tau))
              / (sigmoid(end / tau) - sigmoid(start / tau)), normalised so abar(0) = 1;
    beta_t = 1 - abar(t + 1) / abar(t), clipped to 0.999.
    """
    if not end > start:
        raise ValueError(f"sigmoid schedule needs end > start, got start={start}, end={end}")
    if not tau > 0:
        raise ValueError(f"sigmoid schedule needs tau > 0, got tau={tau}")
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    alphas_cumprod = (v_end - sigmoid((steps * (end - start) + start) / tau)) / (v_end - v_start)
    return _betas_from_alphas_cumprod(alphas_cumprod / alphas_cumprod[0])


_BETA_FNS = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}


def schedule_from_betas(betas) -> Schedule:
    """Every table of the process defined by `betas` (float64 maths, float32 storage).

    posterior q(x_{t-1} | x_t, x0) = N(coef1_t x0 + coef2_t x_t, var_t) (Ho et al. eq. 7):
      var_t   = beta_t (1 - abar_{t-1}) / (1 - abar_t)
      coef1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t)
      coef2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
    with abar_{-1} = 1, so var_0 = 0 and its log is clipped at log(1e-20).
    snr_t = abar_t / (1 - abar_t) (Kingma et al. 2021).
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    bad = ~((betas > 0) & (betas < 1))
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(f"betas must lie in (0, 1), got betas[{index}]={betas[index]}")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    one_minus = 1.0 - alphas_cumprod
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / one_minus
    tables = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
        log_one_minus_alphas_cumprod=np.log(one_minus),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.maximum(posterior_variance, 1e-20)),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / one_minus,
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / one_minus,
        snr=alphas_cumprod / one_minus,
    )
    return Schedule(**{name: value.astype(np.float32) for name, value in tables.items()})


def make_schedule(kind, timesteps: int | None = None, **kwargs) -> Schedule:
    """Build a `Schedule`.

    kind: "linear" (Ho et al. 2020; beta from 1e-4 to 0.02, both scaled by 1000 / T),
      "cosine" (Nichol & Dhariwal 2021; s = 0.008), "sigmoid" (Jabri et al. 2022; start = -3,
      end = 3, tau = 1), or an array of betas in (0, 1) (then T = len(betas)).
    timesteps: T >= 1 (default 1000 for a named kind).
    kwargs: the named kind's parameters (beta_start / beta_end, s, start / end / tau).
    """
    if not isinstance(kind, str):
        betas = np.asarray(kind, dtype=np.float64)
        if timesteps is not None and betas.ndim == 1 and timesteps != betas.shape[0]:
            raise ValueError(f"timesteps={timesteps} does not match len(betas)={betas.shape[0]}")
        if kwargs:
            raise ValueError(f"a betas array takes no schedule arguments, got {sorted(kwargs)}")
        return schedule_from_betas(betas)
    if kind not in _BETA_FNS:
        raise ValueError(f"unknown schedule kind={kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
    timesteps = 1000 if timesteps is None else timesteps
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ValueError(f"timesteps must be an integer >= 1, got timesteps={timesteps!r}")
    try:
        betas = _BETA_FNS[kind](int(timesteps), **kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments {sorted(kwargs)} for schedule kind={kind!r}: {error}") from None
    return schedule_from_betas(betas)


def respaced_timesteps(timesteps: int, num_steps: int) -> np.ndarray:
    """The K = `num_steps` of the T times that a respaced DDPM keeps, int64 [K] ascending.

    Even spacing as improved-diffusion's `space_timesteps(T, [K])` (one section): the positions
    0, r, 2 r, ... with r = (T - 1) / (K - 1), accumulated in float64 and rounded half to even
    (Python's round), so t = 0 and t = T - 1 are kept and K = T keeps every time. K = 1 keeps
    T - 1 (improved-diffusion keeps 0, whose single step would return the noise unchanged):
    one step from x_T to the x0 prediction. ValueError naming num_steps unless 1 <= K <= T.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not (
            1 <= num_steps <= timesteps):
        raise ValueError(f"num_steps={num_steps!r} must be an integer in [1, T={timesteps}]")
    if num_steps == 1:
        return np.asarray([timesteps - 1])
    stride = (timesteps - 1) / (num_steps - 1)
    times, position = [], 0.0
    for _ in range(num_steps):
        times.append(round(position))
        position += stride
    return np.asarray(sorted(set(times)))


def respace_schedule(s: Schedule, times) -> Schedule:
    """The process that visits only `times` (ascending) of `s` (improved-diffusion's
    `SpacedDiffusion`): beta'_i = 1 - abar[t_i] / abar[t_{i-1}] with abar[t_{-1}] = 1, so that
    abar'_i = abar[t_i]; every other table (posterior variances, coefficients) follows from
    these betas (`make_schedule`). Computed in float64 from s's float32 betas and alphas, as
    1 - exp(sum of log(1 - beta_t) over t_{i-1} < t <= t_i), which keeps small betas to float32
    precision (1 - a ratio of float32 abar would lose them). Needs a concrete (not traced)
    schedule."""
    if isinstance(s.betas, jax.core.Tracer):
        raise ValueError("respacing (num_steps) needs a concrete schedule, not one traced by jit")
    times = np.asarray(times)
    if times.ndim != 1 or times.size < 1 or np.any(np.diff(times) <= 0) or times[0] < 0 or (
            times[-1] >= s.timesteps):
        raise ValueError(f"times must be increasing and in [0, T={s.timesteps}), got {times}")
    betas, alphas = np.asarray(s.betas, np.float64), np.asarray(s.alphas, np.float64)
    # log(1 - beta) from whichever float32 table holds it more precisely
    log_alphas = np.where(betas < 0.5, np.log1p(-betas), np.log(alphas))
    log_alphas_cumprod = np.cumsum(log_alphas)[times]
    previous = np.concatenate([[0.0], log_alphas_cumprod[:-1]])
    return make_schedule(-np.expm1(log_alphas_cumprod - previous))
