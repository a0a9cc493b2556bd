"""Train a diffusion model: `jaxdiff-train --config toy2d --workdir runs/toy` (or, in a checkout,
`python train.py --config toy2d --workdir runs/toy`).

`--config` is a packaged config's name (`toy2d`, `digits:quick`, ...) or a path to a config file;
any config field can be overridden, e.g. --config.data.name=moons --config.train.steps=5000.
Bad config values, flags and input files stop the run before compilation with one line naming
the field and exit code 2.

The run resumes from the newest readable checkpoint in the workdir (a damaged newest one is moved
to checkpoints_damaged/ with a warning). SIGTERM or SIGINT saves a checkpoint at the current step
and exits with 128 + the signal number; too many consecutive non-finite steps exit with 1.
"""

import logging
import sys
import types

from absl import flags
from absl import logging as absl_logging

from jaxdiff import cli
from jaxdiff.errors import (CheckpointError, ConfigError, NonFiniteError, TrainingDiverged,
                            TrainingInterrupted)
from jaxdiff.sharding import initialize_distributed
from jaxdiff.train_loop import train_and_evaluate

DEFAULT_CONFIG = "toy2d"


def define_flags() -> types.SimpleNamespace:
    """The program's flags (in absl's global FLAGS), as holders: config, workdir, force."""
    return types.SimpleNamespace(
        config=cli.define_config(DEFAULT_CONFIG),
        workdir=flags.DEFINE_string("workdir", "runs/toy",
                                    "Directory for checkpoints, logs and plots."),
        force=flags.DEFINE_boolean("force", False,
                                   "Continue a workdir whose run has a different config."))


def train(args: types.SimpleNamespace, argv: list[str]) -> None:
    """Train with the parsed flags `args` (absl's main function; `argv` holds what is left)."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}: flags are written --name=value")
    initialize_distributed()  # multi-host jobs: before anything touches a JAX backend
    absl_logging.set_verbosity(absl_logging.WARNING)
    cli.quiet_failed_read_leftovers()  # Orbax logs every save at INFO
    logging.getLogger("jaxdiff").setLevel(logging.INFO)
    config = cli.load_config(args.config)
    try:
        cli.check_writable("workdir", args.workdir.value, directory=True)
        report = train_and_evaluate(config, args.workdir.value, force=args.force.value)
    except (ConfigError, CheckpointError) as error:
        cli.fail(error)
    except TrainingInterrupted as stop:  # SIGTERM / SIGINT: a checkpoint was saved
        print(f"stopped: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (TrainingDiverged, NonFiniteError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(format_report(report))


def format_report(report: dict) -> str:
    """One line: the sample-quality figures next to their fresh-data floors."""
    if "swd" in report:
        floor = report["swd_floor"]
        ratio = (f"ratio {report['swd'] / floor:.2f}" if floor > 0 else
                 "a zero floor: the held-out draws coincide, so no ratio")
        quality = (
            f"sliced Wasserstein {report['swd']:.4f} (fresh-vs-fresh floor "
            f"{floor:.4f}, {ratio}); "
            f"precision {report['precision']:.3f} (floor {report['precision_floor']:.3f}), "
            f"recall {report['recall']:.3f} (floor {report['recall_floor']:.3f})")
    elif "digits_fd" in report:
        quality = (f"digits-classifier Fréchet distance {report['digits_fd']:.3f} "
                   f"(train-vs-test floor {report['digits_fd_floor']:.3f})")
        if "class_accuracy" in report:
            quality += f"; class accuracy {report['class_accuracy']:.3f}"
    elif "fid" in report:
        quality = f"FID {report['fid']:.2f} over {int(report['fid_num_images'])} samples"
    else:
        quality = "samples written"
    line = (f"step {report['step']}: {quality}; {report['num_samples']} samples by "
            f"{report['sampler']} in {report['sample_seconds']:.1f} s")
    for unit in ("bits", "nats"):
        if f"vlb_{unit}_per_dim" in report:
            ode = report.get(f"ode_{unit}_per_dim")
            line += (f"; {report['likelihood_data']} ({report['likelihood_examples']}): VLB "
                     f"{report[f'vlb_{unit}_per_dim']:.3f}, ODE "
                     f"{'failed' if ode is None else f'{ode:.3f}'} {unit}/dim")
    return line


def main() -> None:
    """The `jaxdiff-train` program: define the flags, parse sys.argv, train."""
    cli.run_program(train, define_flags(), __doc__)


if __name__ == "__main__":
    main()
