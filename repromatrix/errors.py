"""One error hierarchy. `FatalError`s end the command; `CellError`s end one cell.

Each carries a message meant to be printed as one line: what went wrong,
where, and how to fix it. `cli.main` is the only place that catches them.
"""

from __future__ import annotations


class FatalError(Exception):
    return_code = 1

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigurationError(FatalError):
    """matrix.toml or the command line is wrong."""

    return_code = 2


class EngineUnavailableError(FatalError):
    """The Docker backend was asked for but no engine answers."""

    return_code = 3


class CellsFailedError(FatalError):
    """Some cells ended in error; the others finished and their results are kept."""

    return_code = 4


class CellError(Exception):
    """One cell could not be prepared or run. Recorded as `error` records; the run goes on."""

    def __init__(self, cell_id: str, message: str, detail: str = "") -> None:
        super().__init__(f"{cell_id}: {message}")
        self.cell_id = cell_id
        self.message = message
        self.detail = detail  # build log or stderr tail, kept in the records
