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


class OptionError(FastvsError, ValueError):
    """An option value the engine or a tool refuses (out of range, not a number, wrong
    kind). ``option`` is the keyword's name (``capacity``, ``tunnel_mtu``); the command
    line shows it as its flag (``--capacity``, ``--tunnel-mtu``). Also a ValueError, as
    the Python API refused such values before it had this class."""

    exit_code = 2

    def __init__(self, option: str, message: str):
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")

    @property
    def flag(self) -> str:
        """The option as the ``fastvs`` command spells it."""
        return self.option if self.option.startswith("-") else "--" + self.option.replace("_", "-")


class EngineError(FastvsError):
    """The engine failed on input it accepted: it could not allocate its tables, or it
    refused a batch (arrays that disagree). A bug or an exhausted machine, not bad input."""

    exit_code = 4
