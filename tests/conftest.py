"""Session-wide test configuration and shared fixtures.

Rank promotion is an error for the whole session: a per-example coefficient of shape [B] silently
broadcasting against [B, H, W, C] (or [B, D]) is the classic diffusion-code bug, and this turns
it into an immediate exception (as diffrax / equinox configure their tests). Nothing else is
changed globally: computations stay float32 (x64 is not enabled).
"""

import jax
import pytest

from helpers import tiny_toy_config

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def linear30():
    """The 30-step linear schedule of `helpers.label_model`."""
    import jaxdiff

    return jaxdiff.make_schedule("linear", timesteps=30)


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """The workdir of a finished `tiny_toy_config()` run (checkpoints 5, 10, 12), trained once per
    test process. Read it, or copy it before changing anything in it."""
    from jaxdiff.train_loop import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("toy_run") / "run")
    train_and_evaluate(tiny_toy_config(), workdir)
    return workdir
