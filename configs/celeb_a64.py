"""The packaged config jaxdiff/configs/celeb_a64.py (also `--config celeb_a64`), here so that
`python train.py --config configs/celeb_a64.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.celeb_a64 import get_config  # noqa: F401
