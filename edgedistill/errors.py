"""One exception family. Each class carries the process exit code the CLI returns for it.

Exit codes (also in the README):
0 pass · 1 a budget failed · 2 usage or config error · 3 internal error ·
4 invalid measurement · 5 inconclusive (device unreachable, timeout, crash) ·
6 refused for safety (untrusted model format).
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_BUDGET_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INVALID = 4
EXIT_INCONCLUSIVE = 5
EXIT_UNSAFE = 6


class EdgeDistillError(Exception):
    """Base class: a one-line message, an optional hint, and the exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class UsageError(EdgeDistillError):
    """Bad input from the user: a missing file, a wrong shape, an unknown key."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config or target file that does not validate."""


class ModelMismatchError(UsageError):
    """Teacher, student and data do not fit together (class counts, input shapes)."""


class ExportError(EdgeDistillError):
    """An exporter or runtime could not convert the model (names the operator where known)."""

    exit_code = EXIT_USAGE


class VerificationError(EdgeDistillError):
    """An exported artifact's outputs differ from PyTorch beyond tolerance."""

    exit_code = EXIT_USAGE


class BackendUnavailableError(UsageError):
    """A requested runtime is not installed or cannot run here."""


class UnsafeModelError(EdgeDistillError):
    """A model file that would run code when loaded (pickle) and is not trusted."""

    exit_code = EXIT_UNSAFE


class InvalidMeasurementError(EdgeDistillError):
    exit_code = EXIT_INVALID


class InconclusiveError(EdgeDistillError):
    """Timeout, crash or unreachable device: no verdict can be given."""

    exit_code = EXIT_INCONCLUSIVE


class HostKeyError(EdgeDistillError):
    """An SSH device whose host key is unknown or changed: refused before anything runs on it."""

    exit_code = EXIT_UNSAFE
