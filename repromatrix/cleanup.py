"""Things to undo if the run is interrupted: live containers, builds, tool and scenario processes.

Worker threads never see KeyboardInterrupt (only the main thread does), so
each registers how to stop what it started, and the main thread calls
`stop_everything()` on Ctrl-C, SIGTERM or SIGHUP before it exits. The main
thread does not wait for a worker stuck in an image build: what must not be
left behind is undone by the main thread itself, never only by a worker's
`finally`.

`RUN_OWNER` names this process so that containers it leaves behind after a
SIGKILL can be told apart from those of a live concurrent run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

_lock = threading.Lock()
# Set once the run is being torn down: workers then start nothing new and stop
# writing status records, since a container we removed ourselves says nothing about the cell.
stopping = threading.Event()
_pending: dict[int, Callable[[], None]] = {}
_ids = itertools.count()


def _start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing paren are plain.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


RUN_OWNER = owner_id()


def owner_alive(owner: str) -> bool | None:
    """True or False for an owner on this host; None when it is another host's (cannot tell)."""
    host, _, rest = owner.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return _start_ticks(int(pid)) == ticks


@contextmanager
def registered(undo: Callable[[], None]) -> Iterator[None]:
    with _lock:
        token = next(_ids)
        _pending[token] = undo
    try:
        yield
    finally:
        with _lock:
            _pending.pop(token, None)


class Stopping(RuntimeError):
    """The run is being torn down: nothing new is started."""


def stop_everything() -> None:
    stopping.set()
    with _lock:
        # Last registered, first undone: a container goes before the attempt folder it writes into.
        undos = list(reversed(_pending.values()))
        _pending.clear()
    for undo in undos:
        # Best effort while exiting: one failure must not keep the next undo from running.
        with contextlib.suppress(Exception):
            undo()


def run(
    command: Sequence[str], stdin: str | None = None, env: dict[str, str] | None = None, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    """A tool's process (uv: a build, a resolution, an install), killed with everything it started when the
    run is stopped. Started under the registry's lock, so a stop either kills it or comes before it starts
    (Stopping). `quiet`: its output is captured (else it goes to the terminal)."""
    with _lock:
        if stopping.is_set():
            raise Stopping(f"not started, the run is stopping: {command[0]}")
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE if quiet else None, text=True, env=env,
            start_new_session=True,  # its own group: stopping it stops what it started (a build backend)
        )  # fmt: skip

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        token = next(_ids)
        _pending[token] = kill
    try:
        stdout, stderr = process.communicate(stdin)
    finally:
        with _lock:
            _pending.pop(token, None)
        if process.poll() is None:
            kill()
            process.wait()
    return subprocess.CompletedProcess(list(command), process.returncode, stdout or "", stderr or "")


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_termination() -> None:
    """SIGTERM (timeout, CI cancel) and SIGHUP (closed terminal) do what Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _as_interrupt)
