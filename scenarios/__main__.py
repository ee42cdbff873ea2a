"""The harness: `python -m scenarios NAME... --repeat R --out DIR`.

Every repeat runs in a fresh process (run-to-run reproducibility only means
something across processes) and leaves exactly one record, ok or error, so
one failing repeat never stops the others. Standard library only.

The runner hands it a plan file and reads back a summary file (both in
the cell folder's attempt folder, `--attempt`): the two talk through files, never through this stdout, which
is for people.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import SCENARIOS_DIR, axes, discover, exchange, hosts, lease, plan, process_env, records, reuse_key
from .layout import CellLayout
from .worker import die_with_parent

PACKAGE = __package__ or "scenarios"
# A scenario process, fork server or ISA probe: -P, so nothing is imported from the working directory.
WORKER = [sys.executable, "-P", "-m", f"{PACKAGE}.worker"]


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
        prog="python -m scenarios", description="Run reproducibility scenarios, each repeat in a fresh process."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="scenarios to run (default: all)")
    parser.add_argument("--variant", help="default: every variant a scenario has")
    parser.add_argument("--repeat", type=int, default=records.DEFAULT_REPEATS,
                        help=f"fresh processes per variant (default: {records.DEFAULT_REPEATS})")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder the records go to")
    parser.add_argument("--seed", type=int, default=records.DEFAULT_SEED,
                        help=f"seed of the seeded variants (default: {records.DEFAULT_SEED})")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=records.DEFAULT_TIMEOUT_S,
                        help=f"seconds one repeat may take (default: {records.DEFAULT_TIMEOUT_S:g})")  # fmt: skip
    for axis in axes.AT_RUN_TIME:  # not given: TensorFlow's own default
        metavar = "on|off" if axis.kind is bool else "N" if axis.kind is int else axis.name.upper()
        choices = f"; one of {', '.join(axis.values)}" if axis.values and axis.kind is not bool else ""
        parser.add_argument(axis.flag, type=_parser_of(axis), metavar=metavar, help=f"{axis.help}{choices}")
    parser.add_argument("--record-bytes", type=_non_negative, default=records.DEFAULT_RECORD_BYTES,
                        help="array bytes a record keeps whole; past it, and for per-layer and per-epoch arrays, "
                        f"a fixed sample (default: {records.DEFAULT_RECORD_BYTES})")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--force", action="store_true", help="rerun repeats whose records could be reused")
    parser.add_argument("-v", "--verbose", action="store_true", help="show each scenario process's own output")
    parser.add_argument("--isolation", choices=records.ISOLATIONS, default="process",  # standalone: plain
                        help="process: a new interpreter per repeat; fork: a child of a parent with TF")  # fmt: skip
    # Set by the runner: what the records say about where they ran, and what makes them reusable.
    parser.add_argument("--cell-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--image-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--host-json", default="", help=argparse.SUPPRESS)  # else this machine, read here
    parser.add_argument("--environment-key", help=argparse.SUPPRESS)
    parser.add_argument("--attempt", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.list and args.out is None:
        parser.error("--out DIR is required")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _oom_kills() -> int | None:
    """The kernel's count of out-of-memory kills in this cgroup (v1 or v2), if it is readable."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"),
                      ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):  # fmt: skip
        try:
            for line in Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


@dataclass
class Outcome:
    status: str  # ok, error, or skipped (TensorFlow refused to run it here, and said why)
    message: str = ""
    stderr: str = ""


def worker_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(SCENARIOS_DIR.parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **process_env(pythonpath)}


def restrict_cores(count: int) -> str:
    """Run this harness, and so every scenario process it starts, on `count` cores; '' or why not."""
    allowed = sorted(os.sched_getaffinity(0))
    if count > len(allowed):
        return f"needs {count} cores, this process may use {len(allowed)}"
    os.sched_setaffinity(0, allowed[:count])
    return ""


