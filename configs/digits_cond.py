"""The packaged config jaxdiff/configs/digits_cond.py (also `--config digits_cond`), here so that
`python train.py --config configs/digits_cond.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.digits_cond import get_config  # noqa: F401
