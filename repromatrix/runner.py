"""Plan → build → run: which repeats are missing, make their environments, run them.

Resumable by construction: a repeat whose record exists, is `ok` and carries
the same reuse key (environment, knobs, scenario source, variant, seed) is never run
again, so a killed run started again only fills the gaps.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scenarios
from repromatrix import cleanup
from repromatrix.backends import Backend, Prepared
from repromatrix.errors import CellError
from repromatrix.matrix import Cell, Matrix
from scenarios import _records

_print_lock = threading.Lock()
STARTED = re.compile(r"scenario processes started: (\d+)")


def say(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def default_jobs() -> int:
    """One cell per core, but no more than one per 4 GiB of memory (a TF process peaks near 1 GiB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 4.0
    return max(1, min(cores, int(memory_gib // 4)))


@dataclass(frozen=True)
class Repeat:
    scenario: scenarios.Scenario | None
    name: str
    variant: str
    seed: int | None
    index: int

    def path(self, out: Path) -> Path:
        return _records.record_path(out, self.name, self.variant, self.index)


@dataclass
class CellOutcome:
    cell: Cell
    state: str  # "up to date", "ran", "skipped", "error", "interrupted"
    started: int = 0  # scenario processes started
    counts: dict[str, int] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class RunOptions:
    results: Path
    jobs: int = 1
    force: bool = False
    verbose: bool = False


def expected_repeats(matrix: Matrix) -> list[Repeat]:
    found = scenarios.discover()
    planned = []
    for name in matrix.scenarios:
        info = found.get(name)
        variants = info.variants if info and info.variants else ("unknown",)
        for variant in variants:
            seed = matrix.seed if variant == "seeded" else None
            for index in range(matrix.repeats):
                planned.append(Repeat(info if info and not info.problem else None, name, variant, seed, index))
    return planned


def cell_key(environment_key: str, cell: Cell) -> str:
    """The environment plus the cell's knobs: what a record's bits depend on besides the scenario."""
    return f"{environment_key}|{cell.id}"


def _key(environment_key: str, repeat: Repeat) -> str | None:
    if repeat.scenario is None:
        return None
    return scenarios.reuse_key(environment_key, repeat.scenario, repeat.variant, repeat.seed)


def missing(out: Path, repeats: list[Repeat], environment_key: str, force: bool) -> list[Repeat]:
    if force:
        return list(repeats)
    return [r for r in repeats if not _records.is_reusable(r.path(out), _key(environment_key, r) or "")]


def harness_args(matrix: Matrix, cell: Cell, prepared: Prepared, force: bool) -> list[str]:
    args = [
        *matrix.scenarios,
        "--repeat", str(matrix.repeats),
        "--seed", str(matrix.seed),
        "--timeout", f"{matrix.timeout:g}",
        "--onednn", "on" if cell.onednn else "off",
        "--op-determinism", "on" if cell.op_determinism else "off",
        "--intra-op-threads", str(cell.intra_op_threads),
        "--inter-op-threads", str(cell.inter_op_threads),
        "--cell-json", json.dumps(cell.params(), sort_keys=True),
        "--image-json", json.dumps(prepared.description, sort_keys=True),
    ]  # fmt: skip
    return [*args, "--environment-key", cell_key(prepared.key, cell), *(["--force"] if force else [])]


def _fill(
    out: Path, cell: Cell, repeats: list[Repeat], status: str, message: str, detail: str, keep: Callable[[Repeat], bool]
) -> None:
    """Status records for the repeats that have no record worth keeping; measured ones are never replaced."""
    for repeat in repeats:
        if keep(repeat):
            continue
        _records.write_json(
            repeat.path(out),
            _records.status_record(
                scenario=repeat.name,
                variant=repeat.variant,
                seed=repeat.seed,
                repeat=repeat.index,
                status=status,
                message=message,
                stderr=detail,
                cell=cell.params(),
            ),
        )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return _records.read_record(path)
    except ValueError:
        return None


def run_cell(backend: Backend, matrix: Matrix, cell: Cell, options: RunOptions) -> CellOutcome:
    out = options.results / cell.id
    repeats = expected_repeats(matrix)

    def measured(repeat: Repeat) -> bool:
        record = _read(repeat.path(out))
        return record is not None and record["status"] == "ok"

    try:
        reason = backend.skip_reason(cell)
        if reason is not None:
            _fill(out, cell, repeats, "skipped", reason, "", keep=measured)
            return CellOutcome(cell, "skipped", counts=_count(out, repeats), message=reason)
        todo = missing(out, repeats, cell_key(backend.environment_key(cell), cell), options.force)
        if not todo:
            return CellOutcome(cell, "up to date", counts={"reused": len(repeats)})
        say(f"[start] {cell.id}: {len(todo)} of {len(repeats)} repeats to run ({backend.name})")
        # Filesystem clocks are coarser than time.time(); a second of slack cannot reach an earlier attempt.
        attempt_started = time.time() - 1.0
        prepared = backend.prepare(cell, options.verbose)
        timeout = matrix.timeout * len(todo) + 120.0
        result = backend.run(cell, prepared, harness_args(matrix, cell, prepared, options.force), out, timeout)
        if cleanup.stopping.is_set():
            return CellOutcome(cell, "interrupted", counts=_count(out, repeats))
        for line in result.stderr.splitlines():
            if line.startswith("error:"):
                say(f"error: {cell.id}: {line.removeprefix('error:').strip()}")
        if options.verbose and result.stdout:
            say("\n".join(f"{cell.id} | {line}" for line in result.stdout.splitlines()))

        def measured_or_fresh(repeat: Repeat) -> bool:
            # Fresh: an error record the harness wrote in this attempt explains itself better than we can.
            path = repeat.path(out)
            record = _read(path)
            return record is not None and (record["status"] == "ok" or path.stat().st_mtime >= attempt_started)

        _fill(out, cell, todo, "error", "the harness left no record for this repeat", result.stderr, measured_or_fresh)
        counts = _count(out, repeats)
        started = STARTED.search(result.stdout)
        state = "error" if counts.get("error") else "ran"
        return CellOutcome(cell, state, int(started.group(1)) if started else 0, counts)
    except CellError as exc:
        if cleanup.stopping.is_set():
            return CellOutcome(cell, "interrupted", counts=_count(out, repeats))
        say(f"error: {exc}")
        _fill(out, cell, repeats, "error", exc.message, exc.detail, keep=measured)
        return CellOutcome(cell, "error", message=exc.message, counts=_count(out, repeats))


def _count(out: Path, repeats: list[Repeat]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for repeat in repeats:
        record = _read(repeat.path(out))
        status = record["status"] if record else "missing"
        counts[status] = counts.get(status, 0) + 1
    return counts


def run_matrix(backend: Backend, matrix: Matrix, cells: list[Cell], options: RunOptions) -> list[CellOutcome]:
    """Run the cells, `options.jobs` at a time; prints a line per cell as it starts and ends."""
    options.results.mkdir(parents=True, exist_ok=True)
    outcomes: list[CellOutcome] = []
    clock = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="cell")
    try:
        futures = {pool.submit(_timed, backend, matrix, cell, options): cell for cell in cells}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            left = len(cells) - len(outcomes)
            detail = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
            note = f" — {outcome.message}" if outcome.message else ""
            say(
                f"[{outcome.state}] {outcome.cell.id} in {outcome.seconds:.1f} s"
                f" ({detail or 'no records'}){note}; {left} cells left, {time.perf_counter() - clock:.0f} s elapsed"
            )
    except KeyboardInterrupt:
        say("interrupted: removing containers and stopping scenario processes")
        pool.shutdown(wait=False, cancel_futures=True)
        cleanup.stop_everything()
        raise
    finally:
        pool.shutdown(wait=True)
    order = {cell: i for i, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda o: order[o.cell])


def _timed(backend: Backend, matrix: Matrix, cell: Cell, options: RunOptions) -> CellOutcome:
    clock = time.perf_counter()
    try:
        outcome = run_cell(backend, matrix, cell, options)
    except Exception as exc:
        say(f"error: {cell.id}: unexpected {type(exc).__name__}: {exc}")
        outcome = CellOutcome(cell, "error", message=f"{type(exc).__name__}: {exc}")
    outcome.seconds = time.perf_counter() - clock
    return outcome


def build_all(backend: Backend, cells: list[Cell], verbose: bool) -> list[tuple[Cell, str]]:
    """Prepare each distinct environment once; returns (cell, error message) for the failures."""
    failures = []
    seen: set[tuple[str, str, str]] = set()
    for cell in cells:
        if cell.environment in seen:
            continue
        seen.add(cell.environment)
        try:
            prepared = backend.prepare(cell, verbose)
            say(f"[built] {cell.id}: {prepared.description}")
        except CellError as exc:
            say(f"error: {exc}")
            if exc.detail and not verbose:
                print(exc.detail, file=sys.stderr)
            failures.append((cell, exc.message))
    return failures
