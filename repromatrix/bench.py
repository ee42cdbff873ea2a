"""`nox -s bench`: figures, not tests. Prints ratios measured in one run.

- isolation: the same cells from an empty folder in process and in fork mode: matrix wall
  time of each, seconds per repeat of each, and their ratio;
- the seed-to-seed spread's cost: the fork run again without spread runs (`spread_seeds = 0`);
- warm re-run: the whole matrix again with nothing changed (should start no process);
- orchestration overhead: matrix wall time over the sum of the bare scenario
  process times the records report (jobs=1, so the two are comparable);
- cold versus cached build of the cells' environments;
- record sizes: bytes per record per scenario variant, and the results folder;
- report seconds against record count (synthetic records of the cnn_training shape),
  so the scaling curve is measured, not assumed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from tabulate import tabulate

from repromatrix import runner
from repromatrix.backends import Backend
from repromatrix.harness import records
from repromatrix.harness.axes import Cell
from repromatrix.harness.catalog import discover
from repromatrix.harness.layout import Layout
from repromatrix.harness.records import Isolation
from repromatrix.matrix import Matrix

T = TypeVar("T")


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def _process_seconds(results: Path) -> tuple[float, float, int]:
    wall = tf_import = 0.0
    count = 0
    for _, path in Layout(results).record_files():
        record = records.read_if_valid(path)
        if record is not None and record.is_ok:
            wall += record.process_wall_s
            tf_import += record.tf_import_s
            count += 1
    return wall, tf_import, count


def _mode(backend: Backend, matrix: Matrix, cells: list[Cell], results: Path, isolation: Isolation,
          jobs: int, folder_name: str = "") -> tuple[float, int, Path]:  # fmt: skip
    """(matrix wall seconds, scenario repeats started, folder) of one cold run in one isolation mode."""
    folder = results / (folder_name or isolation)
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

    process_wall, process_started, process_folder = _mode(backend, matrix, cells, results, Isolation.PROCESS, jobs)
    fork_wall, fork_started, _ = _mode(backend, matrix, cells, results, Isolation.FORK, jobs)
    # The seed-to-seed spread's cost (reporting/matter.py): the same fork run without spread runs.
    bare = replace(matrix, spread_seeds=0)
    bare_wall, bare_started, _ = _mode(backend, bare, cells, results, Isolation.FORK, jobs, "fork-no-spread")
    spread_wall, spread_count = _spread_seconds(results / "fork")
    summed, tf_import, count = _process_seconds(process_folder)
    # Core-seconds per repeat: the wall time of the whole run, times the cells run at once, per repeat.
    per_process = process_wall * jobs / max(process_started, 1)
    per_fork = fork_wall * jobs / max(fork_started, 1)
    # The same run again into the process-mode folder: everything is reusable, nothing should start.
    warm_wall, warm = _timed(
        lambda: runner.run_matrix(
            backend,
            replace(matrix, isolation=Isolation.PROCESS),
            cells,
            runner.RunOptions(results=process_folder, jobs=jobs),
        )
    )
    cached_build, _ = _timed(lambda: backend.prepare(cells[0], verbose=False))
    cold_build = backend.build_cold(cells[0])

    rows = [
        ["repeats run (each mode)", f"{process_started} / {fork_started}", "process / fork"],
        ["matrix wall time, process isolation", f"{process_wall:.1f} s", ""],
        ["matrix wall time, fork isolation", f"{fork_wall:.1f} s", f"{process_wall / fork_wall:.2f}× faster"],
        [f"fork, no spread runs (spread_seeds 0 instead of {matrix.spread_seeds})", f"{bare_wall:.1f} s",
         f"{bare_started} repeats; with them {fork_wall / max(bare_wall, 1e-9):.2f}× the time"],
        ["  spread runs (fork children)", f"{spread_wall:.1f} s", f"{spread_count} run, the rest stood in for "
         "by an unseeded sibling"],
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
    print(
        "(a fork child's wall time; each cell also pays one TensorFlow import per parent, one parent per repeat index)"
    )
    print()
    print(tabulate(record_sizes(results / "fork"), ["scenario variant", "records", "mean bytes", "largest"],
                   disable_numparse=True))  # fmt: skip
    print()
    print(tabulate(report_scaling(results / "synthetic"), ["records", "first report s", "per 1 000",
                   "next report s", "per 1 000"], disable_numparse=True))  # fmt: skip


def _spread_seconds(folder: Path) -> tuple[float, int]:
    """Σ wall seconds and count of the spread runs that ran (not those an unseeded sibling stood in for)."""
    wall, count = 0.0, 0
    for _, path in Layout(folder).record_files():
        record = records.read_if_valid(path)
        if record is not None and record.spread and record.is_ok:
            wall += record.process_wall_s
            count += 1
    return wall, count


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, records.arrays_path(path)) if p.is_file())


def record_sizes(folder: Path) -> list[list[str]]:
    """Bytes (JSON + npz) per record, per scenario variant, and the folder's total."""
    sizes: dict[str, list[int]] = {}
    for _, path in Layout(folder).record_files():
        sizes.setdefault(path.parent.name, []).append(_bytes(path))
    rows = [[name, str(len(found)), f"{sum(found) / len(found):,.0f}", f"{max(found):,}"]
            for name, found in sorted(sizes.items())]  # fmt: skip
    every = [n for found in sizes.values() for n in found]
    if every:
        rows.append(["all", str(len(every)), f"{sum(every) / len(every):,.0f}", f"total {sum(every) / 1e6:.1f} MB"])
    return rows


