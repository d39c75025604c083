"""User-facing errors: one clear, actionable message instead of a deep traceback."""


class Sculpt4DError(Exception):
    """Base class for errors caused by user input (files, configs, checkpoints)."""

    exit_code = 2  # the status the command-line tasks exit with


class FailedObjectsError(Sculpt4DError):
    """A batch task (prep) finished, but some of its objects failed (exit status 1; the report stays)."""

    exit_code = 1


class InputError(Sculpt4DError, ValueError):
    """Bad input data: a missing/unreadable file, wrong shapes, too few frames."""


class CheckpointError(Sculpt4DError, RuntimeError):
    """A checkpoint that cannot be resolved, read or matched to the model."""


class MissingDependencyError(Sculpt4DError, ImportError):
    """An optional backend whose package is not installed."""

    def __init__(self, package: str, feature: str, alternative: str | None = None, hint: str | None = None):
        msg = f"{feature} needs the optional package '{package}', which is not installed."
        if hint:
            msg += f" Install it with: {hint}."
        if alternative:
            msg += f" Or use {alternative} instead."
        super().__init__(msg)
        self.package = package
