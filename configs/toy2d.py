"""The packaged config jaxdiff/configs/toy2d.py (also `--config toy2d`), here so that
`python train.py --config configs/toy2d.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.toy2d import get_config  # noqa: F401
