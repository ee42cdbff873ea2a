"""`nox -s bench`: figures, not tests. Prints ratios measured in one run.

- warm re-run: the whole matrix again with nothing changed (should start no process);
- orchestration overhead: matrix wall time over the sum of the bare scenario
  process times the records report (jobs=1, so the two are comparable);
- cold versus cached build of the cells' environments.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tabulate import tabulate

from repromatrix import runner
from repromatrix.backends import Backend
from repromatrix.matrix import Cell, Matrix
from repromatrix.scenarios import discover, records


def _timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def _process_seconds(results: Path) -> tuple[float, float, int]:
    wall = tf_import = 0.0
    count = 0
    for _, path in records.Layout(results).record_files():
        record = records.read_if_valid(path)
        if record is not None and record.is_ok:
            wall += record.process_wall_s
            tf_import += record.tf_import_s
            count += 1
    return wall, tf_import, count


def run(backend: Backend, matrix: Matrix, cells: list[Cell], results: Path) -> None:
    cells = [c for c in cells if backend.skip_reason(c) is None]
    if not cells:
        print("bench: no runnable cell in the selection (narrow it, e.g. -- --tf 2.21.0 --device cpu)")
        return
    shutil.rmtree(results, ignore_errors=True)
    options = runner.RunOptions(results=results, jobs=1)
    for cell in cells:  # environments ready first: the matrix timing below is scenarios and orchestration only
        backend.prepare(cell, verbose=False)
    found = discover()
    print(f"bench: {len(cells)} cells × {len(runner.planned_repeats(matrix, found))} repeats on {backend.name}")

    matrix_wall, outcomes = _timed(lambda: runner.run_matrix(backend, matrix, cells, options))
    started = sum(o.started for o in outcomes)
    process_wall, tf_import, count = _process_seconds(results)
    warm_wall, warm = _timed(lambda: runner.run_matrix(backend, matrix, cells, options))
    warm_started = sum(o.started for o in warm)
    cached_build, _ = _timed(lambda: backend.prepare(cells[0], verbose=False))
    cold_build = backend.build_cold(cells[0])

    rows = [
        ["scenario processes (measured run)", f"{started}", ""],
        ["matrix wall time, jobs=1", f"{matrix_wall:.1f} s", ""],
        ["sum of scenario process wall times", f"{process_wall:.1f} s", f"{count} records"],
        ["  of which TF import", f"{tf_import:.1f} s", f"{tf_import / process_wall:.0%} of process time"],
        ["orchestration overhead", f"{matrix_wall / process_wall:.2f}×", "matrix wall / Σ process wall"],
        ["warm re-run, nothing changed", f"{warm_wall:.2f} s", f"{warm_started} processes started"],
        ["warm re-run vs measured run", f"{warm_wall / matrix_wall:.4f}×", ""],
        [f"cold build ({cells[0].id})", f"{cold_build:.1f} s", backend.name],
        ["cached build (same cell)", f"{cached_build:.2f} s", f"{cold_build / max(cached_build, 1e-6):.0f}× faster"],
    ]
    print(tabulate(rows, ["figure", "value", "note"], disable_numparse=True))
