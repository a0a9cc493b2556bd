"""Draw samples from a trained run:

    python sample.py --workdir runs/toy --num_samples 1000 --out samples.npz [--sampler ddim --steps 50]

Writes `samples` (data space) to the .npz file and a picture next to it (samples.png); with
--trajectory also a picture of x_t along the reverse process.

Class-conditional runs (classifier-free guidance):

    python sample.py --workdir runs/digits_cond --labels 0,1,2 --guidance_scale 1,3,5 \
        --num_samples 4 --out guided.npz

draws --num_samples samples for every (label, guidance scale) pair from shared noise and writes
`samples`, `labels` and `guidance_scale` (one entry per sample) and a grid with one row per
class and, per guidance scale, one column block (one column per scale for --num_samples 1).
Scale s follows diffusers: 1 is plain conditional sampling, 0 unconditional, s > 1 guided.

The batch is split over every device (of every host, when started as a multi-process job) in
one compiled call; --num_devices limits them. A seed gives the same samples on any device count.
"""

import os

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from jaxdiff import cli, plotting, sharding
from jaxdiff.config import SAMPLERS
from jaxdiff.errors import CheckpointError, ConfigError, NonFiniteError
from jaxdiff.run import check_guidance, check_labels, load_run

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by train.py.", required=True)
_NUM = flags.DEFINE_integer("num_samples", 1000, "How many samples to draw.")
_OUT = flags.DEFINE_string("out", "samples.npz", "Output .npz file.")
_SAMPLER = flags.DEFINE_string("sampler", None, f"One of {', '.join(SAMPLERS)} (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", None, "DDIM steps (default: the config's).")
_ETA = flags.DEFINE_float("eta", None, "DDIM eta (default: the config's).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_TRAJECTORY = flags.DEFINE_boolean("trajectory", False, "Also plot the reverse trajectory.")
_LABELS = flags.DEFINE_string("labels", None, "Comma-separated classes to sample, e.g. 0,1,2 "
                              "(class-conditional runs; --num_samples is then per class and scale).")
_GUIDANCE = flags.DEFINE_string("guidance_scale", None, "Comma-separated classifier-free guidance "
                                "scales, e.g. 1,3,5 (default: the config's sample.guidance_scale).")
_RESCALE = flags.DEFINE_float("guidance_rescale", None, "Guidance rescale phi in [0, 1] (Lin et al. "
                              "2024; default: the config's).")
_DEVICES = flags.DEFINE_integer("num_devices", None, "Devices to split the sample batch over "
                                "(default: all, on every host).")
_GRID_COLUMNS = 8  # samples per (class, scale) cell shown in the grid


def _numbers(flag, kind, what: str) -> list:
    try:
        values = [kind(part) for part in flag.value.split(",")]
    except ValueError:
        raise ConfigError(f"--{flag.name}={flag.value!r} is invalid: {what}") from None
    if not values:
        raise ConfigError(f"--{flag.name}={flag.value!r} is invalid: {what}")
    return values


def guidance_flags(run):
    """(labels, guidance scales) from --labels / --guidance_scale, or ConfigError naming the
    flag: labels outside [0, num_classes), guidance on an unconditional run or without labels."""
    num_classes = run.config.model.num_classes
    if _LABELS.value is None:
        for flag in (_GUIDANCE, _RESCALE):
            if flag.value is not None:
                raise ConfigError(f"--{flag.name}={flag.value} is invalid without --labels"
                                  + ("" if num_classes else ": the run is unconditional "
                                     "(model.num_classes=0), so it cannot be guided"))
        return None, None
    labels = _numbers(_LABELS, int, "comma-separated integer class labels, e.g. 0,1,2")
    labels = check_labels(labels, num_classes, name="--labels", shown=_LABELS.value).tolist()
    if _GUIDANCE.value is None:
        scales = [float(run.config.sample.get("guidance_scale", 1.0))]
    else:
        scales = _numbers(_GUIDANCE, float, "comma-separated numbers >= 0, e.g. 1,3,5")
    check_guidance("--guidance_scale", scales, len(scales), 0.0, None, shown=_GUIDANCE.value)
    if _RESCALE.value is not None:
        check_guidance("--guidance_rescale", _RESCALE.value, 1, 0.0, 1.0, shown=_RESCALE.value)
    return labels, scales


def write_class_samples(run, labels, scales) -> None:
    """Sample every (label, scale) cell; write the .npz and a grid: row = class, column block
    = guidance scale."""
    per_cell = _NUM.value if flags.FLAGS["num_samples"].present else 1
    cells = run.sample_classes(labels, scales, per_cell, seed=_SEED.value, sampler=_SAMPLER.value,
                               steps=_STEPS.value, eta=_ETA.value,
                               guidance_rescale=_RESCALE.value, num_devices=_DEVICES.value)
    if not sharding.is_main_process():
        return
    shape = cells.shape[3:]
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    np.savez(_OUT.value, samples=cells.reshape((-1,) + shape),
             labels=np.repeat(np.asarray(labels, np.int32), len(scales) * per_cell),
             guidance_scale=np.tile(np.repeat(np.asarray(scales, np.float32), per_cell),
                                    len(labels)))
    # images: one row per class, one column block per scale; points: all in one scatter plot
    shown = cells[:, :, :_GRID_COLUMNS] if len(shape) > 1 else cells
    plotting.save_samples(shown.reshape((-1,) + shape), f"{os.path.splitext(_OUT.value)[0]}.png",
                          title=f"classes {_LABELS.value} (step {run.step})",
                          nrow=shown.shape[1] * shown.shape[2])
    print(f"wrote {cells.shape[0] * cells.shape[1] * cells.shape[2]} samples: {len(labels)} "
          f"classes x {len(scales)} guidance scales x {per_cell} (step {run.step}) to {_OUT.value}")


def check_flags(run) -> None:
    """Raise ConfigError naming the flag for values the sampler cannot use."""
    if _NUM.value < 1:
        raise ConfigError(f"--num_samples={_NUM.value} is invalid: an integer >= 1")
    if _SAMPLER.value is not None and _SAMPLER.value not in SAMPLERS:
        raise ConfigError(f"--sampler={_SAMPLER.value!r} is invalid: one of {', '.join(SAMPLERS)}")
    timesteps = run.schedule.timesteps
    if _STEPS.value is not None and not 1 <= _STEPS.value <= timesteps:
        raise ConfigError(f"--steps={_STEPS.value} is invalid: an integer in [1, T={timesteps}]")
    if _ETA.value is not None and not 0 <= _ETA.value < float("inf"):  # NaN fails too
        raise ConfigError(f"--eta={_ETA.value} is invalid: a finite number >= 0")
    if _DEVICES.value is not None and not 1 <= _DEVICES.value <= jax.device_count():
        raise ConfigError(f"--num_devices={_DEVICES.value} is invalid: an integer in "
                          f"[1, {jax.device_count()}] (the devices present)")
    if not _OUT.value.endswith(".npz"):
        raise ConfigError(f"--out={_OUT.value!r} is invalid: a path ending in .npz")
    cli.check_writable("out", _OUT.value, directory=False)
    if not -2**63 <= _SEED.value < 2**63:
        raise ConfigError(f"--seed={_SEED.value} is invalid: an integer in [-2**63, 2**63)")


def main(argv) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}: flags are written --name=value")
    absl_logging.set_verbosity(absl_logging.WARNING)
    cli.quiet_failed_read_leftovers()
    try:
        sharding.initialize_distributed()
        run = load_run(_WORKDIR.value, step=_STEP.value)
        check_flags(run)
        labels, scales = guidance_flags(run)
    except (ConfigError, CheckpointError) as error:
        cli.fail(error)
    try:
        if labels is not None:
            write_class_samples(run, labels, scales)
        else:
            write_samples(run)
    except ConfigError as error:  # e.g. more samples than memory holds
        cli.fail(error)
    except NonFiniteError as error:  # refused, not written
        cli.fail(error, code=1)


def write_samples(run) -> None:
    """Sample --num_samples; write the .npz and pictures (and the trajectory's)."""
    out = run.sample(_NUM.value, seed=_SEED.value, sampler=_SAMPLER.value, steps=_STEPS.value,
                     eta=_ETA.value, return_trajectory=_TRAJECTORY.value,
                     num_devices=_DEVICES.value)
    if not sharding.is_main_process():  # every host sampled its share; one writes
        return
    samples, trajectory = out if _TRAJECTORY.value else (out, None)
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    np.savez(_OUT.value, samples=samples)
    stem = os.path.splitext(_OUT.value)[0]
    plotting.save_samples(samples, f"{stem}.png", title=f"samples (step {run.step})")
    if trajectory is not None:
        plotting.save_trajectory(trajectory, stem)
    print(f"wrote {len(samples)} samples of shape {samples.shape[1:]} (step {run.step}) to {_OUT.value}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
