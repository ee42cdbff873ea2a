"""The one printer every thread uses, and per-repeat progress of the cells that are running.

Progress comes from the harness's summary files (what it has done so far), never
from its output: on a terminal one live line per running cell (rich), in CI
logs a plain line per running cell every LOG_EVERY_S seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from repromatrix.harness import exchange

_lock = threading.Lock()
LOG_EVERY_S = 30.0


def say(line: str) -> None:
    with _lock:
        print(line, flush=True)


def warn(line: str) -> None:
    """A line for stderr (errors and warnings), under the same lock."""
    with _lock:
        print(line, file=sys.stderr, flush=True)


@dataclass
class Running:
    cell_id: str
    summary: Path
    planned: int
    started: float

    def line(self) -> str:
        summary = exchange.Summary.read(self.summary)
        done = (summary.ok + summary.error + summary.skipped) if summary else 0
        elapsed = time.monotonic() - self.started
        left = ""
        if 0 < done < self.planned:
            left = f", about {_duration(elapsed / done * (self.planned - done))} left"
        return f"{self.cell_id}: {done}/{self.planned} repeats, {_duration(elapsed)} elapsed{left}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class Monitor:
    """Shows the running cells' progress until closed; `track` and `done` come from worker threads."""

    def __init__(self, live: bool | None = None) -> None:
        self.live = sys.stdout.isatty() if live is None else live
        self._running: dict[str, Running] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def track(self, cell_id: str, summary: Path, planned: int) -> None:
        with self._guard:
            self._running[cell_id] = Running(cell_id, summary, planned, time.monotonic())

    def done(self, cell_id: str) -> None:
        with self._guard:
            self._running.pop(cell_id, None)

    def _lines(self) -> list[str]:
        with self._guard:
            running = list(self._running.values())
        return [r.line() for r in running]

    def _loop(self) -> None:
        if self.live:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            # Lines printed meanwhile (say, warn) appear above the live lines.
            with Live(Text(""), console=Console(), refresh_per_second=2, transient=True) as live:
                while not self._stop.wait(0.5):
                    live.update(Text("\n".join(self._lines())))
            return
        while not self._stop.wait(LOG_EVERY_S):
            for line in self._lines():
                say(f"[progress] {line}")

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
