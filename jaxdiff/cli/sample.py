"""Draw samples from a trained run:

    jaxdiff-sample --workdir runs/toy --num_samples 1000 --out samples.npz
    jaxdiff-sample --workdir runs/toy --num_samples 1000 --out ddim.npz --sampler ddim --steps 50
    jaxdiff-sample --workdir runs/toy --out dpm.npz --sampler dpm_solver --steps 20 --order 3
    jaxdiff-sample --workdir runs/toy --out heun.npz --sampler karras --steps 18 --solver heun

(in a checkout, `python sample.py` with the same flags). Samplers: ddpm (all T steps), ddim
(--steps, --eta), dpm_solver (DPM-Solver++: --steps, --order 1-3), karras (EDM: --steps,
--solver euler|heun, --churn). A flag the chosen sampler does not use is reported and ignored;
the program prints the sampler and how many model calls it made.

Editing an input (.npz with the data-space `samples` array, or an image file):

    jaxdiff-sample --workdir runs/digits --init digits.npz --t_start 400 --num_samples 4 \
        --out sdedit.npz                                    # SDEdit: 4 variations per input
    jaxdiff-sample --workdir runs/digits --init digits.npz --mask keep_left --sampler ddpm \
        --resamples 5 --out inpainted.npz                   # inpainting with RePaint's resampling

--mask is a file (.npz `mask` array, or an image: nonzero = known) or, for images, one of
keep_left, keep_right, keep_top, keep_bottom, keep_center, keep_border (the kept part is known;
the rest is generated). Inpainting needs --sampler ddpm or ddim. The .npz gets `samples`,
`inputs` (the inputs, encoded back to data space) and `input_index` (the input of each sample).

Writes `samples` (data space) to the .npz file and a picture next to it (samples.png); with
--trajectory also a picture of x_t along the reverse process.

Class-conditional runs (classifier-free guidance):

    jaxdiff-sample --workdir runs/digits_cond --labels 0,1,2 --guidance_scale 1,3,5 \\
        --num_samples 4 --out guided.npz

draws --num_samples samples for every (label, guidance scale) pair from shared noise and writes
`samples`, `labels` and `guidance_scale` (one entry per sample) and a grid with one row per
class and, per guidance scale, one column block (one column per scale for --num_samples 1).
Scale s follows diffusers: 1 is plain conditional sampling, 0 unconditional, s > 1 guided.

The batch is split over every device (of every host, when started as a multi-process job) in
one compiled call; --num_devices limits them. A seed gives the same samples on any device count.
"""

import os
import sys
import types

import jax
import numpy as np
from absl import flags
from absl import logging as absl_logging

from jaxdiff import cli, plotting, sharding
from jaxdiff.cli.edit_inputs import check_editing_flags, editing_t_start, load_init, load_mask
from jaxdiff.config import SAMPLER_FIELDS, SAMPLERS, sample_option
from jaxdiff.errors import CheckpointError, ConfigError, NonFiniteError
from jaxdiff.ode_samplers import KARRAS_SOLVERS
from jaxdiff.run import check_guidance, check_labels, load_run, num_model_calls

_GRID_COLUMNS = 8  # samples per (class, scale) cell shown in the grid


