"""Public exceptions. Every error a user can cause maps to one of these, with a
one-line message naming the file, record or line and what is wrong."""

from __future__ import annotations


class FastvsError(Exception):
    """Base class: the CLI prints ``fastvs: <message>`` and exits with ``exit_code``."""

    exit_code = 1


class RulesError(FastvsError):
    """A rules file or rules API call is wrong (bad address, port, weight, scheduler...)."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = ""
        if source is not None and line is not None:
            where = f"{source}:{line}: "
        elif source is not None:
            where = f"{source}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


class CaptureError(FastvsError):
    """A capture file cannot be read or written (bad magic, truncated, bad block...)."""

    exit_code = 3


class EngineError(FastvsError):
    """The engine was misused (arrays that disagree, bad configuration)."""

    exit_code = 4
