"""The experiment configs that ship with jaxdiff, one Python file per experiment.

Each module defines `get_config(arg="")` returning an `ml_collections.ConfigDict`; `arg` is the
part after a colon on the command line (`--config digits:quick`). The scripts take a config by
name (`--config toy2d`) or as a path to any such file (`--config my_config.py`); copy one of
these files to start your own.

    from jaxdiff import configs
    configs.config_names()            # ('celeb_a64', 'cifar10', 'digits', ...)
    configs.config_path("toy2d")      # the file, e.g. to copy as a template
    configs.get_config("toy2d", "quick")
"""

from __future__ import annotations

import importlib
import os

_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def config_names() -> tuple[str, ...]:
    """The names of the packaged configs, sorted (the file names without `.py`)."""
    return tuple(sorted(name[:-3] for name in os.listdir(_DIRECTORY)
                        if name.endswith(".py") and not name.startswith("_")))


def config_path(name: str) -> str:
    """The absolute path of the packaged config `name`; ValueError naming the available ones
    when there is none of that name."""
    if name not in config_names():
        raise ValueError(f"no packaged config {name!r}: one of {', '.join(config_names())}")
    return os.path.join(_DIRECTORY, f"{name}.py")


def get_config(name: str, arg: str = ""):
    """`get_config(arg)` of the packaged config `name` (unlocked, unlike the scripts' copy)."""
    config_path(name)  # the error naming the available configs
    return importlib.import_module(f"{__name__}.{name}").get_config(arg)
