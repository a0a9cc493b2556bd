"""Sampling a trained model (jaxdiff.run): `sample_model` checks labels and guidance against the
config and hands them to the sampler."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jaxdiff
from jaxdiff.errors import ConfigError
from jaxdiff.run import load_run, sample_model

from helpers import NULL, label_model


def _tiny_config(num_classes=3, **sample_fields):
    return ml_collections.ConfigDict({
        "model": {"num_classes": num_classes, "self_condition": False},
        "diffusion": {"objective": "pred_noise"},
        "sample": {"sampler": "ddim", "steps": 3, "eta": 0.0, "variance": "fixed_small",
                   "clip_x0": False, "timestep_spacing": "trailing", **sample_fields},
    })


@pytest.mark.parametrize("labels,needle", [
    ([0, 3], "label 3 is outside [0, num_classes=3)"),
    ([-1, 0], "label -1 is outside"),
    ([0.5, 1.0], "integer"),
    ([0, 1, 2], "3 entries for 2 samples"),
])
def test_sample_model_rejects_bad_labels(linear30, labels, needle):
    with pytest.raises(ConfigError) as error:
        sample_model(label_model, linear30, _tiny_config(), (2, 2), key=jax.random.key(0),
                     labels=labels)
    assert needle in str(error.value), str(error.value)


def test_sample_model_guidance_needs_a_conditional_model_and_labels(linear30):
    call = functools.partial(sample_model, label_model, linear30, key=jax.random.key(0),
                             shape=(2, 2))
    with pytest.raises(ConfigError, match="class-conditional model"):
        call(config=_tiny_config(num_classes=0), guidance_scale=3.0)
    with pytest.raises(ConfigError, match="unconditional"):
        call(config=_tiny_config(num_classes=0), labels=[0, 1])
    with pytest.raises(ConfigError, match="without labels"):
        call(config=_tiny_config(), guidance_scale=3.0)
    # labels, the config's guidance scale and the null class reach the sampler. Bit for bit
    # against the same guided program; s = 0 giving the null class is checked in
    # test_guidance.py (the unguided program on half the batch may round differently, and
    # abar_29 = 1e-6 amplifies that ~1000x in the first x0 estimate)
    guided = call(config=_tiny_config(guidance_scale=0.0), labels=[0, 2])
    direct = jaxdiff.ddim_sample(label_model, linear30, key=jax.random.key(0), shape=(2, 2),
                                 num_steps=3, clip_x0=False, cond={"labels": jnp.array([0, 2])},
                                 guidance_scale=0.0, null_cond={"labels": NULL})
    np.testing.assert_array_equal(guided, direct)


def test_sample_refuses_zero_steps_and_non_finite_eta(toy_run):
    run = load_run(toy_run)
    with pytest.raises(ConfigError, match="steps=0 is invalid"):
        run.sample(4, sampler="ddim", steps=0)
    for eta in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match="eta=.* is invalid"):
            run.sample(4, sampler="ddim", eta=eta)


def test_ddim_sample_refuses_a_non_finite_eta():
    schedule = jaxdiff.make_schedule("linear", timesteps=10)
    for eta in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eta must be finite"):
            jaxdiff.ddim_sample(lambda x, t: x, schedule, key=jax.random.key(0), shape=(2, 2),
                                num_steps=5, eta=eta)


def test_samples_that_overflow_float32_in_data_space_are_refused(toy_run):
    from jaxdiff.data.codecs import Standardizer
    from jaxdiff.errors import NonFiniteError

    run = load_run(toy_run)
    huge = Standardizer(mean=np.zeros(2), std=np.full(2, 3e38))  # |z| > 1.1 overflows float32
    with pytest.raises(NonFiniteError, match="overflow float32"):
        run._replace(codec=huge).sample(64, seed=0)


def test_non_finite_samples_are_refused(toy_run):
    from jaxdiff.errors import NonFiniteError

    run = load_run(toy_run)
    poisoned = jax.tree.map(lambda p: p * jnp.nan, run.params)
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        run._replace(params=poisoned).sample(4)


def test_run_sample_reports_progress_without_changing_the_samples(toy_run):
    """A progress callable sees the reverse steps advance to T (DDPM) or the DDIM steps, and the
    samples are those drawn without it."""
    from jaxdiff.run import num_model_calls

    run = load_run(toy_run)
    for sampler, steps, total in (("ddpm", None, 20), ("ddim", 4, 4)):
        assert num_model_calls(run.config, run.schedule, sampler, steps) == total
        calls = []
        with_progress = run.sample(8, seed=1, sampler=sampler, steps=steps,
                                   progress=lambda done, count: calls.append((done, count)))
        np.testing.assert_array_equal(with_progress, run.sample(8, seed=1, sampler=sampler,
                                                                steps=steps))
        assert {count for _, count in calls} == {total} and max(calls)[0] == total


def test_sampling_progress_is_a_bar_on_a_terminal_and_a_line_otherwise(toy_run, monkeypatch,
                                                                       capsys):
    import io
    import sys

    from jaxdiff.evaluate import sampling_progress

    run = load_run(toy_run)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert sampling_progress(run.config, run.schedule, 50, False) is False  # given: as is
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert sampling_progress(run.config, run.schedule, 50) is True
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert sampling_progress(run.config, run.schedule, 50) is False
    assert capsys.readouterr().out == "sampling 50 samples with ddpm (20 model calls)...\n"


# --- the fast samplers and editing through Run.sample -------------------------------------------

def test_run_sample_runs_every_sampler_and_refuses_options_it_would_ignore(toy_run):
    run = load_run(toy_run)
    for sampler, options in (("ddpm", {}), ("ddim", dict(steps=4, eta=0.5)),
                             ("dpm_solver", dict(steps=4, order=3)),
                             ("karras", dict(steps=3, solver="euler", churn=0.5))):
        samples = run.sample(6, sampler=sampler, **options)
        assert samples.shape == (6, 2) and np.all(np.isfinite(samples))
    for sampler, options, name in (("ddpm", dict(steps=4), "steps"),
                                   ("ddim", dict(order=2), "order"),
                                   ("dpm_solver", dict(eta=0.5), "eta"),
                                   ("karras", dict(resamples=2), "resamples")):
        with pytest.raises(ConfigError, match=f"{name}=.* is invalid with sampler='{sampler}'"):
            run.sample(4, sampler=sampler, **options)
    with pytest.raises(ConfigError, match="order must be 1, 2 or 3"):
        run.sample(4, sampler="dpm_solver", order=5)


def test_run_sample_edits_in_data_space(toy_run):
    """SDEdit from t_start = 0 changes the input only by the last step's denoising; inpainting
    returns the known coordinate (through the standardiser and back) on every sampler that
    offers it."""
    run = load_run(toy_run)
    x = np.array([[0.5, -1.0], [2.0, 1.5], [-1.0, 0.25]], np.float32)
    near = run.sample(3, sampler="ddim", steps=1, x_start=x, t_start=0)
    assert np.max(np.abs(near - x)) < 0.5
    far = run.sample(3, sampler="ddim", steps=4, x_start=x, t_start=19)
    assert not np.allclose(far, near)
    for sampler in ("ddpm", "ddim"):
        out = run.sample(3, sampler=sampler, known=x, mask=np.array([1.0, 0.0]))
        np.testing.assert_allclose(out[:, 0], x[:, 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="known=.* is invalid with sampler='karras'"):
        run.sample(3, sampler="karras", known=x, mask=np.array([1.0, 0.0]))
    with pytest.raises(ConfigError, match="x_start needs t_start"):
        run.sample(3, x_start=x)
    with pytest.raises(ConfigError, match="does not broadcast"):
        run.sample(3, known=x, mask=np.ones(3))
