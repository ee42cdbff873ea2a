"""How a repeat's process is started in a cell, and how its end is judged.

A `Worker` names the module every scenario process runs (`repromatrix.harness.worker`, or a test's
stand-in) and the environment it gets; a `Launcher` runs one repeat in its own process identity:
`FreshProcesses` starts a whole interpreter per repeat, `forkserver.ForkedRepeats` forks repeat r
of every variant from parent r. The harness is handed the worker, so a test's fake runs through the
very same launchers, fork path included. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import exchange, records
from .axes import Knobs
from .records import Status

PACKAGE = (__package__ or "repromatrix.harness").rpartition(".")[0]
# The folder that holds the package: what every process in the cell imports it from.
CODE_ROOT = Path(__file__).resolve().parents[2]


def process_env(pythonpath: str, knobs: Knobs | None = None) -> dict[str, str]:
    """What every process started in a cell's environment gets, on either backend and from the harness:
    the staged code importable and no bytecode written beside it. With `knobs`, also what the knobs
    set in the environment, as a shell in the cell needs it (a harness applies its knobs itself, in
    each scenario process)."""
    env = {"PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
    if knobs is not None:
        env |= {"TF_CPP_MIN_LOG_LEVEL": "2", **knobs.env()}
    return env


@dataclass(frozen=True)
class Worker:
    """The module a scenario process, a fork parent and the ISA probe run, and their environment."""

    module: str = f"{PACKAGE}.harness.worker"

    def command(self, *args: str) -> list[str]:
        # -P: nothing is imported from the working directory.
        return [sys.executable, "-P", "-m", self.module, *args]

    def env(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, **process_env(pythonpath)}


@dataclass(frozen=True)
class Outcome:
    status: Status  # ok, error, or skipped (TensorFlow refused to run it here, and said why)
    message: str = ""
    stderr: str = ""


class Launcher(Protocol):
    """Runs one repeat in a process identity of its own and says how it ended."""

    def run(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome: ...

    def stop(self) -> None:
        """Stop whatever it keeps alive between repeats (a fork parent)."""
        ...


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def oom_kills() -> int | None:
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


# TensorFlow's own words when op determinism is on and a random op has no seed: a documented
# refusal (unseeded variants cannot run in such a cell), measured as such, not a failure of the run.
TF_REFUSES_UNSEEDED = "Random ops require a seed to be set when determinism is enabled"
TIMED_OUT = "timed out after {timeout:g} s (raise the timeout if it needs longer)"
OUT_OF_MEMORY = "killed: out of memory (raise [docker].memory)"
# A command scenario's repeat says how its command ended on its last line, after this (harness/command.py).
COMMAND_SAYS = "repromatrix: "


def judge_exit(returncode: int, stderr: str, path: Path, oom_before: int | None = None) -> Outcome:
    """How a scenario process ended: its exit code, what it said, and whether it wrote a valid record."""
    if returncode > 0 and TF_REFUSES_UNSEEDED in stderr:
        return Outcome(
            Status.SKIPPED,
            "TensorFlow refuses unseeded random ops when op determinism is on (it asks for a seed)",
            stderr,
        )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        oom_after = oom_kills()
        grew = oom_before is not None and oom_after is not None and oom_after > oom_before
        if returncode == -signal.SIGKILL and grew:
            return Outcome(Status.ERROR, OUT_OF_MEMORY, stderr)
        return Outcome(Status.ERROR, f"killed by {name}: {last_line(stderr)}", stderr)
    if returncode > 0 and last_line(stderr).startswith(COMMAND_SAYS):  # how a command scenario's command ended
        return Outcome(Status.ERROR, last_line(stderr).removeprefix(COMMAND_SAYS), stderr)
    if returncode != 0:
        return Outcome(Status.ERROR, f"exited with code {returncode}: {last_line(stderr)}", stderr)
    try:
        records.Record.read(path)
    except records.RecordError as exc:
        return Outcome(Status.ERROR, f"wrote no valid record: {exc}", stderr)
    return Outcome(Status.OK, "", stderr)


def show(output: str) -> None:
    """-v: a scenario process's own output, indented under the harness's line."""
    for line in output.splitlines():
        print(f"  | {line}", flush=True)


@dataclass(frozen=True)
class FreshProcesses:
    """Isolation.PROCESS: one fresh interpreter per repeat."""

    worker: Worker = Worker()

    def run(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
        command = self.worker.command(json.dumps(spec.to_json()))
        oom_before = oom_kills()
        # In the harness's own process group (the one the runner stops), so nothing outlives the harness.
        process = subprocess.Popen(command, env=self.worker.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            return Outcome(Status.ERROR, TIMED_OUT.format(timeout=timeout), stderr)
        finally:
            if process.poll() is None:  # interrupted: take the scenario process with us
                process.kill()
        if verbose:
            show(stdout + stderr)
        return judge_exit(process.returncode, stderr, Path(spec.record), oom_before)

    def stop(self) -> None:
        """Nothing outlives a repeat."""


def probe_isa(worker: Worker, knobs: Knobs, timeout: float) -> str | None:
    """What oneDNN says it dispatches to under these knobs (its verbose output names the ISA).

    A process of its own: verbose mode prints a line per kernel, which the measured processes are spared.
    """
    command = worker.command("--probe-isa", json.dumps(knobs.to_json()))
    try:
        done = subprocess.run(command, env=worker.env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in done.stdout.splitlines():
        if ",info,cpu,isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None
