"""The kinds of failure jaxdiff reports, one exception type each.

train.py and sample.py turn ConfigError and CheckpointError into one line on stderr with exit
code 2; TrainingInterrupted exits with 128 + the signal number, TrainingDiverged and
NonFiniteError with 1.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config value, flag, argument or input file, named with its value and what is
    allowed."""


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected (one line, naming the checkpoint)."""


class TrainingInterrupted(Exception):
    """SIGTERM / SIGINT during training: a checkpoint was saved; `signum` says which."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteError(RuntimeError):
    """Samples, metrics or a train state came out NaN or infinite: refused instead of written."""


def error_summary(error: BaseException) -> str:
    """`Type: first line` of an exception, cut at 160 characters (for one-line reports)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:160]}{'...' if len(line) > 160 else ''}"
