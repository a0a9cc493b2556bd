"""Draw samples from a trained run:

    python sample.py --workdir runs/toy --num_samples 1000 --out samples.npz [--sampler ddim --steps 50]

Writes `samples` (data space) to the .npz file and a picture next to it (samples.png); with
--trajectory also a picture of x_t along the reverse process.
"""

import os
import sys

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from jaxdiff import plotting
from jaxdiff.experiment import SAMPLERS, ConfigError, load_run

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by train.py.", required=True)
_NUM = flags.DEFINE_integer("num_samples", 1000, "How many samples to draw.")
_OUT = flags.DEFINE_string("out", "samples.npz", "Output .npz file.")
_SAMPLER = flags.DEFINE_string("sampler", None, f"One of {', '.join(SAMPLERS)} (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "DDIM steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (default: the config's).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_TRAJECTORY = flags.DEFINE_boolean("trajectory", False, "Also plot the reverse trajectory.")


def check_flags(run) -> None:
    """Raise ConfigError naming the flag for values the sampler cannot use."""
    if _NUM.value < 1:
        raise ConfigError(f"--num_samples={_NUM.value} is invalid: an integer >= 1")
    if _SAMPLER.value is not None and _SAMPLER.value not in SAMPLERS:
        raise ConfigError(f"--sampler={_SAMPLER.value!r} is invalid: one of {', '.join(SAMPLERS)}")
    timesteps = run.schedule.timesteps
    if _STEPS.value is not None and not 1 <= _STEPS.value <= timesteps:
        raise ConfigError(f"--steps={_STEPS.value} is invalid: an integer in [1, T={timesteps}]")
    if _ETA.value is not None and _ETA.value < 0:
        raise ConfigError(f"--eta={_ETA.value} is invalid: a number >= 0")
    if not _OUT.value.endswith(".npz"):
        raise ConfigError(f"--out={_OUT.value!r} is invalid: a path ending in .npz")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        run = load_run(_WORKDIR.value, step=_STEP.value)
        check_flags(run)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    out = run.sample(_NUM.value, seed=_SEED.value, sampler=_SAMPLER.value, steps=_STEPS.value,
                     eta=_ETA.value, return_trajectory=_TRAJECTORY.value)
    samples, trajectory = out if _TRAJECTORY.value else (out, None)
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    np.savez(_OUT.value, samples=samples)
    stem = os.path.splitext(_OUT.value)[0]
    if run.standardizer is None:  # images, uint8
        plotting.save_image_grid(samples, f"{stem}.png")
        if trajectory is not None:
            plotting.save_trajectory_gif(trajectory[:, :16], f"{stem}_trajectory.gif")
            frames = np.linspace(0, len(trajectory) - 1, 10).round().astype(int)
            strip = trajectory[frames, :10].transpose(1, 0, 2, 3, 4)
            plotting.save_image_grid(strip.reshape((-1,) + samples.shape[1:]),
                                     f"{stem}_trajectory.png", nrow=len(frames))
    else:
        plotting.plot_points(samples, f"{stem}.png", title=f"samples (step {run.step})")
        if trajectory is not None:
            plotting.plot_trajectory(trajectory, f"{stem}_trajectory.png")
    print(f"wrote {len(samples)} samples of shape {samples.shape[1:]} (step {run.step}) to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
