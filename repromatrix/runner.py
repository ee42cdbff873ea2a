"""Plan → build → run: which repeats are missing, make their environments, run them.

Resumable by construction: a repeat whose record exists, is `ok`, carries the
same reuse key (environment, knobs, scenario source, variant, seed) and whose
arrays match their digests is never run again, so a killed run started again
only fills the gaps.

The runner and the harness talk through files in the cell's folder: the
runner writes the plan of one attempt, the harness writes its summary.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from repromatrix import cleanup, progress, results
from repromatrix.backends import Backend, HarnessRun
from repromatrix.errors import CellError, CellSkipped, EngineLostError, FatalError, ResultsFullError
from repromatrix.harness import exchange, hosts, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.catalog import PlannedRepeat, Scenario, discover, plan, reuse_key
from repromatrix.harness.hosts import Host
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.harness.lease import Held
from repromatrix.harness.records import Status
from repromatrix.matrix import Matrix

# Grace on top of the per-repeat timeouts, for the harness (or its container) to start and stop.
HARNESS_GRACE_S = 120.0
# On a stop, how long the cells' threads get to end once their containers and processes are gone.
STOP_GRACE_S = 3.0


class CellState(StrEnum):
    """How a cell ended in this run."""

    UP_TO_DATE = "up to date"  # every repeat reused
    RAN = "ran"
    SKIPPED = "skipped"  # it cannot run here (the records say why)
    ERROR = "error"
    INTERRUPTED = "interrupted"


@dataclass
class CellOutcome:
    cell: Cell
    state: CellState
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
    wait: bool = False  # for the results folder's lock
    monitor: progress.Monitor | None = None  # per-repeat progress of the running cells
    host: Host | None = None  # this machine (harness/hosts.py); read when None
    trace: bool = False  # `repromatrix explain`: every repeat traced (harness/trace.py)
    variant: str | None = None  # only this variant of each scenario (explain)


def planned_repeats(matrix: Matrix, found: dict[str, Scenario]) -> list[PlannedRepeat]:
    return plan(found, matrix.scenarios, matrix.repeats, matrix.seed, spread_seeds=matrix.spread_seeds,
                spread_siblings=matrix.spread_siblings)  # fmt: skip


def cell_key(environment_key: str, cell: Cell, host: Host) -> str:
    """The environment, the cell's knobs and the machine: what a record's bits depend on besides the scenario."""
    return f"{environment_key}|{cell.id}|host:{host.id}"


def repeat_key(environment_key: str, repeat: PlannedRepeat, matrix: Matrix) -> str | None:
    if repeat.scenario is None:
        return None
    return reuse_key(environment_key, repeat.scenario, repeat.variant, repeat.seed, matrix.isolation,
                     matrix.record_bytes)  # fmt: skip


def missing(
    layout: CellLayout, repeats: list[PlannedRepeat], environment_key: str, matrix: Matrix, force: bool
) -> list[PlannedRepeat]:
    if force:
        return list(repeats)
    verifications = records.Verifications.of(layout)
    todo = [
        r
        for r in repeats
        if not records.is_reusable(
            layout.record(r.name, r.variant, r.index, r.spread_seed),
            repeat_key(environment_key, r, matrix),
            verifications,
        )
    ]
    verifications.save()
    return todo


def _fill(layout: CellLayout, cell: Cell, repeats: list[PlannedRepeat], status: Status, message: str,
          detail: str, keep: set[str], host: Host) -> None:  # fmt: skip
    """Status records for the repeats that have no record worth keeping; measured ones are never replaced."""
    for repeat in repeats:
        path = layout.record(repeat.name, repeat.variant, repeat.index, repeat.spread_seed)
        if repeat.label in keep:
            continue
        existing = records.read_if_valid(path)
        if existing is not None and existing.is_ok:
            continue
        spec = replace(repeat.spec(reuse_key=None), cell=cell.params(), host=host)
        records.Record.failed(status, message, stderr=detail, **spec.record_fields()).write_if_changed(path)


def ended(result: HarnessRun) -> str:
    """How a harness that did not finish its plan ended, for the records of what it left undone.
    0 and 1 are its own (1: some repeats failed, which their records say); anything else is its end."""
    if result.oom_killed:
        return "killed: out of memory (raise [docker].memory)"
    if result.returncode < 0 or result.returncode > 128:
        # A local process killed by a signal ends with -N, a container's main process with 128+N: one end.
        signum = -result.returncode if result.returncode < 0 else result.returncode - 128
        with contextlib.suppress(ValueError):
            return f"it was killed by {signal.Signals(signum).name}"
    return f"it ended early, exit code {result.returncode}"


def _count(layout: CellLayout, repeats: list[PlannedRepeat]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for repeat in repeats:
        record = records.read_if_valid(layout.record(repeat.name, repeat.variant, repeat.index, repeat.spread_seed))
        status = record.status if record else "missing"
        if record is not None and record.spread and record.message.startswith(exchange.SIBLING_STANDS_IN[:12]):
            status = "spread from the unseeded sibling"  # not a skip of anything measured
        counts[status] = counts.get(status, 0) + 1
    return counts


def run_cell(
    backend: Backend, matrix: Matrix, cell: Cell, repeats: list[PlannedRepeat], options: RunOptions
) -> CellOutcome:
    layout = Layout(options.results).cell(cell.id)
    host = options.host or hosts.fingerprint()
    try:
        reason = backend.skip_reason(cell)
        if reason is not None:
            _fill(layout, cell, repeats, Status.SKIPPED, reason, "", keep=set(), host=host)
            return CellOutcome(cell, CellState.SKIPPED, counts=_count(layout, repeats), message=reason)
        expected = cell_key(backend.environment_key(cell), cell, host)
        todo = missing(layout, repeats, expected, matrix, options.force)
        if not todo:
            return CellOutcome(cell, CellState.UP_TO_DATE, counts={"reused": len(repeats)})
        if cleanup.stopping.is_set():
            return CellOutcome(cell, CellState.INTERRUPTED, counts=_count(layout, repeats))
        prepared = backend.prepare(cell, options.verbose)
        # The key of the environment as built (an image id), which is what the records carry; checked
        # again only when building changed it (an image that did not exist yet).
        key = cell_key(prepared.key, cell, host)
        if key != expected:
            todo = missing(layout, repeats, key, matrix, options.force)
        if not todo:
            return CellOutcome(cell, CellState.UP_TO_DATE, counts={"reused": len(repeats)})
        if cleanup.stopping.is_set():
            return CellOutcome(cell, CellState.INTERRUPTED, counts=_count(layout, repeats))
        progress.say(f"[start] {cell.id}: {len(todo)} of {len(repeats)} repeats to run ({backend.name})")
        attempt = uuid.uuid4().hex[:12]
        specs = [r.spec(repeat_key(key, r, matrix), matrix.isolation, matrix.record_bytes) for r in todo]
        exchange.Plan(
            repeats=tuple(replace(spec, trace=options.trace) for spec in specs),
            cell=cell.params(), knobs=cell.knobs, image=prepared.description, host=host,
            isolation=matrix.isolation, timeout=matrix.timeout, verbose=options.verbose,
        ).write(layout.plan_file(attempt))  # fmt: skip
        if options.monitor is not None:
            options.monitor.track(cell.id, layout.summary_file(attempt), len(todo))
        try:
            timeout = matrix.timeout * len(todo) + HARNESS_GRACE_S
            with Held(layout.lease_file(attempt)):  # a harness that outlives this run stops by itself
                result = backend.run(cell, prepared, attempt, layout.root, timeout)
            summary = exchange.Summary.read(layout.summary_file(attempt)) or exchange.Summary(attempt=attempt)
        finally:
            if options.monitor is not None:
                options.monitor.done(cell.id)
            shutil.rmtree(layout.attempt_dir(attempt), ignore_errors=True)
            with contextlib.suppress(OSError):
                layout.attempt_dir(attempt).parent.rmdir()  # .attempts itself, once no attempt is in it
        if cleanup.stopping.is_set():
            return CellOutcome(cell, CellState.INTERRUPTED, started=summary.started, counts=_count(layout, repeats))
        for error in summary.errors:
            progress.say(f"error: {cell.id}: {error['repeat']}: {error['message']}")
        if not summary.finished:  # a full results folder stops the whole run, with nothing made up for it
            results.require_room(options.results)
        lost = "the harness left no record for this repeat" + ("" if summary.finished else f" ({ended(result)})")
        _fill(layout, cell, todo, Status.ERROR, lost, result.stderr, keep=set(summary.done), host=host)
        counts = _count(layout, repeats)
        state = CellState.ERROR if counts.get(Status.ERROR) or counts.get("missing") else CellState.RAN
        return CellOutcome(cell, state, summary.started, counts)
    except cleanup.Stopping:
        return CellOutcome(cell, CellState.INTERRUPTED, counts=_count(layout, repeats))
    except CellSkipped as exc:  # found while making its lock: the resolver's reason
        _fill(layout, cell, repeats, Status.SKIPPED, exc.reason, exc.detail, keep=set(), host=host)
        return CellOutcome(cell, CellState.SKIPPED, counts=_count(layout, repeats), message=exc.reason)
    except CellError as exc:
        if cleanup.stopping.is_set():
            return CellOutcome(cell, CellState.INTERRUPTED, counts=_count(layout, repeats))
        progress.say(f"error: {exc.message}")
        _fill(layout, cell, repeats, Status.ERROR, exc.reason, exc.detail, keep=set(), host=host)
        return CellOutcome(cell, CellState.ERROR, message=exc.reason, counts=_count(layout, repeats))


def _timed(
    backend: Backend, matrix: Matrix, cell: Cell, repeats: list[PlannedRepeat], options: RunOptions
) -> CellOutcome:
    clock = time.perf_counter()
    try:
        outcome = run_cell(backend, matrix, cell, repeats, options)
    except FatalError:
        raise  # the engine went away, say: the whole run ends with its code, not this cell alone
    except Exception as exc:
        if cleanup.stopping.is_set():  # torn down under it: what failed says nothing about the cell
            return CellOutcome(cell, CellState.INTERRUPTED)
        if isinstance(exc, OSError):
            results.check_room(options.results, exc)  # a full results folder ends the run, not this cell
        lost = backend.lost(exc, cell)
        if lost is not None:
            raise lost from exc
        progress.say(f"error: {cell.id}: unexpected {type(exc).__name__}: {exc}")
        progress.warn("".join(traceback.format_exception(exc)).rstrip())
        outcome = CellOutcome(cell, CellState.ERROR, message=f"{type(exc).__name__}: {exc}")
    outcome.seconds = time.perf_counter() - clock
    return outcome


def _describe(outcome: CellOutcome) -> str:
    detail = ", ".join(f"{n} {status}" for status, n in sorted(outcome.counts.items()))
    started = f"{outcome.started} processes started; " if outcome.started else ""
    return started + (detail or "no records counted")


def run_matrix(
    backend: Backend,
    matrix: Matrix,
    cells: list[Cell],
    options: RunOptions,
    found: dict[str, Scenario] | None = None,
) -> list[CellOutcome]:
    """Run the cells, `options.jobs` at a time, under the results folder's lock."""
    # Discovered once, here: parsing sources from several threads at once once crashed CPython's AST.
    found = found if found is not None else discover()
    repeats = planned_repeats(matrix, found)
    if options.variant is not None:
        repeats = [r for r in repeats if r.variant == options.variant]
    layout = Layout(options.results)
    if options.host is None:
        options = replace(options, host=hosts.fingerprint())
    assert options.host is not None
    with results.exclusive(layout, wait=options.wait):
        results.check_backend(layout, backend.name)
        results.check_host(layout, options.host)
        variants = sorted({(r.name, r.variant) for r in repeats if not r.spread})
        spread = frozenset((r.name, r.variant, r.seed) for r in repeats if r.spread and r.seed is not None)
        results.write_manifest(layout, backend.name, [c.id for c in cells], variants, matrix.repeats, options.host,
                               spread)  # fmt: skip
        backend.sweep()
        results.remove_litter(layout)
        try:
            if options.monitor is not None:
                return _run_cells(backend, matrix, cells, repeats, options)
            with progress.Monitor() as monitor:
                return _run_cells(backend, matrix, cells, repeats, replace(options, monitor=monitor))
        except (EngineLostError, ResultsFullError) as exc:
            # The run cannot go on: one line with what was measured, which a rerun keeps.
            results.remove_litter(layout)
            counts: dict[str, int] = {}
            for cell in cells:
                for status, n in _count(layout.cell(cell.id), repeats).items():
                    counts[status] = counts.get(status, 0) + n
            measured = f"{counts.get(Status.OK, 0)} of {len(cells) * len(repeats)} repeats measured"
            how = ("start the engine again" if isinstance(exc, EngineLostError)
                   else "free space there (or pass another --results folder)")  # fmt: skip
            raise type(exc)(f"{exc.message}: {measured}; {how} and rerun to resume") from None
        except BaseException:
            # Interrupted, or another fatal error: this thread removes what the cells' threads had in flight
            # (their attempt folders), since the process may exit before a worker stuck in a build gets to it.
            results.remove_litter(layout)
            raise