def define_flags() -> types.SimpleNamespace:
    """The program's flags (in absl's global FLAGS), as holders named after them."""
    return types.SimpleNamespace(
        workdir=flags.DEFINE_string("workdir", None, "Run directory written by train.py.",
                                    required=True),
        num_samples=flags.DEFINE_integer("num_samples", 1000, "How many samples to draw."),
        out=flags.DEFINE_string("out", "samples.npz", "Output .npz file."),
        sampler=flags.DEFINE_string("sampler", None, f"One of {', '.join(SAMPLERS)} (default: "
                                    "the config's)."),
        steps=flags.DEFINE_integer("steps", None, "Steps of ddim, dpm_solver or karras "
                                   "(default: the config's; DDPM always runs all T steps)."),
        eta=flags.DEFINE_float("eta", None, "DDIM eta (default: the config's)."),
        order=flags.DEFINE_integer("order", None, "DPM-Solver++ order 1, 2 or 3 (default: the "
                                   "config's sample.order)."),
        solver=flags.DEFINE_string("solver", None, "Karras sampler solver: euler or heun "
                                   "(default: the config's sample.solver)."),
        churn=flags.DEFINE_float("churn", None, "Karras S_churn >= 0 (0: deterministic; "
                                 "default: the config's sample.churn)."),
        resamples=flags.DEFINE_integer("resamples", None, "RePaint resampling r >= 1 for DDPM "
                                       "inpainting (default: the config's sample.resamples)."),
        init=flags.DEFINE_string("init", None, "Input to edit: a .npz holding `samples` (data "
                                 "space) or an image file."),
        t_start=flags.DEFINE_integer("t_start", None, "SDEdit: noise --init to this time in "
                                     "[0, T) and denoise from there (default: the config's "
                                     "sample.t_start)."),
        mask=flags.DEFINE_string("mask", None, "Inpainting: what of --init is known, a .npz "
                                 "`mask`, an image (nonzero = known) or keep_left, keep_right, "
                                 "keep_top, keep_bottom, keep_center, keep_border."),
        seed=flags.DEFINE_integer("seed", 0, "Sampling seed."),
        step=flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest)."),
        trajectory=flags.DEFINE_boolean("trajectory", False, "Also plot the reverse trajectory."),
        labels=flags.DEFINE_string("labels", None, "Comma-separated classes to sample, e.g. "
                                   "0,1,2 (class-conditional runs; --num_samples is then per "
                                   "class and scale)."),
        guidance_scale=flags.DEFINE_string("guidance_scale", None, "Comma-separated "
                                           "classifier-free guidance scales, e.g. 1,3,5 "
                                           "(default: the config's sample.guidance_scale)."),
        guidance_rescale=flags.DEFINE_float("guidance_rescale", None, "Guidance rescale phi in "
                                            "[0, 1] (Lin et al. 2024; default: the config's)."),
        num_devices=flags.DEFINE_integer("num_devices", None, "Devices to split the sample "
                                         "batch over (default: all, on every host)."))


def _numbers(flag, kind, what: str) -> list:
    try:
        values = [kind(part) for part in flag.value.split(",")]
    except ValueError:
        raise ConfigError(f"--{flag.name}={flag.value!r} is invalid: {what}") from None
    if not values:
        raise ConfigError(f"--{flag.name}={flag.value!r} is invalid: {what}")
    return values


def guidance_flags(args, run):
    """(labels, guidance scales) from --labels / --guidance_scale, or ConfigError naming the
    flag: labels outside [0, num_classes), guidance on an unconditional run or without labels."""
    num_classes = run.config.model.num_classes
    if args.labels.value is None:
        for flag in (args.guidance_scale, args.guidance_rescale):
            if flag.value is not None:
                raise ConfigError(f"--{flag.name}={flag.value} is invalid without --labels"
                                  + ("" if num_classes else ": the run is unconditional "
                                     "(model.num_classes=0), so it cannot be guided"))
        return None, None
    labels = _numbers(args.labels, int, "comma-separated integer class labels, e.g. 0,1,2")
    labels = check_labels(labels, num_classes, name="--labels", shown=args.labels.value).tolist()
    if args.guidance_scale.value is None:
        scales = [float(run.config.sample.get("guidance_scale", 1.0))]
    else:
        scales = _numbers(args.guidance_scale, float, "comma-separated numbers >= 0, e.g. 1,3,5")
    check_guidance("--guidance_scale", scales, len(scales), 0.0, None,
                   shown=args.guidance_scale.value)
    rescale = args.guidance_rescale.value
    if rescale is not None:
        check_guidance("--guidance_rescale", rescale, 1, 0.0, 1.0, shown=rescale)
    return labels, scales


def write_class_samples(args, run, labels, scales) -> None:
    """Sample every (label, scale) cell; write the .npz and a grid: row = class, column block
    = guidance scale."""
    per_cell = args.num_samples.value if args.num_samples.present else 1
    cells = run.sample_classes(labels, scales, per_cell, seed=args.seed.value,
                               guidance_rescale=args.guidance_rescale.value,
                               num_devices=args.num_devices.value, **sampler_options(args, run))
    if not sharding.is_main_process():
        return
    shape = cells.shape[3:]
    os.makedirs(os.path.dirname(os.path.abspath(args.out.value)), exist_ok=True)
    np.savez(args.out.value, samples=cells.reshape((-1,) + shape),
             labels=np.repeat(np.asarray(labels, np.int32), len(scales) * per_cell),
             guidance_scale=np.tile(np.repeat(np.asarray(scales, np.float32), per_cell),
                                    len(labels)))
    # images: one row per class, one column block per scale; points: all in one scatter plot
    shown = cells[:, :, :_GRID_COLUMNS] if len(shape) > 1 else cells
    plotting.save_samples(shown.reshape((-1,) + shape),
                          f"{os.path.splitext(args.out.value)[0]}.png",
                          title=f"classes {args.labels.value} (step {run.step})",
                          nrow=shown.shape[1] * shown.shape[2])
    print(f"wrote {cells.shape[0] * cells.shape[1] * cells.shape[2]} samples: {len(labels)} "
          f"classes x {len(scales)} guidance scales x {per_cell} with "
          f"{describe_sampler(args, run)} (step {run.step}) to {args.out.value}")