def synthetic_records(folder: Path, count: int) -> None:
    """`count` ok records shaped like cnn_training's (predictions, 20k weights, per-layer and per-epoch
    arrays), over cells of a one-axis sweep, 3 seeded repeats each: real files, made-up bits.

    Five classes of cells; each class's record is made (digested, bounded) once and its files copied,
    so making 10 000 takes seconds.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"predictions": (64, 10), "weights": (20_000,), "layer.00.conv2d": (64, 32, 32, 16),
              "layer.01.batch_normalization": (64, 32, 32, 16), "epoch.00.weights": (20_000,),
              "epoch.01.weights": (20_000,), "epoch.02.weights": (20_000,)}  # fmt: skip
    base = {name: rng.random(shape, dtype=np.float32) for name, shape in shapes.items()}
    made: dict[int, tuple[records.Record, bytes]] = {}
    scratch = folder / ".class"
    for index in range(count):
        cell, repeat = divmod(index, 3)
        cell_id = f"tf2.21.0-cpu-onednn1-det0-intra{cell + 1}"
        kind = cell % 5
        if kind not in made:
            arrays = {f"{model}.{name}": value for model in ("model1", "model2") for name, value in base.items()}
            arrays["model1.predictions"] = base["predictions"] + np.float32(kind)
            record = records.Record.ok(arrays=arrays, in_process_identical=True, reuse_key="synthetic",
                                       scenario="cnn_training", variant="seeded", seed=42, repeat=0)  # fmt: skip
            record.write(scratch / "0.json", arrays)
            made[kind] = (record, records.arrays_path(scratch / "0.json").read_bytes())
        record, npz = made[kind]
        cell_fields = {"id": cell_id, "tf": "2.21.0", "device": "cpu", "intra_op_threads": cell + 1}
        path = Layout(folder).cell(cell_id).record("cnn_training", "seeded", repeat)
        path.parent.mkdir(parents=True, exist_ok=True)
        records.arrays_path(path).write_bytes(npz)
        path.write_text(json.dumps(replace(record, cell=cell_fields, repeat=repeat).to_json()))
    shutil.rmtree(scratch, ignore_errors=True)


def report_scaling(folder: Path, counts: tuple[int, ...] = (99, 999, 9999)) -> list[list[str]]:
    """Seconds to render every report file over `count` synthetic records: the first report (every
    array verified) and the next (verifications remembered), for each count."""
    from repromatrix.reporting import render_all

    rows = []
    for count in counts:
        shutil.rmtree(folder, ignore_errors=True)
        synthetic_records(folder / "results", count)
        first, _ = _timed(lambda: render_all([folder / "results"], folder / "report"))
        again, _ = _timed(lambda: render_all([folder / "results"], folder / "report"))
        rows.append([str(count), f"{first:.2f}", f"{first / count * 1000:.2f}", f"{again:.2f}",
                     f"{again / count * 1000:.2f}"])  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def _per_scenario(process_folder: Path, fork_folder: Path) -> list[list[str]]:
    """Mean wall seconds of one repeat per scenario variant in each mode, from the records."""
    walls: dict[tuple[str, str], list[float]] = {}
    for mode, folder in (("process", process_folder), ("fork", fork_folder)):
        for _, path in Layout(folder).record_files():
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
