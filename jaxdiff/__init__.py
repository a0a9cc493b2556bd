"""jaxdiff: denoising diffusion models in JAX, as pure functions compiled once.

The maths (schedules, forward process, losses, samplers) imports only JAX and NumPy; models,
training, checkpoints and data live in their own modules and are imported on demand.
"""

from jaxdiff.diffusion import (
    OBJECTIVES,
    Prediction,
    model_predictions,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_posterior,
    q_sample,
    target_for,
)
from jaxdiff.editing import ddim_invert, slerp
from jaxdiff.guidance import classifier_free_guidance, guide
from jaxdiff.losses import (
    COND_DROP_SCHEDULES,
    LOSS_TYPES,
    WEIGHTINGS,
    cond_drop_schedule,
    diffusion_loss,
    drop_condition,
    loss_weights,
)
from jaxdiff.samplers import (
    TIMESTEP_SPACINGS,
    VARIANCES,
    ddim_coefficients,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
)
from jaxdiff.likelihood import bits_per_dim, ode_log_likelihood, vlb
from jaxdiff.ode_samplers import (
    dpm_solver_sample,
    dpm_solver_timesteps,
    karras_sample,
    karras_sigmas,
)
from jaxdiff.schedules import SCHEDULE_KINDS, Schedule, make_schedule, schedule_from_betas

__version__ = "0.2.0"


def __getattr__(name: str):
    # Imported on first use so that `import jaxdiff` (the maths) needs neither Flax nor Orbax.
    if name == "load_run":
        from jaxdiff.run import load_run

        return load_run
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
