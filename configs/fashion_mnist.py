"""The packaged config jaxdiff/configs/fashion_mnist.py (also `--config fashion_mnist`), here so that
`python train.py --config configs/fashion_mnist.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.fashion_mnist import get_config  # noqa: F401
