"""The project's own error types: what the command line reports as one line, without a traceback.

Every class here is an :class:`UltrasamError`; the CLI catches exactly that family (a bug's
``TypeError`` keeps its traceback). The user-input errors are also ``ValueError`` so that
callers written against plain ``ValueError`` keep working.
"""

from __future__ import annotations


class UltrasamError(Exception):
    """Base of every error the project raises on purpose for a user to read."""


class UserInputError(UltrasamError, ValueError):
    """A value, file or option given by the user is unusable; the message names it."""


class CheckpointError(UserInputError):
    """A checkpoint that cannot be loaded exactly and safely; the message says why."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint refused before anything in it ran (a disallowed global, opcode, record,
    archive kind or an unbounded size); nothing from the file was executed."""


class DefaultModelUnavailable(UltrasamError, RuntimeError):
    """No trained default model is bundled with this installation."""


class UnknownNameError(UserInputError, KeyError):
    """A name (dataset source, object, ...) the user asked for does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(UltrasamError, ImportError):
    """An optional extra this feature needs is not installed; the message says which."""


class MissingToolError(UltrasamError, RuntimeError):
    """An external program this feature needs is not available; the message says which."""
