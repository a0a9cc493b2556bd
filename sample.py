"""Draw samples from a trained run: python sample.py --workdir runs/toy --num_samples 1000 --out
samples.npz [--sampler ddim --steps 50]

The same program as the installed `jaxdiff-sample`; the code is jaxdiff/cli/sample.py.
"""

from jaxdiff.cli.sample import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