def _run_cells(
    backend: Backend, matrix: Matrix, cells: list[Cell], repeats: list[PlannedRepeat], options: RunOptions
) -> list[CellOutcome]:
    outcomes: list[CellOutcome] = []
    clock = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="cell")
    try:
        futures = {pool.submit(_timed, backend, matrix, cell, repeats, options): cell for cell in cells}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            left = len(cells) - len(outcomes)
            note = f" — {outcome.message}" if outcome.message else ""
            progress.say(
                f"[{outcome.state}] {outcome.cell.id} in {outcome.seconds:.1f} s ({_describe(outcome)}){note}; "
                f"{left} cells left, {time.perf_counter() - clock:.0f} s elapsed"
            )
    except BaseException:
        # Ctrl-C, SIGTERM, or a fatal error in one cell: start nothing new, undo what runs, and give the
        # cells' threads a moment to end as their containers and processes go (one in an image build
        # does not end: it is not waited for).
        cleanup.stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        cleanup.stop_everything()
        wait(futures, timeout=STOP_GRACE_S)
        raise
    pool.shutdown(wait=True)
    order = {cell: i for i, cell in enumerate(cells)}
    return sorted(outcomes, key=lambda o: order[o.cell])


def build_all(backend: Backend, cells: list[Cell], verbose: bool) -> list[tuple[Cell, str]]:
    """Prepare each distinct environment once; returns (cell, error message) for the failures."""
    failures = []
    seen: set[tuple[str, ...]] = set()
    for cell in cells:
        if cell.environment in seen:
            continue
        seen.add(cell.environment)
        # A cell that cannot run here is not built either (a CUDA virtualenv is gigabytes).
        reason = backend.skip_reason(cell)
        if reason is not None:
            progress.say(f"[skipped] {cell.id}: {reason}")
            continue
        try:
            prepared = backend.prepare(cell, verbose)
            progress.say(f"[built] {cell.id}: {prepared.description}")
        except CellSkipped as exc:
            progress.say(f"[skipped] {cell.id}: {exc.reason}")
        except CellError as exc:
            progress.say(f"error: {exc.message}")
            if exc.detail and not verbose:
                progress.warn(exc.detail)
            failures.append((cell, exc.reason))
    return failures
