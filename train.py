"""Train a diffusion model: python train.py --config toy2d --workdir runs/toy

The same program as the installed `jaxdiff-train`; the code is jaxdiff/cli/train.py.
"""

from jaxdiff.cli.train import format_report, main

__all__ = ["format_report", "main"]

if __name__ == "__main__":
    main()
