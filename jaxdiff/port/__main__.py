"""Convert a denoising-diffusion-pytorch checkpoint into a jaxdiff run (no torch needed):

    python -m jaxdiff.port ddp results/model-10.pt --workdir runs/ported --image_size 128
    python sample.py --workdir runs/ported --num_samples 16

(also the console script `jaxdiff-port`). The file is the Trainer's `model-N.pt` (its EMA
weights are used; --use_ema=false for the online model), a GaussianDiffusion state_dict or a
bare Unet state_dict, from ddp 1.x (GroupNorm) or 2.x (RMSNorm). The architecture is read from
the tensors (--dim, --dim_mults, ... override it and must fit them), the schedule, T and the
objective from GaussianDiffusion's buffers (a bare Unet takes --timesteps/--schedule/--objective
or ddp's defaults 1000/sigmoid/pred_v). The image size is not stored in any ddp file: give
--image_size (default 128, ddp's README). Prints one line and a JSON summary; a bad file or
flag is one line on stderr naming it, exit 2, and nothing is written.
"""

import types

from absl import flags
from absl import logging as absl_logging

from jaxdiff import cli
from jaxdiff.errors import ConfigError


def define_flags() -> types.SimpleNamespace:
    """The program's flags (in absl's global FLAGS), as holders named after them."""
    return types.SimpleNamespace(
        workdir=flags.DEFINE_string("workdir", None, "New run directory to write.",
                                    required=True),
        image_size=flags.DEFINE_integer("image_size", 128, "Image side the model was trained "
                                        "on (GaussianDiffusion's image_size; not in the file)."),
        timesteps=flags.DEFINE_integer("timesteps", None, "T (default: from the file's betas, "
                                       "else 1000)."),
        schedule=flags.DEFINE_enum("schedule", None, ["linear", "cosine", "sigmoid"],
                                   "Beta schedule (default: from the file, else sigmoid)."),
        objective=flags.DEFINE_enum("objective", None, ["pred_noise", "pred_x0", "pred_v"],
                                    "Objective (default: from the file's loss_weight, else "
                                    "pred_v)."),
        sampling_timesteps=flags.DEFINE_integer(
            "sampling_timesteps", None, "GaussianDiffusion's sampling_timesteps: fewer than T "
            "makes the run's sampler DDIM with that many steps (default: DDPM, T steps)."),
        ddim_eta=flags.DEFINE_float("ddim_eta", 0.0, "GaussianDiffusion's ddim_sampling_eta."),
        channels=flags.DEFINE_integer("channels", None, "Image channels (default: the Unet's "
                                      "output channels)."),
        dim=flags.DEFINE_integer("dim", None, "Unet dim (default: from the tensors)."),
        dim_mults=flags.DEFINE_list("dim_mults", None, "Unet dim_mults, e.g. 1,2,4,8 (default: "
                                    "from the tensors)."),
        resnet_block_groups=flags.DEFINE_integer(
            "resnet_block_groups", None, "GroupNorm groups of a 1.x Unet (default 8; the file "
            "does not store it)."),
        sinusoidal_pos_emb_theta=flags.DEFINE_float(
            "sinusoidal_pos_emb_theta", None, "The Unet's sinusoidal_pos_emb_theta (default "
            "10000; the file does not store it)."),
        random_fourier_features=flags.DEFINE_boolean(
            "random_fourier_features", False, "The Unet used random (frozen) Fourier time "
            "features rather than learned ones (same tensors)."),
        use_ema=flags.DEFINE_boolean("use_ema", True, "Use a Trainer file's EMA weights."),
        data_path=flags.DEFINE_string("data_path", "", "Image folder the model was trained on "
                                      "(recorded as data.path, for later evaluation)."))


def port(args: types.SimpleNamespace, argv: list[str]) -> None:
    """Convert with the parsed flags `args`; argv[1:] is `ddp FILE`."""
    if len(argv) != 3 or argv[1] != "ddp":
        cli.fail(f"usage: python -m jaxdiff.port ddp FILE --workdir W (got "
                 f"{' '.join(argv[1:]) or 'no arguments'!r})")
    absl_logging.set_verbosity(absl_logging.WARNING)
    from jaxdiff.port.workdir import dumps, port_ddp_checkpoint, summary_line

    overrides = {"dim": args.dim.value, "resnet_block_groups": args.resnet_block_groups.value,
                 "random_fourier_features": args.random_fourier_features.value or None,
                 "sinusoidal_pos_emb_theta": args.sinusoidal_pos_emb_theta.value}
    try:
        if args.dim_mults.value is not None:
            try:
                overrides["dim_mults"] = tuple(int(m) for m in args.dim_mults.value)
            except ValueError:
                raise ConfigError(f"--dim_mults={','.join(args.dim_mults.value)} is invalid: "
                                  "comma-separated integers, e.g. 1,2,4,8") from None
        summary = port_ddp_checkpoint(
            argv[2], args.workdir.value, image_size=args.image_size.value,
            timesteps=args.timesteps.value, schedule=args.schedule.value,
            objective=args.objective.value, sampling_timesteps=args.sampling_timesteps.value,
            ddim_eta=args.ddim_eta.value, channels=args.channels.value, overrides=overrides,
            use_ema=args.use_ema.value, data_path=args.data_path.value)
    except ConfigError as error:
        cli.fail(error)
    if not args.image_size.present:
        summary["notes"].append(f"image_size {args.image_size.value} assumed (ddp files do not "
                                "store it): pass --image_size if the model was trained on "
                                "another size")
    print(summary_line(summary))
    for note in summary["notes"]:
        print(f"note: {note}")
    print(dumps(summary))


def main() -> None:
    """The `jaxdiff-port` program: define the flags, parse sys.argv, convert."""
    cli.run_program(port, define_flags(), __doc__)


if __name__ == "__main__":
    main()
