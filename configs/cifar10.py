"""The packaged config jaxdiff/configs/cifar10.py (also `--config cifar10`), here so that
`python train.py --config configs/cifar10.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.cifar10 import get_config  # noqa: F401
