"""Reference samples from diffusers' schedulers, for tests/test_diffusers_parity.py.

Runs in a separate environment with torch and diffusers (neither is a jaxdiff dependency) and
does not import jaxdiff, so the reference is independent of the implementation it checks:

    python3 -m venv /tmp/dvenv
    /tmp/dvenv/bin/pip install /opt/wheels/torch*.whl numpy diffusers==0.42.1
    /tmp/dvenv/bin/python benchmarks/diffusers_reference.py --out tests/data/diffusers_reference.npz

Every case integrates the same deterministic analytic "model" on points x [B, D]:

    model(x, t) = tanh(x @ W + b * (t / 1000))

with fixed float32 W [D, D] and b [D], stored in the .npz with the start noise x_T (float32, unit
Gaussian) and the betas (float64), so the test can evaluate the same function in jax.numpy.
Schedulers (each with steps_offset = 0 and, where it applies, final sigma 0):

  dpm    DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint",
         final_sigmas_type="zero"): orders 1-3, "linspace"/"leading"/"trailing" spacing, the
         three prediction types, lower_order_final on and off, thresholding. Its
         init_noise_sigma is 1, so the loop starts from x_T itself, as jaxdiff.dpm_solver_sample.
  euler  EulerDiscreteScheduler(use_karras_sigmas=True), "linspace" spacing
  heun   HeunDiscreteScheduler(use_karras_sigmas=True), "linspace" spacing, clip_sample on/off

Conventions the reference fixes (both documented in benchmarks/README.md):

* The alphas_cumprod table. diffusers multiplies the float32 alphas cumulatively in float32
  (torch.cumprod); jaxdiff multiplies in float64 and rounds once. Over T = 1000 the float32
  product drifts: sigma(t) = sqrt((1 - abar) / abar) differs by up to 1.4e-4 (linear) /
  2.2e-4 (cosine) relative near t = 0 and ~1e-5 elsewhere, a difference of schedule tables,
  not of samplers. Cases with table="float64" give the scheduler abar = float32(cumprod(1 -
  betas) in float64) (its attributes alphas_cumprod and, for DPM-Solver, alpha_t, sigma_t and
  lambda_t, recomputed by the scheduler's own formulas) before set_timesteps; cases with
  table="native" keep diffusers' float32 product (the test runs jaxdiff on that table too).
* The start of the Karras (Euler, Heun) samplers. jaxdiff takes x_T as the VP noise at
  t = T - 1 and starts the VE ODE at x_T sqrt(1 + sigma_max^2) (exactly the same point).
  diffusers' pipelines multiply unit noise by init_noise_sigma, which for "linspace" and
  "trailing" spacing is sigma_max (the VE approximation, 2.0e-5 relative smaller for the linear
  schedule's sigma_max = 157.4) and for "leading" is (sigma_max^2 + 1) ** 0.5. Cases with
  start="vp" begin at x_T (sigma_max^2 + 1) ** 0.5 (diffusers' own "leading" formula, at the
  "linspace" sigma_max); one case with start="init_noise_sigma" begins at
  x_T * init_noise_sigma, to measure that difference.

Writes (np.savez_compressed, 67 kB) per case: the final samples ("<name>/final", float32
[B, D]), the model's times ("<name>/timesteps": DPM-Solver's integers, the Karras schedulers'
real t) and noise levels ("<name>/sigmas", float32 [steps + 1], ending with 0; Heun's
duplicated entries dropped), and for some cases the sample after every step
("<name>/trajectory", [steps + 1, B, D], the start first; for Euler/Heun in diffusers' VE
space; Heun: after each full step, i.e. every second scheduler call); besides W, b, x_T, the
betas ("betas_<schedule>"), both alphas_cumprod tables ("alphas_cumprod_<schedule>_float64",
"..._native"), the case list ("cases", JSON) and the versions of diffusers, torch and NumPy
("versions", JSON). Prints one line per case.
"""

from __future__ import annotations

import argparse
import json

import diffusers
import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

T = 1000
B, D = 8, 4


def linear_betas(timesteps: int = T) -> np.ndarray:
    """Ho et al. 2020: linspace(1e-4, 0.02) scaled by 1000 / T, clipped to 0.999 (float64)."""
    scale = 1000.0 / timesteps
    return np.clip(np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64), 0.0, 0.999)


