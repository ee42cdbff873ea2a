"""Locks for what the cell threads of a run, and concurrent runs, share: made once, one maker at a time.

Cells run in threads (`--jobs`), and every thread asks for the same things: the uv binary, a
cell's lock file, the user's project as a wheel, its requirements resolved against a lock, an
environment (virtualenv or image). Each is made under a lock keyed by what it is, so two threads
never make it at once (a half-initialised `sysconfig` seen by a second thread once lost a whole
cell), and a second asker gets the first one's result.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path


class KeyedLocks:
    """One lock per key, made on first use; the map itself is guarded, so two threads get the same lock."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


_paths = KeyedLocks()


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One maker of `path` at a time, across threads (a lock per path) and processes (`PATH.lock`, flock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _paths(path.resolve()), open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
