"""Exception hierarchy separating the user's mistakes from the project's own failures.

A `UserError` is something the user can fix (a bad file, a bad hyperparameter). Entry points
write its message first into SageMaker's failure file and exit non-zero. Any other exception is
an internal error, reported with its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Invalid input, data or settings, with a message that states what to change."""


class InvalidHyperparameter(UserError):
    """A hyperparameter outside its allowed values, e.g. `num_topics=1 must be in [2, 1000]`."""

    def __init__(self, name: str, value: object, requirement: str):
        self.name = name
        self.value = value
        self.requirement = requirement
        super().__init__(f"{name}={value!r} {requirement}")


class DataError(UserError):
    """Input data that cannot be used, located by file, line and field where known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        where = ", ".join(
            part for part in (
                f"file {path}" if path else "",
                f"line {line}" if line is not None else "",
                f"field {field!r}" if field else "",
            ) if part
        )
        super().__init__(f"{message} ({where})" if where else message)


class TrainingStopped(Exception):
    """Training was asked to stop (SIGTERM) and left a checkpoint to resume from."""
