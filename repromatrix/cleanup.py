"""Things to undo if the run is interrupted: live containers, builds and scenario processes.

Worker threads never see KeyboardInterrupt (only the main thread does), so
each registers how to stop what it started, and the main thread calls
`stop_everything()` on Ctrl-C, SIGTERM or SIGHUP before it exits.

`RUN_OWNER` names this process so that containers it leaves behind after a
SIGKILL can be told apart from those of a live concurrent run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
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


def stop_everything() -> None:
    stopping.set()
    with _lock:
        undos = list(_pending.values())
        _pending.clear()
    for undo in undos:
        # Best effort while exiting: one failure must not keep the next undo from running.
        with contextlib.suppress(Exception):
            undo()


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_termination() -> None:
    """SIGTERM (timeout, CI cancel) and SIGHUP (closed terminal) do what Ctrl-C does."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _as_interrupt)
