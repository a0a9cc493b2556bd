"""Train a diffusion model: python train.py --config configs/toy2d.py --workdir runs/toy

Any config field can be overridden, e.g. --config.data.name=moons --config.train.steps=5000.
Bad config values, flags and input files stop the run before compilation with one line naming
the field and exit code 2.
"""

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxdiff.experiment import ConfigError
from jaxdiff.train_loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy2d.py", "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/toy", "Directory for checkpoints, logs and plots.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
    logging.getLogger("jaxdiff").setLevel(logging.INFO)
    try:
        report = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(format_report(report))


def format_report(report: dict) -> str:
    return (
        f"step {report['step']}: sliced Wasserstein {report['swd']:.4f} "
        f"(fresh-vs-fresh floor {report['swd_floor']:.4f}, ratio {report['swd'] / report['swd_floor']:.2f}); "
        f"energy distance {report['energy']:.5f} (floor {report['energy_floor']:.5f}); "
        f"{report['num_samples']} samples by {report['sampler']} in {report['sample_seconds']:.1f} s"
    )


if __name__ == "__main__":
    app.run(main)
