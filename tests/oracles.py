"""Reference maths for the tests: NumPy float64 straight from the papers, never from jaxdiff.

Nothing here imports jaxdiff or JAX, so an expectation computed here cannot inherit a bug of the
code under test.

  schedules  linear: Ho et al. 2020, sec. 4 (beta 1e-4 .. 0.02 over T = 1000, both scaled by
             1000 / T for other T, as denoising-diffusion-pytorch / improved-diffusion, clipped
             to 0.999); cosine: Nichol & Dhariwal 2021, eq. 17; sigmoid: Jabri et al. 2022 as in
             denoising-diffusion-pytorch's `sigmoid_beta_schedule`.
  tables     Ho et al. 2020, eqs. 4, 6, 7 (forward process and posterior), Kingma et al. 2021
             (snr).
  targets    x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (Ho et al. 2020, eq. 4),
             v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, sec. 4).
  samplers   the exact Gaussian-data oracle of the DDPM and DDIM samplers (see `denoiser`).
"""

import numpy as np

MAX_BETA = 0.999
OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")

# E(cos t) = 0 and E(sin t) = 2 / pi for t ~ U(0, pi); the two moons are mirror images, so the
# mean of the noiseless set is (1/2, 1/4).
MOONS_MEAN = (0.5, 0.25)


# --- schedules ---------------------------------------------------------------------------------

def betas(kind, timesteps, **kwargs):
    """float64 betas [T] of the "linear", "cosine" or "sigmoid" schedule, with its keyword
    arguments (beta_start, beta_end; s; start, end, tau) and the papers' defaults."""
    if kind == "linear":
        scale = 1000.0 / timesteps
        raw = np.linspace(scale * kwargs.get("beta_start", 1e-4),
                          scale * kwargs.get("beta_end", 0.02), timesteps)
        return np.clip(raw, 0.0, MAX_BETA)
    t = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64) / timesteps
    if kind == "cosine":
        s = kwargs.get("s", 0.008)
        abar = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    else:
        start, end, tau = kwargs.get("start", -3.0), kwargs.get("end", 3.0), kwargs.get("tau", 1.0)
        sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
        abar = (-sigmoid((t * (end - start) + start) / tau) + sigmoid(end / tau)) / (
            sigmoid(end / tau) - sigmoid(start / tau))
    abar = abar / abar[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, MAX_BETA)


def tables(betas):
    """Every table of the process with these betas, in float64, keyed by jaxdiff's names."""
    betas = np.asarray(betas, np.float64)
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "log_one_minus_alphas_cumprod": np.log(1.0 - abar),
        "sqrt_recip_alphas_cumprod": 1.0 / np.sqrt(abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        "snr": abar / (1.0 - abar),
    }


def schedule(kind, timesteps, **kwargs):
    """`tables(betas(kind, timesteps, **kwargs))`."""
    return tables(betas(kind, timesteps, **kwargs))


def alphas_cumprod(kind, timesteps, **kwargs):
    return schedule(kind, timesteps, **kwargs)["alphas_cumprod"]


# --- the forward process and the objectives ----------------------------------------------------

def per_example(values, ndim):
    """[B] -> [B, 1, ..., 1] (explicit: the test session raises on implicit rank promotion)."""
    return np.asarray(values).reshape((-1,) + (1,) * (ndim - 1))


def q_sample(abar, x0, eps):
    """x_t for per-example `abar` already shaped to broadcast against x0."""
    return np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * eps


def target(objective, x0, eps, abar):
    """What a model trained on `objective` predicts: eps, x0 or v."""
    return {"pred_noise": eps, "pred_x0": x0,
            "pred_v": np.sqrt(abar) * eps - np.sqrt(1.0 - abar) * x0}[objective]


# --- the samplers' Gaussian-data oracle ----------------------------------------------------------
#
# For data x0 ~ N(mu, sd^2) (independently per dimension) the exact denoiser is linear in x_t:
#     E[x0 | x_t] = mu + g_t (x_t - sqrt(abar_t) mu),
#     g_t = sqrt(abar_t) sd^2 / (abar_t sd^2 + 1 - abar_t).
# With it every sampler step is affine in x_t plus Gaussian noise, x' = A x + B + sigma z, so the
# sampler's output is exactly Gaussian: m' = A m + B, v' = A^2 v + sigma^2 from x_T ~ N(0, 1).
#   DDPM  (Ho et al. 2020, eqs. 6-7 and algorithm 2) x_{t-1} = c1_t x0_hat + c2_t x_t + sigma_t z,
#         sigma_t^2 = beta~_t ("fixed_small") or beta_t ("fixed_large"), no noise at t = 0.
#   DDIM  (Song et al. 2021, eqs. 12 and 16) x_next = sqrt(abar_next) x0_hat + c eps_hat + sigma z,
#         sigma = eta sqrt((1 - abar_next) / (1 - abar)) sqrt(1 - abar / abar_next),
#         c = sqrt(1 - abar_next - sigma^2), abar_next = 1 after the last visited time.

def denoiser(abar_t, mu, sd):
    """x0_hat = g x + h: the exact E[x0 | x_t] as (g, h)."""
    g = np.sqrt(abar_t) * sd**2 / (abar_t * sd**2 + 1.0 - abar_t)
    return g, mu - g * np.sqrt(abar_t) * mu


