"""jaxdiff's DPM-Solver++ and Karras samplers against diffusers' schedulers, to float32 rounding.

The reference tests/data/diffusers_reference.npz was written by benchmarks/diffusers_reference.py
(diffusers 0.42.1, torch 2.13.0; the versions are stored in the file), which runs diffusers'
DPMSolverMultistepScheduler (dpmsolver++, midpoint, final_sigmas_type "zero", steps_offset 0),
EulerDiscreteScheduler and HeunDiscreteScheduler (use_karras_sigmas, "linspace") on the analytic
model tanh(x @ W + b t / 1000) from a stored x_T, without jaxdiff. Neither torch nor diffusers is
needed here. benchmarks/README.md ("diffusers parity") says how to regenerate it.

Agreement measured on CPU (jax 0.10.2) as max |jaxdiff - diffusers| / max |diffusers| per case
and per trajectory step (relative to the samples' scale: coordinates near 0 make elementwise
ratios meaningless):

  DPM-Solver++, 17 cases (orders 1-3; 5, 10, 20, 25 steps; linspace / leading / trailing;
    epsilon / sample / v_prediction; lower_order_final on and off; thresholding = clip_x0;
    linear and cosine schedules): 6.9e-7, tolerance RTOL_DPM = 1.5e-6.
  Euler (5 cases): 1.7e-6; Heun (6 cases, one with clip_sample = clip_x0): 3.8e-6; tolerance
    RTOL_KARRAS = 8e-6. That is float32 rounding on both sides: jaxdiff evaluates the Karras
    sigmas in float32 (up to 2.1e-6 = 18 ulp from diffusers' float64 values, checked in
    `test_times_and_noise_levels`; with diffusers' sigmas substituted, Euler agrees to
    6.7e-7), and a float64 run of the same algorithm lies, for Heun on the cosine schedule
    (3.5e-6 apart), 1.3e-6 from diffusers and 2.2e-6 from jaxdiff; with sample prediction
    both float32 runs are 1.3e-4 from float64 (the last step's cancellation) yet 3.1e-6 from
    each other. These figures move by ~1e-6 with changes to jaxdiff that reorder float32
    operations (while this file was written, an edit of jaxdiff/ode_samplers.py moved Euler
    from 1.0e-6 to 1.7e-6 and Heun from 3.8e-6 to 3.6e-6; the maxima are quoted), hence the
    margins.

Two conventions differ; the reference uses jaxdiff's and checks diffusers' as well:
diffusers multiplies alphas_cumprod in float32 (jaxdiff: float64, rounded once; cases
table="native" run jaxdiff on diffusers' table, and measure 9.7e-6 with jaxdiff's own), and its
Euler/Heun pipelines start from x_T * init_noise_sigma = x_T * sigma_max for "linspace" spacing
(jaxdiff: x_T sqrt(1 + sigma_max^2), 2.0e-5 larger for the linear schedule; 2.8e-5 at the end).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import schedules
from jaxdiff.ode_samplers import (
    dpm_solver_sample,
    dpm_solver_timesteps,
    karras_sample,
    karras_sigmas,
    sigma_to_t,
    sigmas_of,
)

REFERENCE = Path(__file__).parent / "data" / "diffusers_reference.npz"
OBJECTIVES = {"epsilon": "pred_noise", "sample": "pred_x0", "v_prediction": "pred_v"}
RTOL_DPM = 1.5e-6    # measured 6.9e-7
RTOL_KARRAS = 8e-6   # measured 3.8e-6

# jitted (one compilation per step count instead of one per operation)
_karras_sigmas = jax.jit(karras_sigmas, static_argnums=2)
_sigma_to_t = jax.jit(sigma_to_t)

with np.load(REFERENCE) as _file:
    CASES = {case["name"]: case for case in json.loads(str(_file["cases"]))}


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as file:
        return {name: file[name] for name in file.files}


@pytest.fixture(scope="module")
def model_fn(ref):
    W, b = jnp.asarray(ref["W"]), jnp.asarray(ref["b"])

    def model(x, t):
        # t: int32 for DPM-Solver, float32 (real-valued) for the Karras samplers; HIGHEST keeps
        # the matmul in float32 on accelerators (TF32 would not match to float32 rounding)
        t = t.astype(jnp.float32)[:, None] / 1000.0
        return jnp.tanh(jnp.dot(x, W, precision=jax.lax.Precision.HIGHEST) + b[None, :] * t)

    return model


def schedule_for(ref, case):
    """jaxdiff's schedule; for table="native" cases with diffusers' float32-cumprod table."""
    s = jaxdiff.make_schedule(case["schedule"], 1000)
    if case["table"] == "native":
        s = s._replace(alphas_cumprod=ref[f"alphas_cumprod_{case['schedule']}_native"])
    return s


def sample(model_fn, s, case, x_T):
    """(final, trajectory) of jaxdiff's sampler with the case's settings."""
    common = {"key": jax.random.key(0), "shape": x_T.shape, "num_steps": case["num_steps"],
              "objective": OBJECTIVES[case["prediction_type"]], "x_T": x_T,
              "return_trajectory": True}
    if case["scheduler"] == "dpm":
        assert case["timestep_spacing"] in jaxdiff.ode_samplers.DPM_SPACINGS
        out = dpm_solver_sample(model_fn, s, order=case["order"], clip_x0=case["thresholding"],
                                timestep_spacing=case["timestep_spacing"],
                                lower_order_final=case["lower_order_final"], **common)
    else:
        # "linspace": diffusers' Karras grid runs from sigma(T - 1) to sigma(0), as jaxdiff's
        assert case["timestep_spacing"] == "linspace"
        out = karras_sample(model_fn, s, solver=case["scheduler"], rho=7.0,
                            clip_x0=case["clip_sample"], **common)
    return tuple(np.asarray(a, np.float64) for a in out)


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|."""
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


