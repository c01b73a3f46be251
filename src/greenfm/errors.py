"""User-facing errors.

Anything a user can cause (a bad file, a bad row, a bad option) raises a
``GreenfmError`` whose message is one line naming the file or row. The CLI
prints it and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class GreenfmError(Exception):
    """A problem the user can fix; its message is one self-explanatory line."""


class BadInputError(GreenfmError):
    """An input file, row or value that cannot be used."""

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class ConfigError(GreenfmError):
    """An option or configuration value that is invalid."""
