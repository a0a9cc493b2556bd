"""The packaged config jaxdiff/configs/image_folder.py (also `--config image_folder`), here so that
`python train.py --config configs/image_folder.py` names a file in the repository. Edit a copy of the
packaged file to make your own config."""

from jaxdiff.configs.image_folder import get_config  # noqa: F401
