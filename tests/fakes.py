"""A backend without TensorFlow or Docker: the real harness code, with a fake scenario process.

The runner's plan/reuse/fill/resume logic and the harness's records are the
real ones; only the worker process (import TF, run the model) is replaced by
a function that writes a record with made-up arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repromatrix.backends import HarnessRun, Prepared
from repromatrix.errors import CellError
from repromatrix.matrix import Cell
from repromatrix.scenarios import exchange, records
from repromatrix.scenarios.__main__ import TF_REFUSES_UNSEEDED, Outcome, judge_exit
from repromatrix.scenarios.__main__ import main as harness_main


class HarnessDied(Exception):
    """The harness process ends mid-cell (killed), leaving the rest of its plan undone."""


@dataclass
class FakeBackend:
    key: str = "fake-environment-1"
    skip: dict[str, str] = field(default_factory=dict)  # cell id → reason
    fail_prepare: dict[str, str] = field(default_factory=dict)  # cell id → message
    raise_in_run: Exception | None = None
    error_repeats: set[str] = field(default_factory=set)  # labels whose process "fails"
    refused_repeats: set[str] = field(default_factory=set)  # labels TensorFlow "refuses" (a measured skip)
    lose_repeats: set[str] = field(default_factory=set)  # labels the harness "dies" on, writing nothing
    abandon_after: str = ""  # label after which the runner "ends" (removes the attempt) while the harness runs on
    name: str = "fake"
    started: list[str] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    swept: int = 0

    def environment_key(self, cell: Cell) -> str:
        return self.key

    def skip_reason(self, cell: Cell) -> str | None:
        return self.skip.get(cell.id)

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        if cell.id in self.fail_prepare:
            raise CellError(cell.id, self.fail_prepare[cell.id], "build log tail")
        self.prepared.append(cell.id)
        return Prepared(key=self.key, description={"backend": self.name}, handle="fake")

    def run(self, cell: Cell, prepared: Prepared, harness_args: list[str], out_dir: Path, timeout: float) -> HarnessRun:
        if self.raise_in_run is not None:
            raise self.raise_in_run
        try:
            code = harness_main([*harness_args, "--out", str(out_dir)], run_repeat=self._repeat)
        except HarnessDied:
            return HarnessRun(137, "", "Killed")
        return HarnessRun(code, "", "")

    def _repeat(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
        label = spec.label
        if label in self.lose_repeats:
            raise HarnessDied(label)
        self.started.append(label)
        if self.abandon_after and label != self.abandon_after and self.abandon_after in self.started:
            return Outcome("error", "exited with code 1: no output")  # what an orphaned container's repeats said
        if label == self.abandon_after:
            import shutil

            shutil.rmtree(Path(spec.record).parents[1] / ".attempts")
        if label in self.refused_repeats:
            return judge_exit(1, f"RuntimeError: {TF_REFUSES_UNSEEDED}.", Path(spec.record))
        if label in self.error_repeats:
            return Outcome("error", "exited with code 1: RuntimeError: boom", "Traceback ...\nRuntimeError: boom")
        # Seeded variants give the same bits every time; unseeded ones new bits per process.
        rng = np.random.default_rng(spec.seed)
        first = rng.random(4).astype(np.float32)
        arrays = {"model1.predictions": first, "model1.weights": first * 2,
                  "model2.predictions": first, "model2.weights": first * 2}  # fmt: skip
        record = records.Record.ok(arrays=arrays, in_process_identical=True, environment={"image": spec.image},
                                   **spec.record_fields())  # fmt: skip
        record.write(Path(spec.record), arrays)
        return Outcome("ok")

    def build_cold(self, cell: Cell) -> float:
        return 0.0

    def sweep(self) -> None:
        self.swept += 1

    def lost(self, exc: Exception, cell: Cell) -> None:
        return None
