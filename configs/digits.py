"""The packaged config jaxdiff/configs/digits.py (also `--config digits`), here so that
`python train.py --config configs/digits.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.digits import get_config  # noqa: F401
