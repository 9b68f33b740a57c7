"""Errors a user can act on.

Every problem caused by user input (a file, an option, a config value) is raised as a
:class:`GalforgeError` subclass whose message names the file or option and says what to do.
The command-line interface prints the message as one line, without a traceback, and exits
with status 2.
"""

from __future__ import annotations


class GalforgeError(Exception):
    """Base class of every error galforge raises for bad input or state."""

    exit_code = 2


class DataError(GalforgeError):
    """Input data that cannot be read or used (empty folder, corrupt FITS, all-NaN image, ...)."""


class ConfigError(GalforgeError):
    """A bad option, config file or config value (unknown model, bad YAML, bad --set)."""


class ModelError(GalforgeError):
    """A model that cannot be built for the data or options given."""


class BundleError(GalforgeError):
    """A bundle or run folder that is missing, incomplete or inconsistent."""


class TrainingError(GalforgeError):
    """Training stopped for a reason the user must look at (non-finite loss, bad resume)."""


class EvaluationError(GalforgeError):
    """An evaluation that cannot be carried out on the inputs given."""


class DiskFullError(GalforgeError):
    """The disk filled up while galforge wrote ``path``; nothing partial was left behind."""

    def __init__(self, path, hint: str = "run the command again"):
        self.path = str(path)
        self.hint = hint
        super().__init__(f"disk full while writing {self.path}; free space and {hint}")

    def with_hint(self, hint: str) -> DiskFullError:
        """The same error with another ``free space and ...`` advice (the command's own)."""
        return DiskFullError(self.path, hint)


class Interrupted(GalforgeError):
    """A run stopped on SIGINT/SIGTERM after saving what lets it continue.

    The message is the one line the command prints; ``exit_code`` is 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM), as a shell reports a process ended by that signal.
    """

    def __init__(
        self, message: str, signum: int = 2, step: int | None = None, checkpoint: str | None = None
    ):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        self.step = step
        self.checkpoint = checkpoint
