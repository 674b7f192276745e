"""The exceptions that several layers share: each is a mistake a user can fix, and ``str()`` is
one line that says what is wrong (the commands print it and exit with status 2), except
:class:`Pruned` and :class:`NonFiniteLoss`, which end a training run early.
"""

from __future__ import annotations

__all__ = ["AugError", "BudgetError", "ConfigError", "DataError", "NonFiniteLoss", "OpError", "Pruned",
           "SpecError", "StudyError", "SweepConfigError", "first_line"]


def first_line(e: BaseException, limit: int = 200) -> str:
    """``TypeName: the first line of the message`` (cut at ``limit``): a failure that is a verdict, not a crash."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:limit]}"


class ConfigError(ValueError):
    """A user mistake in overrides or config choices; ``str()`` is one line."""


class SpecError(ValueError):
    """A malformed model spec. ``str(err)`` is one line: ``<yaml path>: <what is wrong>``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class OpError(ValueError):
    """A shape/channel problem found by an op's rule; ``field`` names the culprit."""

    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


class BudgetError(ValueError):
    """A malformed budget config (conf/budget/)."""


class StudyError(ValueError):
    """A study that cannot be opened or read as asked (storage, name, its recorded settings)."""


class DataError(RuntimeError):
    """A data problem the user can fix; ``str()`` is one line that says how."""


class AugError(ValueError):
    """A bad augmentation config; ``str()`` is one line naming the transform and argument."""


class Pruned(Exception):
    """Raised by an epoch hook (the sweeper's pruner) to stop a trial early."""

    def __init__(self, epoch: int, value: float):
        super().__init__(f"pruned after epoch {epoch} (val_acc {value:.4f})")
        self.epoch, self.value = epoch, value


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial fails, the sweep goes on."""


class SweepConfigError(ValueError):
    """A mistake in a sweep's settings (hydra.sweeper.*): its search space, objectives, sampler."""
