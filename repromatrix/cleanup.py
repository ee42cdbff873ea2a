"""Things to undo if the run is interrupted: live containers and scenario processes.

Worker threads never see KeyboardInterrupt (only the main thread does), so
each registers how to stop what it started, and the main thread calls
`stop_everything()` on Ctrl-C before it exits.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
# Set once the run is being torn down: workers then stop writing status records,
# since a container we removed ourselves says nothing about the cell.
stopping = threading.Event()
_pending: dict[int, Callable[[], None]] = {}
_ids = itertools.count()


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
