"""The packaged config jaxdiff/configs/mnist.py (also `--config mnist`), here so that
`python train.py --config configs/mnist.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.mnist import get_config  # noqa: F401
