"""Held-out likelihood of a trained run: the variational bound and the probability-flow ODE.

    jaxdiff-likelihood --workdir runs/digits                  # bits/dim on the digits test split
    jaxdiff-likelihood --workdir runs/toy --num_examples 2000 --out likelihood.json

(in a checkout, `python -m jaxdiff.cli.likelihood` with the same flags). Images: bits per
dimension of the 8-bit data (VLB with Ho et al.'s discretised decoder; ODE with uniform
dequantisation). Points: nats per dimension of the data-space density. The held-out data are
the digits' test split, fresh draws of a 2-D toy set, the held-out rows of an array, or for
other image sets a sample of the training images (the report says which). Prints one line and
the report as JSON (also written to --out when given); the workdir is only read.
"""

import json
import os
import types

from absl import flags
from absl import logging as absl_logging

from jaxdiff import cli
from jaxdiff.errors import CheckpointError, ConfigError, NonFiniteError


def define_flags() -> types.SimpleNamespace:
    """The program's flags (in absl's global FLAGS), as holders named after them."""
    return types.SimpleNamespace(
        workdir=flags.DEFINE_string("workdir", None, "Run directory written by train.py.",
                                    required=True),
        num_examples=flags.DEFINE_integer("num_examples", None, "Held-out examples (default: "
                                          "the config's eval.likelihood_examples)."),
        seed=flags.DEFINE_integer("seed", 0, "Seed of the noise draws and probes."),
        step=flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest)."),
        out=flags.DEFINE_string("out", None, "Also write the report to this .json file."))


def likelihood(args: types.SimpleNamespace, argv: list[str]) -> None:
    """Compute and print the report with the parsed flags `args`."""
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])!r}: flags are written --name=value")
    absl_logging.set_verbosity(absl_logging.WARNING)
    cli.quiet_failed_read_leftovers()
    from jaxdiff.data.sources import open_source
    from jaxdiff.evaluate import held_out_data, likelihood_report
    from jaxdiff.run import load_run

    try:
        run = load_run(args.workdir.value, step=args.step.value)
        count = args.num_examples.value
        if count is None:
            count = run.config.eval.get("likelihood_examples", 500)
        if count < 1:
            raise ConfigError(f"--num_examples={count} is invalid: an integer >= 1")
        if args.out.value is not None:
            if not args.out.value.endswith(".json"):
                raise ConfigError(f"--out={args.out.value!r} is invalid: a path ending in .json")
            cli.check_writable("out", args.out.value, directory=False)
        source = None if run.config.data.name == "digits" else open_source(run.config)
        data, labels, which = held_out_data(run.config, source, count, seed=args.seed.value)
    except (ConfigError, CheckpointError) as error:
        cli.fail(error)
    report = likelihood_report(run.config, run.model_fn, run.schedule, run.codec, data, labels,
                               seed=args.seed.value)
    report.update(step=run.step, likelihood_data=which)
    bad = [k for k, v in report.items() if isinstance(v, float) and v != v]
    if bad:
        cli.fail(NonFiniteError(f"non-finite {', '.join(bad)} at step {run.step}"), code=1)
    unit = "bits" if "vlb_bits_per_dim" in report else "nats"
    ode = report.get(f"ode_{unit}_per_dim")
    ode = f"{ode:.4f} {unit}/dim" if ode is not None else f"failed ({report['ode_failed']})"
    print(f"step {run.step}, {which} ({report['likelihood_examples']} examples): "
          f"VLB {report[f'vlb_{unit}_per_dim']:.4f} {unit}/dim "
          f"({report['likelihood_variance']}), probability-flow ODE {ode}, in "
          f"{report['likelihood_seconds']:.1f} s")
    print(json.dumps(report, sort_keys=True))
    if args.out.value is not None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out.value)), exist_ok=True)
        with open(args.out.value, "w") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)


def main() -> None:
    """The `jaxdiff-likelihood` program: define the flags, parse sys.argv, compute."""
    cli.run_program(likelihood, define_flags(), __doc__)


if __name__ == "__main__":
    main()