def probe_isa(knobs: dict[str, Any], timeout: float) -> str | None:
    """What oneDNN says it dispatches to under these knobs (its verbose output names the ISA).

    A process of its own: verbose mode prints a line per kernel, which the measured
    processes are spared.
    """
    command = [*WORKER, "--probe-isa", json.dumps(knobs)]
    try:
        done = subprocess.run(command, env=worker_env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in done.stdout.splitlines():
        if ",info,cpu,isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None


def run_process(spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
    """One repeat in one fresh `python -m scenarios.worker` process."""
    env = worker_env()
    command = [*WORKER, json.dumps(spec.to_json())]
    oom_before = _oom_kills()
    # In the harness's own process group (the one the runner stops), so nothing outlives the harness.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        return Outcome("error", f"timed out after {timeout:g} s (raise the timeout if it needs longer)", stderr)
    finally:
        if process.poll() is None:  # interrupted: take the scenario process with us
            process.kill()
    if verbose:
        for line in (stdout + stderr).splitlines():
            print(f"  | {line}", flush=True)
    return judge_exit(process.returncode, stderr, Path(spec.record), oom_before)


class ForkServer:
    """A parent that imported TF once (with the cell's knobs) and forks one child per request.

    Each parent is its own process identity: its own hash seed, memory layout and module-level
    state. `fork_runner` gives repeat r of every variant its own parent r, so the repeats of one
    variant never share what a parent decided at start-up.
    """

    def __init__(self, knobs: dict[str, Any], warm: list[str], scratch: Path) -> None:
        self.knobs, self.warm, self.scratch = knobs, warm, scratch
        self.process: subprocess.Popen[str] | None = None
        self.oom_at_start: int | None = None  # the kernel's count of OOM kills when the parent started
        # A file, not a pipe: a parent that talks a lot must never block on a full pipe.
        self.log = scratch / f"parent-{uuid.uuid4().hex[:8]}.err"

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.oom_at_start = _oom_kills()
            command = [*WORKER, "--serve", json.dumps(self.knobs), json.dumps(self.warm)]
            with self.log.open("w") as log:
                self.process = subprocess.Popen(
                    command, env=worker_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    text=True, bufsize=1,  # in the harness's process group: stopped with it
                )  # fmt: skip
        return self.process

    def _reply(self, timeout: float | None) -> dict[str, Any] | None:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {}

    def _killed_for_memory(self) -> bool:
        after = _oom_kills()
        return None not in (self.oom_at_start, after) and after > self.oom_at_start

    def _could_not_start(self, spec: exchange.RepeatSpec) -> Outcome:
        """The error of a repeat whose parent died before forking it, with what the parent said."""
        try:
            detail = self.log.read_text(errors="replace")[-records.STDERR_TAIL_CHARS :]
        except OSError:
            detail = ""
        why = "killed: out of memory (raise [docker].memory)" if self._killed_for_memory() else _last_line(detail)
        return Outcome("error", f"the fork parent of repeat {spec.repeat} could not start: {why}", detail)

    def run(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
        server = self._start()
        label = f"{spec.scenario}-{spec.variant}-{spec.repeat}"
        out, err = self.scratch / f"{label}.out", self.scratch / f"{label}.err"
        assert server.stdin is not None
        try:
            server.stdin.write(json.dumps({"spec": spec.to_json(), "stdout": str(out), "stderr": str(err)}) + "\n")
            server.stdin.flush()
        except BrokenPipeError:
            return self._could_not_start(spec)
        oom_before = _oom_kills()
        # The parent imports TF before its first reply: that wait is the parent's, not the repeat's.
        started = self._reply(None)
        if not started:
            server.wait()
            return self._could_not_start(spec)
        child = started["started"]
        finished = self._reply(timeout)
        timed_out = finished is None
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            finished = self._reply(30.0)
        stderr = err.read_text(errors="replace") if err.is_file() else ""
        if verbose:
            stdout = out.read_text(errors="replace") if out.is_file() else ""
            for line in (stdout + stderr).splitlines():
                print(f"  | {line}", flush=True)
        for path in (out, err):
            path.unlink(missing_ok=True)
        if timed_out:
            return Outcome("error", f"timed out after {timeout:g} s (raise the timeout if it needs longer)", stderr)
        if not finished:
            memory = ": killed: out of memory (raise [docker].memory)" if self._killed_for_memory() else ""
            return Outcome("error", f"the fork parent died while the repeat ran{memory}", stderr)
        return judge_exit(int(finished["status"]), stderr, Path(spec.record), oom_before)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Closing its stdin ends its loop once the child in flight is done; a kill ends it now.
            self.process.kill()
            self.process.wait()
        self.process = None
        self.log.unlink(missing_ok=True)


def fork_order(specs: list[exchange.RepeatSpec]) -> list[exchange.RepeatSpec]:
    """Repeat 0 of every variant, then repeat 1 of every variant...: one parent alive at a time."""
    return sorted(specs, key=lambda spec: spec.repeat)  # stable: the plan's order within one repeat index


def fork_runner(knobs: dict[str, Any], warm: list[str], scratch: Path) -> tuple[RunRepeat, Callable[[], None]]:
    """A RunRepeat that forks repeat r of every variant from parent r, and how to stop the live parent.

    Parents are started when their repeat index comes up and stopped when it is done (the specs
    come in `fork_order`), so a cell holds one TF runtime's memory at a time and pays one TF import
    per repeat index rather than one per repeat.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    live: dict[int, ForkServer] = {}

    def run(spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
        if spec.repeat not in live:
            stop()
            live[spec.repeat] = ForkServer(knobs, warm, scratch)
        return live[spec.repeat].run(spec, timeout, verbose)

    def stop() -> None:
        for server in live.values():
            server.stop()
        live.clear()

    return run, stop


# TensorFlow's own words when op determinism is on and a random op has no seed: a documented
# refusal (unseeded variants cannot run in such a cell), measured as such, not a failure of the run.
TF_REFUSES_UNSEEDED = "Random ops require a seed to be set when determinism is enabled"


def judge_exit(returncode: int, stderr: str, path: Path, oom_before: int | None = None) -> Outcome:
    if returncode > 0 and TF_REFUSES_UNSEEDED in stderr:
        return Outcome(
            "skipped", "TensorFlow refuses unseeded random ops when op determinism is on (it asks for a seed)", stderr
        )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        oom_after = _oom_kills()
        if returncode == -signal.SIGKILL and None not in (oom_before, oom_after) and oom_after > oom_before:
            return Outcome("error", "killed: out of memory (raise [docker].memory)", stderr)
        return Outcome("error", f"killed by {name}: {_last_line(stderr)}", stderr)
    if returncode != 0:
        return Outcome("error", f"exited with code {returncode}: {_last_line(stderr)}", stderr)
    try:
        records.Record.read(path)
    except records.RecordError as exc:
        return Outcome("error", f"wrote no valid record: {exc}", stderr)
    return Outcome("ok", "", stderr)


RunRepeat = Callable[[exchange.RepeatSpec, float, bool], Outcome]


def _watch(args: argparse.Namespace) -> lease.Watch:
    """The lease of the runner's attempt (none when run by hand): while it is lost, nothing is written."""
    return lease.Watch(CellLayout(args.out).lease_file(args.attempt) if args.attempt else None)


def execute(
    specs: list[exchange.RepeatSpec], context: dict[str, Any], args: argparse.Namespace, run_repeat: RunRepeat,
    watch: lease.Watch | None = None,
) -> exchange.Summary:  # fmt: skip
    layout = CellLayout(args.out)
    watch = watch or _watch(args)
    summary_path = layout.summary_file(args.attempt) if args.attempt else None
    summary = exchange.Summary(attempt=args.attempt or "", planned=len(specs))

    def report() -> None:
        if not watch.lost():  # writing would make the removed attempt folder again
            summary.write(summary_path)

    report()
    for planned in specs:
        gone = watch.lost()
        if gone:
            print(f"the run that started this harness is gone ({gone}); stopping (the next run measures the rest)",
                  file=sys.stderr, flush=True)  # fmt: skip
            break
        path = layout.record(planned.scenario, planned.variant, planned.repeat)
        # A runner's plan lists only what must run; planning alone, the harness skips what it can reuse.
        if not args.attempt and not args.force and records.is_reusable(path, planned.reuse_key):
            summary.reused += 1
            continue
        spec = replace(planned, cell=context["cell"], isolation=args.isolation, record=str(path),
                       knobs=context["knobs"], image=context["image"], host=context["host"],
                       lease=watch.scenario_check())  # fmt: skip
        if spec.problem:
            outcome = Outcome("error", spec.problem)
        else:
            summary.started += 1
            started = time.perf_counter()
            outcome = run_repeat(spec, args.timeout, args.verbose)
            elapsed = time.perf_counter() - started
        if outcome.status != "ok" and watch.lost():  # the run's end, not the scenario's: no record of it
            continue
        if outcome.status == "ok":
            summary.ok += 1
            record = records.Record.read(path)
            print(f"{spec.label}: ok in {elapsed:.1f} s, in-process identical: {record.in_process_identical}")
        elif outcome.status == "skipped":
            summary.skipped += 1
            print(f"{spec.label}: skipped: {outcome.message}", flush=True)
            records.Record.failed("skipped", outcome.message, stderr=outcome.stderr, **spec.record_fields()).write(path)
        else:
            summary.error += 1
            summary.errors.append({"repeat": spec.label, "message": outcome.message})
            print(f"error: {spec.label}: {outcome.message}", file=sys.stderr, flush=True)
            records.Record.failed("error", outcome.message, stderr=outcome.stderr, **spec.record_fields()).write(path)
        summary.done.append(spec.label)
        report()
    summary.finished = True
    report()
    return summary


def main(argv: list[str] | None = None, run_repeat: RunRepeat = run_process) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.attempt and argv is None and os.getpid() != 1:
        die_with_parent()  # started by a runner: a killed runner takes the harness with it
    found = discover()
    if args.list:
        for info in found.values():
            state = f"BROKEN: {info.problem}" if info.problem else ", ".join(info.variants)
            print(f"{info.name:20} {state:28} {info.summary}")
        return 0
    context = {
        "cell": json.loads(args.cell_json),
        "image": json.loads(args.image_json),
        "host": json.loads(args.host_json) if args.host_json else hosts.fingerprint(),
        "knobs": {axis.name: getattr(args, axis.name) for axis in axes.AT_RUN_TIME},
    }
    problem = restrict_cores(args.cpus) if args.cpus else ""
    if args.attempt:  # the runner's plan: exactly these repeats, with the runner's reuse keys
        specs = exchange.read_plan(CellLayout(args.out).plan_file(args.attempt))
    else:
        specs = []
        for planned in plan(found, args.names, args.repeat, args.seed, args.variant):
            key = None
            if planned.scenario is not None and args.environment_key:
                key = reuse_key(args.environment_key, planned.scenario, planned.variant, planned.seed, args.isolation,
                                args.record_bytes)  # fmt: skip
            specs.append(planned.spec(key, args.isolation, args.record_bytes))
    if problem:
        specs = [replace(spec, problem=problem) for spec in specs]
    elif args.cpu_isa not in (None, "native") and any(not spec.problem for spec in specs) and run_repeat is run_process:
        context["knobs"]["onednn_isa"] = probe_isa(context["knobs"], min(args.timeout, 300.0))
    scratch = CellLayout(args.out).attempt_dir(args.attempt or f"standalone-{os.getpid()}") / "fork"
    stop: Callable[[], None] = lambda: None  # noqa: E731
    if args.isolation == "fork" and run_repeat is run_process:
        warm = sorted({spec.scenario for spec in specs if not spec.problem})
        run_repeat, stop = fork_runner(context["knobs"], warm, scratch)
        specs = fork_order(specs)
    watch = _watch(args)
    if argv is None:  # a process of its own (not called in-process, as tests do): the watchdog may end it
        watch.stop_when_lost()
    try:
        summary = execute(specs, context, args, run_repeat, watch)
    finally:
        stop()
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
