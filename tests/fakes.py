"""A backend without TensorFlow or Docker: the real harness and launchers, with a fake worker module.

The runner's plan/reuse/fill/resume logic, the harness (a real process of its own, as on either
backend), its launchers (fresh processes, or fork parents one per repeat index) and the records are
the real ones; only the worker module (import TF, run the model) is replaced by `tests.fake_worker`,
which writes a record with made-up arrays — or fails, is refused, kills the harness, or ends the run,
as the test asks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from repromatrix.backends import HarnessRun, Prepared
from repromatrix.errors import CellError
from repromatrix.harness.axes import Cell
from repromatrix.harness.launch import CODE_ROOT

# The file the fake worker reads what to do from (and appends what it started to).
BEHAVIOUR_ENV = "REPROMATRIX_FAKE_BEHAVIOUR"


@dataclass
class FakeBackend:
    key: str = "fake-environment-1"
    skip: dict[str, str] = field(default_factory=dict)  # cell id → reason
    fail_prepare: dict[str, str] = field(default_factory=dict)  # cell id → message
    raise_in_run: Exception | None = None
    error_repeats: set[str] = field(default_factory=set)  # labels whose process "fails"
    refused_repeats: set[str] = field(default_factory=set)  # labels TensorFlow "refuses" (a measured skip)
    lose_repeats: set[str] = field(default_factory=set)  # labels on which the harness is killed, writing nothing
    abandon_after: str = ""  # label after which the runner "ends" (removes the attempt) while the harness runs on
    name: str = "fake"
    prepared: list[str] = field(default_factory=list)
    swept: int = 0
    _log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="fake-started-")[1]))

    @property
    def started(self) -> list[str]:
        """The labels of the repeats whose (fake) scenario process ran, in order."""
        return [line for line in self._log.read_text().splitlines() if line]

    def environment_key(self, cell: Cell) -> str:
        return self.key

    def skip_reason(self, cell: Cell) -> str | None:
        return self.skip.get(cell.id)

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        if cell.id in self.fail_prepare:
            raise CellError(cell.id, self.fail_prepare[cell.id], "build log tail")
        self.prepared.append(cell.id)
        return Prepared(key=self.key, description={"backend": self.name}, handle="fake")

    def run(self, cell: Cell, prepared: Prepared, attempt: str, out_dir: Path, timeout: float) -> HarnessRun:
        if self.raise_in_run is not None:
            raise self.raise_in_run
        behaviour = {"error": sorted(self.error_repeats), "refused": sorted(self.refused_repeats),
                     "lose": sorted(self.lose_repeats), "abandon_after": self.abandon_after,
                     "started_log": str(self._log)}  # fmt: skip
        env = {
            **os.environ,
            BEHAVIOUR_ENV: json.dumps(behaviour),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "tests.fake_worker", "--harness", "--attempt", attempt, "--out", str(out_dir)]
        # Its own session, as the local backend starts it: its lease watchdog stops its group alone.
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False, start_new_session=True
        )
        return HarnessRun(done.returncode, done.stdout, done.stderr)

    def build_cold(self, cell: Cell) -> float:
        return 0.0

    def sweep(self) -> None:
        self.swept += 1

    def lost(self, exc: Exception, cell: Cell) -> None:
        return None

    def shell(self, cell: Cell, command: list[str], workdir: Path) -> int:
        return subprocess.run(command, cwd=workdir, check=False).returncode
