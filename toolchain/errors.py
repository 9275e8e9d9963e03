"""Exceptions raised by edgec for bad input or a failed stage.

Every error a user can cause derives from :class:`EdgecError`; the CLI prints its message (never a
traceback) and exits with status 1.
"""

from __future__ import annotations


class EdgecError(Exception):
    """Base class of every error caused by input (files, options, devices), not by a bug."""


class ConfigError(EdgecError):
    """A recipe, config or profile value is invalid.

    Carries where the problem is, so the message reads ``recipe.yaml:12: distill.temperature: ...``.

    Args:
        message: what is wrong and what was expected.
        key: dotted key path (``distill.temperature``); a dataclass ``__post_init__`` sets only the
            field name and the loader prefixes the path.
        file: the file the value came from, if any.
        line: 1-based line in ``file``.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ):
        self.message = message
        self.key = key
        self.file = file
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"

    def located(self, *, prefix: str = "", file: str | None = None, line: int | None = None):
        """Return a copy whose key is prefixed with ``prefix`` and whose location is filled in."""
        key = ".".join(p for p in (prefix, self.key or "") if p) or None
        return ConfigError(
            self.message,
            key=key,
            file=self.file or file,
            line=self.line or line,
        )


class UnknownDeviceError(EdgecError):
    """A device name matches no profile; the message lists the known names, closest first."""


class StageError(EdgecError):
    """A pipeline stage failed; its partial output was removed."""


class NotImplementedYet(EdgecError):
    """A verb or option that is planned but not built yet."""


class ExportError(EdgecError):
    """An export failed or its parity check did not pass; nothing was written."""