def ddpm_steps(variance, mu, sd, timesteps):
    """[(A, B, sigma^2)] of every ancestral step on the linear schedule, t = T-1 .. 0."""
    table = schedule("linear", timesteps)
    steps = []
    for t in range(timesteps - 1, -1, -1):
        g, h = denoiser(table["alphas_cumprod"][t], mu, sd)
        coef1, coef2 = table["posterior_mean_coef1"][t], table["posterior_mean_coef2"][t]
        if t == 0:
            sigma2 = 0.0
        elif variance == "fixed_small":
            sigma2 = table["posterior_variance"][t]
        else:
            sigma2 = table["betas"][t]
        steps.append((coef1 * g + coef2, coef1 * h, sigma2 * np.ones_like(mu)))
    return steps


def ddim_sigma_and_c(abar, abar_next, eta):
    """The DDIM step's noise scale sigma and eps coefficient c (Song et al. 2021, eqs. 12, 16)."""
    sigma = eta * np.sqrt((1.0 - abar_next) / (1.0 - abar)) * np.sqrt(1.0 - abar / abar_next)
    return sigma, np.sqrt(1.0 - abar_next - sigma**2)


def ddim_steps(times, eta, mu, sd, timesteps):
    """[(A, B, sigma^2)] of DDIM on the linear schedule over the visited `times` (descending; the
    last goes to abar = 1)."""
    abar = alphas_cumprod("linear", timesteps)
    steps = []
    for i, t in enumerate(times):
        a, a_next = abar[t], (abar[times[i + 1]] if i + 1 < len(times) else 1.0)
        g, h = denoiser(a, mu, sd)
        eps_A, eps_B = (1.0 - np.sqrt(a) * g) / np.sqrt(1.0 - a), -np.sqrt(a) * h / np.sqrt(1.0 - a)
        sigma, c = ddim_sigma_and_c(a, a_next, eta)
        steps.append((np.sqrt(a_next) * g + c * eps_A, np.sqrt(a_next) * h + c * eps_B,
                      sigma**2 * np.ones_like(mu)))
    return steps


def trailing_times(timesteps, num_steps):
    """int(linspace(-1, T-1, n+1)) from high to low, in exact integer arithmetic:
    -1 + T k / n = (T k - n) / n >= 0 for k >= 1 (n <= T), so truncation is floor division."""
    return [(timesteps * k - num_steps) // num_steps for k in range(num_steps, 0, -1)]


def propagate(steps, m=0.0, v=1.0):
    """Mean and variance after the affine-Gaussian steps, from N(m, v)."""
    for A, B, sigma2 in steps:
        m, v = A * m + B, A**2 * v + sigma2
    return m, v


def compose(steps):
    """The deterministic part of the whole chain: out = A x_T + B + noise."""
    A, B = 1.0, 0.0
    for a, b, _ in steps:
        A, B = a * A, a * B + b
    return A, B


# --- images ------------------------------------------------------------------------------------

def uint8_levels(x):
    """Model space [-1, 1] back to 0..255 by the definition x = u / 127.5 - 1."""
    return np.round((np.asarray(x, np.float64) + 1.0) * 127.5).astype(np.int64)


# --- respaced DDPM and learned variances --------------------------------------------------------
#
# Respacing (Nichol & Dhariwal 2021, sec. 4): the process that keeps only the times
# t_0 < ... < t_{K-1} has betas' beta'_i = 1 - abar[t_i] / abar[t_{i-1}] (abar[t_{-1}] = 1), so
# abar'_i = abar[t_i], and its ancestral sampler calls the model at the original t_i. A learned
# variance (eq. 15) is log Sigma = f log beta_t + (1 - f) log beta~_t, with f = (v + 1) / 2.

def respaced_ddpm_steps(variance, mu, sd, timesteps, times, fraction=0.5):
    """[(A, B, sigma^2)] of ancestral DDPM on the linear T-step schedule respaced to the
    ascending `times`, i = K-1 .. 0, with the exact denoiser of N(mu, sd^2) at abar[t_i].
    variance: "fixed_small" (beta~'), "fixed_large" (beta') or "learned_range" (the constant
    interpolation `fraction` f between them, in log space); no noise at the last step."""
    abar = alphas_cumprod("linear", timesteps)[np.asarray(times)]
    table = tables(1.0 - abar / np.concatenate([[1.0], abar[:-1]]))
    steps = []
    for i in range(len(times) - 1, -1, -1):
        g, h = denoiser(abar[i], mu, sd)
        coef1, coef2 = table["posterior_mean_coef1"][i], table["posterior_mean_coef2"][i]
        small, large = table["posterior_variance"][i], table["betas"][i]
        if i == 0:
            sigma2 = 0.0
        elif variance == "fixed_small":
            sigma2 = small
        elif variance == "fixed_large":
            sigma2 = large
        else:
            sigma2 = np.exp(fraction * np.log(large) + (1.0 - fraction) * np.log(small))
        steps.append((coef1 * g + coef2, coef1 * h, sigma2 * np.ones_like(mu)))
    return steps