def check_flags(args, run) -> None:
    """Raise ConfigError naming the flag for values the sampler cannot use."""
    if args.num_samples.value < 1:
        raise ConfigError(f"--num_samples={args.num_samples.value} is invalid: an integer >= 1")
    if args.sampler.value is not None and args.sampler.value not in SAMPLERS:
        raise ConfigError(f"--sampler={args.sampler.value!r} is invalid: one of "
                          f"{', '.join(SAMPLERS)}")
    timesteps = run.schedule.timesteps
    if args.steps.value is not None and not 1 <= args.steps.value <= timesteps:
        raise ConfigError(f"--steps={args.steps.value} is invalid: an integer in "
                          f"[1, T={timesteps}]")
    if args.eta.value is not None and not 0 <= args.eta.value < float("inf"):  # NaN fails too
        raise ConfigError(f"--eta={args.eta.value} is invalid: a finite number >= 0")
    if args.order.value is not None and args.order.value not in (1, 2, 3):
        raise ConfigError(f"--order={args.order.value} is invalid: 1, 2 or 3")
    if args.solver.value is not None and args.solver.value not in KARRAS_SOLVERS:
        raise ConfigError(f"--solver={args.solver.value!r} is invalid: one of "
                          f"{', '.join(KARRAS_SOLVERS)}")
    if args.churn.value is not None and not 0 <= args.churn.value < float("inf"):
        raise ConfigError(f"--churn={args.churn.value} is invalid: a finite number >= 0")
    if args.resamples.value is not None and args.resamples.value < 1:
        raise ConfigError(f"--resamples={args.resamples.value} is invalid: an integer >= 1")
    devices = args.num_devices.value
    if devices is not None and not 1 <= devices <= jax.device_count():
        raise ConfigError(f"--num_devices={devices} is invalid: an integer in "
                          f"[1, {jax.device_count()}] (the devices present)")
    if not args.out.value.endswith(".npz"):
        raise ConfigError(f"--out={args.out.value!r} is invalid: a path ending in .npz")
    cli.check_writable("out", args.out.value, directory=False)
    if not -2**63 <= args.seed.value < 2**63:
        raise ConfigError(f"--seed={args.seed.value} is invalid: an integer in [-2**63, 2**63)")


_SAMPLER_FLAGS = ("steps", "eta", "order", "solver", "churn", "resamples")


def ignored_flags(args, run) -> list[str]:
    """The sampler flags given on the command line that the chosen sampler does not use (its
    fields in jaxdiff.config.SAMPLER_FIELDS): DDPM runs all T steps of the ancestral sampler, so
    it has no --steps, DDIM no --order, and so on."""
    sampler = args.sampler.value or run.config.sample.sampler
    used = SAMPLER_FIELDS[sampler]
    return [f"--{name}={getattr(args, name).value}" for name in _SAMPLER_FLAGS
            if getattr(args, name).present and name not in used]


def warn_ignored_flags(args, run) -> None:
    """One `warning:` line on stderr naming the flags the sampler ignores, if any."""
    ignored = ignored_flags(args, run)
    if ignored and sharding.is_main_process():
        sampler = args.sampler.value or run.config.sample.sampler
        verb = "are" if len(ignored) > 1 else "is"
        users = sorted({name for flag in ignored for name, fields in SAMPLER_FIELDS.items()
                        if flag[2:].split("=")[0] in fields})
        runs = (f"it runs all T={run.schedule.timesteps} steps; " if sampler == "ddpm" else "")
        print(f"warning: {' and '.join(ignored)} {verb} ignored by the {sampler} sampler ({runs}"
              f"used by --sampler {' / '.join(users)})", file=sys.stderr)


def sampler_options(args, run) -> dict:
    """The sampler flags the chosen sampler uses, as Run.sample arguments."""
    sampler = args.sampler.value or run.config.sample.sampler
    options = {name: getattr(args, name).value for name in _SAMPLER_FLAGS
               if name in SAMPLER_FIELDS[sampler]}
    return dict(sampler=args.sampler.value, **options)