def cosine_betas(timesteps: int = T, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021: abar(t) = f(t) / f(0), f(t) = cos(((t / T) + s) / (1 + s) pi / 2)^2,
    beta_t = 1 - abar(t + 1) / abar(t) clipped to [0, 0.999] (float64)."""
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = f / f[0]
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)


BETAS = {"linear": linear_betas(), "cosine": cosine_betas()}


def case(name, scheduler, **settings):
    spec = {"name": name, "scheduler": scheduler, "schedule": "linear", "num_steps": 20,
            "prediction_type": "epsilon", "timestep_spacing": "linspace", "table": "float64",
            "trajectory": False}
    if scheduler == "dpm":
        spec.update(order=2, lower_order_final=True, thresholding=False)
    else:
        spec.update(clip_sample=False, start="vp")
    spec.update(settings)
    return spec


def dpm(order, num_steps, **settings):
    name = f"dpm_o{order}_n{num_steps}" + "".join(
        f"_{key}={value}" for key, value in sorted(settings.items()) if key != "trajectory")
    return case(name, "dpm", order=order, num_steps=num_steps, **settings)


def karras(solver, num_steps, **settings):
    name = f"{solver}_n{num_steps}" + "".join(
        f"_{key}={value}" for key, value in sorted(settings.items()) if key != "trajectory")
    return case(name, solver, num_steps=num_steps, **settings)


# 28 cases; jaxdiff compiles once per static configuration (steps, order, objective, clip,
# spacing, lower_order_final; solver), 19 here: the schedule and table variants reuse one.
CASES = [
    # orders and step counts (epsilon, linspace, lower_order_final)
    dpm(1, 10), dpm(2, 5), dpm(2, 20, trajectory=True), dpm(3, 10, trajectory=True), dpm(3, 25),
    # timestep spacings
    dpm(2, 10, timestep_spacing="leading"), dpm(3, 25, timestep_spacing="trailing"),
    # lower_order_final off: orders [1, 2, 3, 3, 1] instead of [1, 2, 3, 2, 1]
    dpm(3, 5, lower_order_final=False),
    # prediction types
    dpm(2, 10, prediction_type="sample"), dpm(3, 20, prediction_type="v_prediction"),
    # thresholding (= clip_x0)
    dpm(2, 10, thresholding=True), dpm(3, 20, thresholding=True, timestep_spacing="leading"),
    dpm(3, 10, prediction_type="v_prediction", thresholding=True, timestep_spacing="trailing"),
    # the cosine schedule; diffusers' own float32 alphas_cumprod table
    dpm(2, 20, schedule="cosine"), dpm(3, 20, prediction_type="v_prediction", schedule="cosine"),
    dpm(2, 20, table="native"), dpm(2, 20, schedule="cosine", table="native"),
    # Karras sigmas, Euler
    karras("euler", 10, trajectory=True), karras("euler", 25, prediction_type="v_prediction"),
    karras("euler", 5, prediction_type="sample"), karras("euler", 10, schedule="cosine"),
    karras("euler", 10, start="init_noise_sigma"),
    # Karras sigmas, Heun
    karras("heun", 10, trajectory=True), karras("heun", 10, prediction_type="sample"),
    karras("heun", 5, prediction_type="v_prediction", clip_sample=True),
    karras("heun", 10, schedule="cosine"), karras("heun", 10, table="native"),
    karras("heun", 10, schedule="cosine", table="native"),
]


def model(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """tanh(x @ W + b * (t / 1000)) for x [B, D] and a scalar t (integer for DPM-Solver,
    real-valued for the Karras schedulers), in float32."""
    t = torch.full((x.shape[0], 1), float(t), dtype=torch.float32)
    return torch.tanh(x @ W + b * (t / 1000.0))


def float64_table(betas: np.ndarray) -> np.ndarray:
    """alphas_cumprod multiplied in float64, rounded once to float32."""
    return np.cumprod(1.0 - betas).astype(np.float32)


def use_float64_table(scheduler, betas: np.ndarray) -> None:
    """Replace the scheduler's float32-cumprod alphas_cumprod by `float64_table`, with the
    attributes its __init__ derives from it (before set_timesteps reads them)."""
    alphas_cumprod = torch.from_numpy(float64_table(betas))
    scheduler.alphas_cumprod = alphas_cumprod
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        scheduler.alpha_t = torch.sqrt(alphas_cumprod)
        scheduler.sigma_t = torch.sqrt(1 - alphas_cumprod)
        scheduler.lambda_t = torch.log(scheduler.alpha_t) - torch.log(scheduler.sigma_t)
        scheduler.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def make_scheduler(spec):
    common = {"num_train_timesteps": T, "trained_betas": BETAS[spec["schedule"]],
              "prediction_type": spec["prediction_type"],
              "timestep_spacing": spec["timestep_spacing"], "steps_offset": 0}
    if spec["scheduler"] == "dpm":
        # Dynamic thresholding (Saharia et al. 2022) takes s = the dynamic_thresholding_ratio
        # quantile of |x0_hat| per sample, clamps it to [1, sample_max_value] and maps x0_hat to
        # clamp(x0_hat, -s, s) / s. With sample_max_value = 1 the clamp forces s = 1 whatever the
        # quantile (the ratio is irrelevant), so thresholding is clamp(x0_hat, -1, 1) / 1: exactly
        # jaxdiff's clip_x0 (diffusers' own comment: "equivalent to standard clipping").
        scheduler = DPMSolverMultistepScheduler(
            **common, solver_order=spec["order"], algorithm_type="dpmsolver++",
            solver_type="midpoint", final_sigmas_type="zero",
            lower_order_final=spec["lower_order_final"], euler_at_final=False,
            thresholding=spec["thresholding"], dynamic_thresholding_ratio=0.995,
            sample_max_value=1.0)
    elif spec["scheduler"] == "euler":
        scheduler = EulerDiscreteScheduler(**common, use_karras_sigmas=True,
                                           final_sigmas_type="zero")
    else:
        scheduler = HeunDiscreteScheduler(**common, use_karras_sigmas=True,
                                          clip_sample=spec["clip_sample"], clip_sample_range=1.0)
    if spec["table"] == "float64":
        use_float64_table(scheduler, BETAS[spec["schedule"]])
    scheduler.set_timesteps(spec["num_steps"])
    return scheduler


def run_case(spec, W, b, x_T):
    """The scheduler loop of a diffusers pipeline on the analytic model. Returns the samples
    after every step [steps + 1, B, D] (start first), the model's times and the noise levels
    (DPM-Solver: sigma_VE at each time, then 0; Karras: the n Karras sigmas, then 0)."""
    scheduler = make_scheduler(spec)
    # the scheduler sees [B, D, 1]: DPMSolver's _threshold_sample flattens all but two leading
    # dimensions (np.prod of an empty shape is a float, which reshape rejects); values unchanged
    x = torch.from_numpy(x_T).reshape(B, D, 1)
    if spec["scheduler"] == "dpm":
        assert float(scheduler.init_noise_sigma) == 1.0
    elif spec["start"] == "vp":
        sigma_max = scheduler.sigmas.max()
        x = x * (sigma_max**2 + 1) ** 0.5
    else:
        x = x * scheduler.init_noise_sigma
    timesteps, sigmas = scheduler.timesteps.clone(), scheduler.sigmas.clone()
    trajectory = [x.reshape(B, D).clone()]
    for index, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(x, t)
        out = model(W, b, model_input.reshape(B, D), t).reshape(B, D, 1)
        x = scheduler.step(out, t, x).prev_sample
        # Heun: a full step ends with the correction (the scheduler back in first order), the
        # last one (to sigma = 0) with its Euler predictor
        if (spec["scheduler"] != "heun" or scheduler.state_in_first_order
                or index == len(timesteps) - 1):
            trajectory.append(x.reshape(B, D).clone())
    n = spec["num_steps"]
    if spec["scheduler"] == "heun":  # [t0, t1, t1, t2, t2, ...], [s0, s1, s1, ..., 0]
        assert len(timesteps) == 2 * n - 1 and len(sigmas) == 2 * n
        timesteps, sigmas = timesteps[0::2], torch.cat([sigmas[0::2], sigmas[-1:]])
    assert len(timesteps) == n and len(sigmas) == n + 1 and float(sigmas[-1]) == 0.0
    trajectory = torch.stack(trajectory).numpy().astype(np.float32)
    assert trajectory.shape[0] == n + 1 and np.isfinite(trajectory).all()
    return trajectory, timesteps.numpy(), sigmas.numpy().astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/data/diffusers_reference.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    W = (rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    b = rng.standard_normal(D).astype(np.float32)
    x_T = rng.standard_normal((B, D)).astype(np.float32)
    Wt, bt = torch.from_numpy(W), torch.from_numpy(b)

    arrays = {"W": W, "b": b, "x_T": x_T}
    for schedule, betas in BETAS.items():
        arrays[f"betas_{schedule}"] = betas
        arrays[f"alphas_cumprod_{schedule}_float64"] = float64_table(betas)
        native = DPMSolverMultistepScheduler(num_train_timesteps=T, trained_betas=betas)
        arrays[f"alphas_cumprod_{schedule}_native"] = native.alphas_cumprod.numpy()
    for spec in CASES:
        trajectory, timesteps, sigmas = run_case(spec, Wt, bt, x_T)
        arrays[spec["name"] + "/final"] = trajectory[-1]
        arrays[spec["name"] + "/timesteps"] = timesteps
        arrays[spec["name"] + "/sigmas"] = sigmas
        if spec["trajectory"]:
            arrays[spec["name"] + "/trajectory"] = trajectory
        print(f"{spec['name']}: |x0| max {np.abs(trajectory[-1]).max():.4g}")
    names = [spec["name"] for spec in CASES]
    assert len(set(names)) == len(names)
    arrays["cases"] = np.array(json.dumps(CASES))
    versions = {"diffusers": diffusers.__version__, "torch": torch.__version__,
                "numpy": np.__version__}
    arrays["versions"] = np.array(json.dumps(versions))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {len(CASES)} cases to {args.out} (diffusers {diffusers.__version__}, "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()
