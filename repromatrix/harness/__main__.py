"""The harness: `python -m repromatrix.harness --out DIR --attempt ID`, or by hand `... NAME... --repeat R --out DIR`.

Every repeat runs in its own process identity (run-to-run reproducibility only means something
across processes) and leaves exactly one record, ok or error, so one failing repeat never stops
the others. Standard library only.

The runner writes the attempt's plan (`exchange.Plan`: the cell, its knobs, the environment, the
host, the isolation and the repeats) and reads back the summary, both in the cell folder's attempt
folder: the two talk through files, never through this stdout, which is for people. Run by hand,
the flags build the same plan.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import axes, exchange, fileio, hostprobe, hosts, lease, records
from .catalog import discover, plan, reuse_key
from .forkserver import ForkedRepeats, die_with_parent, fork_order
from .launch import FreshProcesses, Launcher, Outcome, Worker, probe_isa
from .layout import CellLayout
from .records import Isolation, Status


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return number


def _parser_of(axis: axes.Axis) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return axis.from_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = axis.name  # argparse names the type in its message
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m repromatrix.harness",
        description="Run reproducibility scenarios, each repeat in its own process identity.",
    )
    parser.add_argument("--out", type=Path, help="folder the records go to (a cell's folder)")
    parser.add_argument("--attempt", help="the runner's attempt: its plan file in --out is the whole input")
    by_hand = parser.add_argument_group("run by hand (without --attempt): these flags build the plan")
    by_hand.add_argument("names", nargs="*", metavar="NAME", help="scenarios to run (default: all)")
    by_hand.add_argument("--variant", help="default: every variant a scenario has")
    by_hand.add_argument("--repeat", type=int, default=records.DEFAULT_REPEATS,
                         help=f"repeats per variant (default: {records.DEFAULT_REPEATS})")  # fmt: skip
    by_hand.add_argument("--seed", type=int, default=records.DEFAULT_SEED,
                         help=f"seed of the seeded variants (default: {records.DEFAULT_SEED})")  # fmt: skip
    by_hand.add_argument("--timeout", type=float, default=records.DEFAULT_TIMEOUT_S,
                         help=f"seconds one repeat may take (default: {records.DEFAULT_TIMEOUT_S:g})")  # fmt: skip
    for axis in axes.AT_RUN_TIME:  # not given: TensorFlow's own default
        metavar = "on|off" if axis.kind is bool else "N" if axis.kind is int else axis.name.upper()
        choices = f"; one of {', '.join(axis.values)}" if axis.values and axis.kind is not bool else ""
        by_hand.add_argument(axis.flag, type=_parser_of(axis), metavar=metavar, help=f"{axis.help}{choices}")
    by_hand.add_argument("--record-bytes", type=_non_negative, default=records.DEFAULT_RECORD_BYTES,
                         help="array bytes a record keeps whole; past it, and for per-layer and per-epoch arrays, "
                         f"a fixed sample (default: {records.DEFAULT_RECORD_BYTES})")  # fmt: skip
    by_hand.add_argument("--isolation", choices=records.ISOLATIONS, default=Isolation.PROCESS,
                         help="process: a new interpreter per repeat; fork: a child of a parent with TF")  # fmt: skip
    by_hand.add_argument("--environment-key", help="with it, repeats whose records match are reused")
    by_hand.add_argument("--force", action="store_true", help="rerun repeats whose records could be reused")
    by_hand.add_argument("-v", "--verbose", action="store_true", help="show each scenario process's own output")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if not args.list and args.out is None:
        parser.error("--out DIR is required")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def plan_by_hand(args: argparse.Namespace) -> exchange.Plan:
    """The plan the flags describe: every repeat of the named scenarios, on this machine."""
    specs = []
    for planned in plan(discover(), args.names, args.repeat, args.seed, args.variant):
        key = None
        if planned.scenario is not None and args.environment_key:
            key = reuse_key(args.environment_key, planned.scenario, planned.variant, planned.seed, args.isolation,
                            args.record_bytes)  # fmt: skip
        specs.append(planned.spec(key, args.isolation, args.record_bytes))
    knobs = axes.Knobs(**{axis.name: getattr(args, axis.name) for axis in axes.AT_RUN_TIME})
    return exchange.Plan(tuple(specs), knobs=knobs, host=hosts.fingerprint(), isolation=Isolation(args.isolation),
                         timeout=args.timeout, verbose=args.verbose)  # fmt: skip


def _measured(path: Path) -> bool:
    record = records.read_if_valid(path)
    return record is not None and record.is_ok


def execute(
    work: exchange.Plan, layout: CellLayout, attempt: str | None, launcher: Launcher, watch: lease.Watch,
    force: bool = False,
) -> exchange.Summary:  # fmt: skip
    """Each repeat of the plan through the launcher, one record each; the summary after every repeat.
    Once the run that started it is gone (`watch`), it writes nothing more."""
    summary_path = layout.summary_file(attempt) if attempt else None
    summary = exchange.Summary(attempt=attempt or "", planned=len(work.repeats))

    def report() -> None:
        if not watch.lost():  # writing would make the removed attempt folder again
            summary.write(summary_path)

    report()
    for planned in work.repeats:
        gone = watch.lost()
        if gone:
            print(f"the run that started this harness is gone ({gone}); stopping (the next run measures the rest)",
                  file=sys.stderr, flush=True)  # fmt: skip
            break
        path = layout.record(
            planned.scenario, planned.variant, planned.repeat, planned.seed if planned.spread else None
        )
        # A runner's plan lists only what must run; planning alone, the harness skips what it can reuse.
        if not attempt and not force and records.is_reusable(path, planned.reuse_key):
            summary.reused += 1
            continue
        spec = replace(planned, cell=work.cell, isolation=work.isolation, record=str(path), knobs=work.knobs,
                       image=work.image, host=work.host, lease=watch.scenario_check())  # fmt: skip
        elapsed = 0.0
        if spec.problem:
            outcome = Outcome(Status.ERROR, spec.problem)
        elif spec.sibling and _measured(layout.record(spec.scenario, spec.sibling, 0)):
            outcome = Outcome(Status.SKIPPED, exchange.SIBLING_STANDS_IN.format(sibling=spec.sibling))
        else:
            summary.started += 1
            started = time.perf_counter()
            outcome = launcher.run(spec, work.timeout, work.verbose)
            elapsed = time.perf_counter() - started
        if outcome.status != Status.OK and watch.lost():  # the run's end, not the scenario's: no record of it
            continue
        full = fileio.no_room(layout.root) if outcome.status != Status.OK else ""
        if full:  # the folder's fault, not the scenario's: no record of it, and no point going on
            print(f"no room left in the results folder ({full}); stopping", file=sys.stderr, flush=True)
            raise SystemExit(exchange.RESULTS_FULL)
        if outcome.status == Status.OK:
            summary.ok += 1
            record = records.Record.read(path)
            print(f"{spec.label}: ok in {elapsed:.1f} s, in-process identical: {record.in_process_identical}")
        elif outcome.status == Status.SKIPPED:
            summary.skipped += 1
            print(f"{spec.label}: skipped: {outcome.message}", flush=True)
            records.Record.failed(outcome.status, outcome.message, stderr=outcome.stderr,
                                  **spec.record_fields()).write(path)  # fmt: skip
        else:
            summary.error += 1
            summary.errors.append({"repeat": spec.label, "message": outcome.message})
            print(f"error: {spec.label}: {outcome.message}", file=sys.stderr, flush=True)
            records.Record.failed(outcome.status, outcome.message, stderr=outcome.stderr,
                                  **spec.record_fields()).write(path)  # fmt: skip
        summary.done.append(spec.label)
        report()
    summary.finished = True
    report()
    return summary


def launcher_for(work: exchange.Plan, worker: Worker, scratch: Path) -> tuple[exchange.Plan, Launcher]:
    """The plan in the order its isolation runs it, and the launcher that runs it."""
    if work.isolation == Isolation.FORK:
        warm = sorted({spec.scenario for spec in work.repeats if not spec.problem})
        return replace(work, repeats=tuple(fork_order(list(work.repeats)))), ForkedRepeats(
            worker, work.knobs, warm, scratch
        )
    return work, FreshProcesses(worker)


def main(argv: list[str] | None = None, worker: Worker | None = None) -> int:
    """The harness. `worker` is the module scenario processes run (a test's stand-in, or the real one)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    worker = worker or Worker()
    if args.attempt and os.getpid() != 1:
        die_with_parent()  # started by a runner: a killed runner takes the harness with it
    if args.list:
        for info in discover().values():
            state = f"BROKEN: {info.problem}" if info.problem else ", ".join(info.variants)
            print(f"{info.name:20} {state:28} {info.summary}")
        return 0
    layout = CellLayout(args.out)
    attempt: str | None = args.attempt
    work = exchange.Plan.read(layout.plan_file(attempt)) if attempt else plan_by_hand(args)
    if any(not spec.problem for spec in work.repeats):
        # Before the cores are restricted: what a plain run gets is measured on every core the host offers.
        answer = hostprobe.measure(worker.command("--probe-host"), worker.env(), work.host, work.cell, layout.root,
                                   shared=worker.module == Worker().module)  # fmt: skip
        work = replace(work, host=hostprobe.with_computes(work.host, answer))
    problem = work.knobs.restrict_harness()  # the cores every scenario process inherits
    if problem:
        work = replace(work, repeats=tuple(replace(spec, problem=problem) for spec in work.repeats))
    elif work.knobs.cpu_isa not in (None, axes.NO_ISA_CAP) and any(not spec.problem for spec in work.repeats):
        isa = probe_isa(worker, work.knobs, min(work.timeout, 300.0))
        work = replace(work, repeats=tuple(replace(spec, onednn_isa=isa) for spec in work.repeats))
    scratch = layout.attempt_dir(args.attempt or f"standalone-{os.getpid()}") / "fork"
    work, launcher = launcher_for(work, worker, scratch)
    # The runner's lease of this attempt (none by hand): a watchdog ends this harness and what it started
    # as soon as the run is gone.
    watch = lease.Watch(layout.lease_file(attempt) if attempt else None)
    watch.stop_when_lost()
    try:
        summary = execute(work, layout, attempt, launcher, watch, force=args.force)
    except OSError as exc:
        if exc.errno not in fileio.NO_ROOM:
            raise
        print(f"no room left in the results folder ({exc.strerror}); stopping", file=sys.stderr, flush=True)
        return exchange.RESULTS_FULL
    finally:
        launcher.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.attempt:
            shutil.rmtree(scratch.parent, ignore_errors=True)
            with contextlib.suppress(OSError):
                scratch.parent.parent.rmdir()  # .attempts, when nothing else is in it
    print(
        f"scenario processes started: {summary.started}; "
        f"{summary.ok} ok, {summary.error} errors, {summary.skipped} skipped, {summary.reused} reused",
        flush=True,
    )
    return 1 if summary.error else 0


if __name__ == "__main__":
    sys.exit(main())
