"""One error hierarchy. `FatalError`s end the command; `CellError`s end one cell.

Each carries a message meant to be printed as one line: what went wrong,
where, and how to fix it. `cli.main` is the only place that catches fatal
errors, and the runner never turns one into a cell error.

The one error outside this module is `RecordError` (in the record module,
which must run in any TensorFlow image without this package): a damaged
record is never fatal, the reporter leaves it out with a warning and the
runner measures that repeat again.
"""

from __future__ import annotations

from repromatrix.harness.records import RecordError

__all__ = [
    "BaseImageUnavailableError",
    "CellError",
    "CellsFailedError",
    "ConfigurationError",
    "EngineLostError",
    "EngineUnavailableError",
    "ExpectationsBrokenError",
    "FatalError",
    "Interrupted",
    "LockError",
    "RecordError",
    "ReportInputError",
    "RepromatrixError",
    "ResultsBusyError",
    "ResultsFullError",
]


class _Message:
    @property
    def message(self) -> str:
        args = getattr(self, "args", ())
        return str(args[0]) if args else type(self).__name__


class RepromatrixError(_Message, Exception):
    """What ends one cell or one lock, never the run: recorded, and the run goes on."""


class FatalError(_Message, BaseException):
    """What ends the command, with its own exit code. A BaseException, as cibuildwheel's: no
    `except Exception` on the way (a cell's, a best-effort clean-up's) can turn it into anything else;
    `cli.main` alone catches it."""

    return_code = 1


class ConfigurationError(FatalError):
    """matrix.toml or the command line is wrong."""

    return_code = 2


class ReportInputError(ConfigurationError):
    """The folders given to the reporter hold nothing to report."""


class ResultsBusyError(ConfigurationError):
    """Another run holds the results folder, or the folder cannot be used for this run."""


class ResultsFullError(ConfigurationError):
    """The results folder stopped taking writes mid-run (its file system full, or gone read-only)."""


class EngineUnavailableError(FatalError):
    """The Docker backend was asked for (or was in use) but no engine answers."""

    return_code = 3


class BaseImageUnavailableError(EngineUnavailableError):
    """The engine answers, but the image a recipe builds FROM is not on it and cannot be pulled."""


class EngineLostError(EngineUnavailableError):
    """The engine answered when the run started and stopped answering during it."""


class CellsFailedError(FatalError):
    """Some cells ended in error; the others finished and their results are kept."""

    return_code = 4


class ExpectationsBrokenError(FatalError):
    """A declared expectation broke (e.g. seeded but not reproducible); every report file is written."""

    return_code = 5


class Interrupted(FatalError):
    """Ctrl-C, SIGTERM or SIGHUP: containers removed, records kept (the code `cli.main` exits with)."""

    return_code = 130


class LockError(RepromatrixError):
    """A lock file could not be resolved for a TF version (the cell fails alone)."""


class CellError(RepromatrixError):
    """One cell could not be prepared or run. Recorded as `error` records; the run goes on."""

    def __init__(self, cell_id: str, message: str, detail: str = "") -> None:
        super().__init__(f"{cell_id}: {message}")
        self.cell_id = cell_id
        self.reason = message
        self.detail = detail  # build log or stderr tail, kept in the records


class CellSkipped(CellError):
    """The cell's environment does not exist (a pin its TF excludes, no wheel for its Python): recorded as
    `skipped` with the reason, as a cell this host cannot run is."""