def test_reference_file(ref):
    versions = json.loads(str(ref["versions"]))
    # the figures in this docstring were measured against this version: update them with it
    assert versions["diffusers"] == "0.42.1"
    assert REFERENCE.stat().st_size < 300_000
    assert len(CASES) == 28


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_tables(ref, kind):
    """The reference's betas are jaxdiff's (float64, so also to float32), and the alphas_cumprod
    it gave the schedulers is jaxdiff's table; diffusers' own float32 product drifts from it."""
    s = jaxdiff.make_schedule(kind, 1000)
    np.testing.assert_array_equal(ref[f"betas_{kind}"], getattr(schedules, f"{kind}_betas")(1000))
    np.testing.assert_array_equal(ref[f"betas_{kind}"].astype(np.float32), s.betas)
    np.testing.assert_array_equal(ref[f"alphas_cumprod_{kind}_float64"], s.alphas_cumprod)
    native = ref[f"alphas_cumprod_{kind}_native"]
    assert 0 < np.abs(native / s.alphas_cumprod - 1).max() < 2e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_times_and_noise_levels(ref, name):
    """The model's times and the noise levels: DPM-Solver's integer times exactly and its sigmas
    (the float32 table at those times) to 1 ulp (measured); the Karras sigmas to the float32
    evaluation of their formula (jaxdiff) against diffusers' float64 one (measured 2.1e-6), the
    real t at diffusers' sigmas to 2e-4 (measured 6.1e-5)."""
    case = CASES[name]
    s = schedule_for(ref, case)
    times, sigmas = ref[name + "/timesteps"], ref[name + "/sigmas"]
    if case["scheduler"] == "dpm":
        expected = dpm_solver_timesteps(1000, case["num_steps"], case["timestep_spacing"])
        np.testing.assert_array_equal(times, expected)
        table = np.asarray(sigmas_of(s))
        np.testing.assert_allclose(sigmas[:-1], table[times], rtol=2.4e-7, atol=0)
    else:
        table = sigmas_of(s)
        ours = np.asarray(_karras_sigmas(table[0], table[-1], case["num_steps"], 7.0))
        np.testing.assert_allclose(ours, sigmas, rtol=4e-6, atol=0)
        ours_t = np.asarray(_sigma_to_t(jnp.asarray(sigmas[:-1]), jnp.log(table)))
        np.testing.assert_allclose(ours_t, times, rtol=0, atol=2e-4)
    assert sigmas[-1] == 0.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_samples_match_diffusers(ref, model_fn, name):
    case = CASES[name]
    s = schedule_for(ref, case)
    x_T = jnp.asarray(ref["x_T"])
    rtol = RTOL_DPM if case["scheduler"] == "dpm" else RTOL_KARRAS
    expected = ref[name + "/final"]
    if case.get("start") == "init_noise_sigma":
        # diffusers starts at x_T sigma_max, jaxdiff at x_T sqrt(1 + sigma_max^2): 2e-5 apart
        final, _ = sample(model_fn, s, case, x_T)
        assert 1e-5 < relative_error(final, expected) < 1e-4
        # the same start for jaxdiff: x_T scaled by sigma_max / sqrt(1 + sigma_max^2)
        sigma_max = sigmas_of(s)[-1]
        x_T = x_T * (sigma_max / jnp.sqrt(1.0 + sigma_max**2))
    final, trajectory = sample(model_fn, s, case, x_T)
    error = relative_error(final, expected)
    assert error < rtol, f"{name}: relative error {error:.3g} > {rtol:g}"
    if case["scheduler"] == "dpm" and case["thresholding"]:
        assert np.abs(final).max() <= 1.0
    if name + "/trajectory" in ref:
        expected_trajectory = ref[name + "/trajectory"].astype(np.float64)
        if case["scheduler"] != "dpm":  # diffusers' VE samples to VP, as jaxdiff's trajectory
            sigmas = ref[name + "/sigmas"].astype(np.float64)
            expected_trajectory = expected_trajectory / np.sqrt(1.0 + sigmas**2)[:, None, None]
        assert trajectory.shape == expected_trajectory.shape
        for step, (ours, theirs) in enumerate(zip(trajectory, expected_trajectory)):
            error = relative_error(ours, theirs)
            assert error < rtol, f"{name} step {step}: relative error {error:.3g} > {rtol:g}"
    if case["table"] == "native":
        # with jaxdiff's own (float64-product) table the difference is the table's: measured
        # 4.0e-7 / 7.2e-7 (linear DPM / Heun), 6.9e-6 / 9.7e-6 (cosine)
        final, _ = sample(model_fn, jaxdiff.make_schedule(case["schedule"], 1000), case, x_T)
        assert relative_error(final, expected) < 2e-5