def describe_sampler(args, run) -> str:
    """E.g. "dpm_solver (order 2, 20 steps, 20 model calls)"."""
    options = run.config.sample
    sampler = args.sampler.value or options.sampler
    value = lambda name: (getattr(args, name).value if getattr(args, name).present  # noqa: E731
                          else sample_option(run.config, name))
    t_start = editing_t_start(args, run)
    steps = value("steps")
    details = {"ddpm": [f"{options.variance}"] + (
                   [f"RePaint r={value('resamples')}"] if value("resamples") > 1 else []),
               "ddim": [f"eta {value('eta')}", f"{steps} steps"],
               "dpm_solver": [f"order {value('order')}", f"{steps} steps"],
               "karras": [value("solver"), f"{steps} steps", f"churn {value('churn')}"]}[sampler]
    if t_start is not None:
        details.append(f"from t_start={t_start}")
    calls = num_model_calls(run.config, run.schedule, sampler, steps, solver=value("solver"),
                            t_start=t_start, resamples=value("resamples"))
    return f"{sampler} ({', '.join(details + [f'{calls} model calls'])})"


def write_edits(args, run) -> None:
    """Edit every --init input --num_samples times (default 1); write samples, inputs,
    input_index (and mask) and a picture: one row per input (input, masked input, edits)."""
    inputs = load_init(args, run)
    mask = None if args.mask.value is None else load_mask(args, run)
    per_input = args.num_samples.value if args.num_samples.present else 1
    index = np.repeat(np.arange(len(inputs)), per_input)
    known = None if mask is None else inputs[index]
    samples = run.sample(len(index), seed=args.seed.value, **sampler_options(args, run),
                         x_start=None if editing_t_start(args, run) is None else inputs[index],
                         t_start=editing_t_start(args, run), known=known, mask=mask,
                         num_devices=args.num_devices.value)
    if not sharding.is_main_process():
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.out.value)), exist_ok=True)
    extra = {} if mask is None else {"mask": mask}
    np.savez(args.out.value, samples=samples, inputs=inputs, input_index=index, **extra)
    stem = os.path.splitext(args.out.value)[0]
    if samples.ndim == 4:  # images: a row per input
        rows = [inputs[:, None]]
        if mask is not None:  # the known part, the rest grey
            rows.append(np.where(np.broadcast_to(mask, inputs.shape) > 0.5, inputs,
                                 128).astype(np.uint8)[:, None])
        rows.append(samples.reshape((len(inputs), per_input) + samples.shape[1:]))
        grid = np.concatenate(rows, axis=1)
        plotting.save_samples(grid.reshape((-1,) + samples.shape[1:]), f"{stem}.png",
                              nrow=grid.shape[1])
    else:
        plotting.save_samples(samples, f"{stem}.png", title=f"edits (step {run.step})")
    print(f"wrote {len(samples)} edits of {len(inputs)} inputs with "
          f"{describe_sampler(args, run)} (step {run.step}) to {args.out.value}")


def sample(args: types.SimpleNamespace, argv: list[str]) -> None:
    """Sample with the parsed flags `args` (absl's main function; `argv` holds what is left)."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}: flags are written --name=value")
    absl_logging.set_verbosity(absl_logging.WARNING)
    cli.quiet_failed_read_leftovers()
    try:
        sharding.initialize_distributed()
        run = load_run(args.workdir.value, step=args.step.value)
        check_flags(args, run)
        check_editing_flags(args, run)
        warn_ignored_flags(args, run)
        labels, scales = guidance_flags(args, run)
    except (ConfigError, CheckpointError) as error:
        cli.fail(error)
    try:
        if args.init.value is not None:
            write_edits(args, run)
        elif labels is not None:
            write_class_samples(args, run, labels, scales)
        else:
            write_samples(args, run)
    except ConfigError as error:  # e.g. more samples than memory holds
        cli.fail(error)
    except NonFiniteError as error:  # refused, not written
        cli.fail(error, code=1)


def write_samples(args, run) -> None:
    """Sample --num_samples; write the .npz and pictures (and the trajectory's)."""
    out = run.sample(args.num_samples.value, seed=args.seed.value, **sampler_options(args, run),
                     return_trajectory=args.trajectory.value, num_devices=args.num_devices.value)
    if not sharding.is_main_process():  # every host sampled its share; one writes
        return
    samples, trajectory = out if args.trajectory.value else (out, None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out.value)), exist_ok=True)
    np.savez(args.out.value, samples=samples)
    stem = os.path.splitext(args.out.value)[0]
    plotting.save_samples(samples, f"{stem}.png", title=f"samples (step {run.step})")
    if trajectory is not None:
        plotting.save_trajectory(trajectory, stem)
    print(f"wrote {len(samples)} samples of shape {samples.shape[1:]} with "
          f"{describe_sampler(args, run)} (step {run.step}) to {args.out.value}")


def main() -> None:
    """The `jaxdiff-sample` program: define the flags, parse sys.argv, sample."""
    cli.run_program(sample, define_flags(), __doc__)


if __name__ == "__main__":
    main()
