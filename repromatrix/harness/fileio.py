"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

A reader never sees half a file; a process killed mid-write leaves `.NAME.<random>.tmp` (or
`.tmp.npz`) behind, which the next run removes (`layout.CellLayout.temporary_files`). Standard
library only (NumPy when writing arrays): it runs inside any TensorFlow image.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    # Read once: os.umask can only be read by setting it, which is not thread-safe later on.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _umask()


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any], suffix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        # mkstemp makes 0600 files; a record is as readable as any file this user writes.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The errors of a write that found no room (a full disk, a quota, a folder gone read-only).
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# What a folder must still take for a run to go on: one record's arrays kept whole, at the default size.
ROOM_BYTES = 256 * 1024


def no_room(folder: Path) -> str:
    """Why `folder` cannot take another record now ('' when it can): tried with a probe of ROOM_BYTES."""
    probe = folder / f".room-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * ROOM_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as failed:
        # Only a write that found no room says so; a folder not made yet (or gone) is another matter.
        return str(failed.strerror or failed) if failed.errno in NO_ROOM else ""
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return ""


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode()), ".tmp")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    # The temp name must end in .npz or numpy appends the suffix itself.
    _atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays), ".tmp.npz")
