"""`nox -s bench`: figures, not tests. Prints ratios measured in one run.

- isolation: the same cells from an empty folder in process and in fork mode: matrix wall
  time of each, seconds per repeat of each, and their ratio;
- warm re-run: the whole matrix again with nothing changed (should start no process);
- orchestration overhead: matrix wall time over the sum of the bare scenario
  process times the records report (jobs=1, so the two are comparable);
- cold versus cached build of the cells' environments.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
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


def _mode(backend: Backend, matrix: Matrix, cells: list[Cell], results: Path, isolation: str,
          jobs: int) -> tuple[float, int, Path]:  # fmt: skip
    """(matrix wall seconds, scenario repeats started, folder) of one cold run in one isolation mode."""
    folder = results / isolation
    shutil.rmtree(folder, ignore_errors=True)
    options = runner.RunOptions(results=folder, jobs=jobs)
    wall, outcomes = _timed(lambda: runner.run_matrix(backend, replace(matrix, isolation=isolation), cells, options))
    return wall, sum(o.started for o in outcomes), folder


def run(backend: Backend, matrix: Matrix, cells: list[Cell], results: Path, jobs: int) -> None:
    cells = [c for c in cells if backend.skip_reason(c) is None]
    if not cells:
        print("bench: no runnable cell in the selection (narrow it, e.g. -- --tf 2.21.0 --device cpu)")
        return
    shutil.rmtree(results, ignore_errors=True)
    for cell in cells:  # environments ready first: the timings below are scenarios and orchestration only
        backend.prepare(cell, verbose=False)
    found = discover()
    print(f"bench: {len(cells)} cells × {len(runner.planned_repeats(matrix, found))} repeats on {backend.name}, "
          f"jobs={jobs}, each isolation mode from an empty results folder")  # fmt: skip

    process_wall, process_started, process_folder = _mode(backend, matrix, cells, results, "process", jobs)
    fork_wall, fork_started, _ = _mode(backend, matrix, cells, results, "fork", jobs)
    summed, tf_import, count = _process_seconds(process_folder)
    # Core-seconds per repeat: the wall time of the whole run, times the cells run at once, per repeat.
    per_process = process_wall * jobs / max(process_started, 1)
    per_fork = fork_wall * jobs / max(fork_started, 1)
    # The same run again into the process-mode folder: everything is reusable, nothing should start.
    warm_wall, warm = _timed(
        lambda: runner.run_matrix(
            backend, replace(matrix, isolation="process"), cells, runner.RunOptions(results=process_folder, jobs=jobs)
        )
    )
    cached_build, _ = _timed(lambda: backend.prepare(cells[0], verbose=False))
    cold_build = backend.build_cold(cells[0])

    rows = [
        ["repeats run (each mode)", f"{process_started} / {fork_started}", "process / fork"],
        ["matrix wall time, process isolation", f"{process_wall:.1f} s", ""],
        ["matrix wall time, fork isolation", f"{fork_wall:.1f} s", f"{process_wall / fork_wall:.2f}× faster"],
        ["seconds per repeat, process", f"{per_process:.2f} s", "wall × jobs / repeats"],
        ["seconds per repeat, fork", f"{per_fork:.2f} s", f"{per_fork / per_process:.2f}× a process repeat"],
        ["Σ scenario process wall (process mode)", f"{summed:.1f} s", f"{count} records"],
        ["  of which TF import", f"{tf_import:.1f} s", f"{tf_import / max(summed, 1e-9):.0%} of process time"],
        ["orchestration overhead (process mode)", f"{process_wall * jobs / max(summed, 1e-9):.2f}×",
         "wall × jobs / Σ process wall"],
        ["warm re-run, nothing changed", f"{warm_wall:.2f} s",
         f"{sum(o.started for o in warm)} processes started"],
        [f"cold build ({cells[0].id})", f"{cold_build:.1f} s", backend.name],
        ["cached build (same cell)", f"{cached_build:.2f} s", f"{cold_build / max(cached_build, 1e-6):.0f}× faster"],
    ]  # fmt: skip
    print(tabulate(rows, ["figure", "value", "note"], disable_numparse=True))
    print()
    print(tabulate(_per_scenario(process_folder, results / "fork"), ["scenario variant", "process repeat",
          "fork child", "ratio"], disable_numparse=True))  # fmt: skip
    print("(a fork child's wall time; each cell also pays one TensorFlow import per parent, two parents per cell)")


def _per_scenario(process_folder: Path, fork_folder: Path) -> list[list[str]]:
    """Mean wall seconds of one repeat per scenario variant in each mode, from the records."""
    walls: dict[tuple[str, str], list[float]] = {}
    for mode, folder in (("process", process_folder), ("fork", fork_folder)):
        for _, path in records.Layout(folder).record_files():
            record = records.read_if_valid(path)
            if record is not None and record.is_ok:
                walls.setdefault((record.name, mode), []).append(record.process_wall_s)
    rows = []
    for name in sorted({name for name, _ in walls}):
        process, fork = walls.get((name, "process")), walls.get((name, "fork"))
        if process and fork:
            a, b = sum(process) / len(process), sum(fork) / len(fork)
            rows.append([name, f"{a:.2f} s", f"{b:.2f} s", f"{b / a:.2f}×"])
    return rows
