"""Isolation.FORK: repeats forked from parents that imported TensorFlow once, one parent per repeat index.

Each parent is its own process identity: its own hash seed, memory layout and module-level state.
`ForkedRepeats` gives repeat r of every variant its own parent r, so the repeats of one variant never
share what a parent decided at start-up, while a cell pays one TF import per repeat index rather than
one per repeat. Both sides live here: the harness's client (`ForkServer`, `ForkedRepeats`) and the
parent's loop (`serve`, run by the worker module's `--serve`). Standard library only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import exchange, records
from .axes import Knobs
from .launch import OUT_OF_MEMORY, TIMED_OUT, Outcome, Worker, judge_exit, last_line, oom_kills, show
from .records import Isolation, Status

# What a parent imports and keeps (TF, NumPy, the import's seconds), and how it measures one repeat
# in a child with them: the worker's own, or a test's stand-in.
Start = Callable[[Knobs], tuple[Any, Any, float]]
Measure = Callable[[exchange.RepeatSpec, Any, Any, float, float], None]


class ForkServer:
    """A parent that imported TF once (with the cell's knobs) and forks one child per request."""

    def __init__(self, worker: Worker, knobs: Knobs, warm: list[str], scratch: Path) -> None:
        self.worker, self.knobs, self.warm, self.scratch = worker, knobs, warm, scratch
        self.process: subprocess.Popen[str] | None = None
        self.oom_at_start: int | None = None  # the kernel's count of OOM kills when the parent started
        # A file, not a pipe: a parent that talks a lot must never block on a full pipe.
        self.log = scratch / f"parent-{uuid.uuid4().hex[:8]}.err"

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.oom_at_start = oom_kills()
            command = self.worker.command("--serve", json.dumps(self.knobs.to_json()), json.dumps(self.warm))
            with self.log.open("w") as log:
                self.process = subprocess.Popen(
                    command, env=self.worker.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
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
        after = oom_kills()
        return self.oom_at_start is not None and after is not None and after > self.oom_at_start

    def _could_not_start(self, spec: exchange.RepeatSpec) -> Outcome:
        """The error of a repeat whose parent died before forking it, with what the parent said."""
        try:
            detail = self.log.read_text(errors="replace")[-records.STDERR_TAIL_CHARS :]
        except OSError:
            detail = ""
        why = OUT_OF_MEMORY if self._killed_for_memory() else last_line(detail)
        return Outcome(Status.ERROR, f"the fork parent of repeat {spec.repeat} could not start: {why}", detail)

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
        oom_before = oom_kills()
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
            show((out.read_text(errors="replace") if out.is_file() else "") + stderr)
        for path in (out, err):
            path.unlink(missing_ok=True)
        if timed_out:
            return Outcome(Status.ERROR, TIMED_OUT.format(timeout=timeout), stderr)
        if not finished:
            memory = f": {OUT_OF_MEMORY}" if self._killed_for_memory() else ""
            return Outcome(Status.ERROR, f"the fork parent died while the repeat ran{memory}", stderr)
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


class ForkedRepeats:
    """A Launcher that forks repeat r of every variant from parent r.

    Parents are started when their repeat index comes up and stopped when it is done (the specs
    come in `fork_order`), so a cell holds one TF runtime's memory at a time.
    """

    def __init__(self, worker: Worker, knobs: Knobs, warm: list[str], scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.worker, self.knobs, self.warm, self.scratch = worker, knobs, warm, scratch
        self.live: dict[int, ForkServer] = {}

    def run(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
        if spec.repeat not in self.live:
            self.stop()
            self.live[spec.repeat] = ForkServer(self.worker, self.knobs, self.warm, self.scratch)
        return self.live[spec.repeat].run(spec, timeout, verbose)

    def stop(self) -> None:
        for server in self.live.values():
            server.stop()
        self.live.clear()


# -- the parent ---------------------------------------------------------------------------


def die_with_parent() -> None:
    """This process is killed when its parent dies (Linux), however it dies: a SIGKILLed runner takes
    its harness, the harness its fork server or scenario process, the fork server its children."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def serve(knobs: Knobs, warm: list[str], start: Start, measure: Measure, scenarios: str | None) -> int:
    """A fork server: `start` once (import TF with the knobs), then fork one child per request;
    `warm` names the modules of the `scenarios` package imported before the first fork.

    Requests come on stdin, one JSON line each: {"spec": ..., "stdout": path, "stderr": path}.
    Replies go on the original stdout, one JSON line each: {"started": pid}, then
    {"exited": pid, "status": code or -signal}. The child writes its record as a fresh process does.
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything TF or a library prints goes to stderr, never into the replies
    tf, np, import_seconds = start(knobs)
    # Warm what costs time without starting TF's runtime: Keras's lazy import, the scenario modules.
    # Nothing here may run an op: that starts TF's thread pools, and threads do not survive a fork
    # (a child would inherit locks held by threads that no longer exist in it).
    with contextlib.suppress(AttributeError):
        _ = tf.keras.layers.Dense
    for name in warm if scenarios else ():
        with contextlib.suppress(Exception):  # a broken module fails in its child, with its traceback
            importlib.import_module(f"{scenarios}.{name}")
    parent = uuid.uuid4().hex[:12]  # names this parent in its children's records (no hostname)
    for line in sys.stdin:
        request = json.loads(line)
        child_start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: one repeat, then gone
            code = 1
            try:
                die_with_parent()
                for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
                    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(target, fd)
                    os.close(target)
                sys.stdin.close()
                # A fresh process draws NumPy's legacy global state from the OS; a fork copies the
                # parent's, so every child would share it. Python's `random` reseeds itself on fork.
                np.random.seed()
                spec = exchange.RepeatSpec.from_json(request["spec"])
                measure(replace(spec, isolation=Isolation.FORK, fork_parent=parent), tf, np, 0.0, child_start)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        protocol.write(json.dumps({"started": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        protocol.write(json.dumps({"exited": pid, "status": code, "parent_tf_import_s": import_seconds}) + "\n")
    return 0
