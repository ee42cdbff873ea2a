"""The one printer every thread uses for progress lines, so lines never interleave."""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def say(line: str) -> None:
    with _lock:
        print(line, flush=True)


def warn(line: str) -> None:
    """A line for stderr (errors and warnings), under the same lock."""
    with _lock:
        print(line, file=sys.stderr, flush=True)
