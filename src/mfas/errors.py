"""Exception types. Every error a user can cause names the file or key at fault."""

from __future__ import annotations


class MfasError(Exception):
    """Base class of the errors mfas raises on purpose."""


class DataError(MfasError):
    """Bad input data: an unreadable image, a wrong shape, a missing file."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(MfasError):
    """A store that cannot be opened or written: incomplete, truncated, inconsistent."""


class MetricError(MfasError, ValueError):
    """A metric that is undefined for the given input (e.g. only one class present)."""


class ConfigError(MfasError, ValueError):
    """A bad configuration key or value; the message names the key."""
