"""The results folder as a whole: one run at a time (a lock), and what made it (a manifest).

The record module owns the layout inside the folder; this module owns the
rules for sharing it between runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from repromatrix import cleanup
from repromatrix.errors import ResultsBusyError
from repromatrix.scenarios import records


def ensure_writable(folder: Path) -> None:
    """One line and exit 2 when the folder cannot hold records, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ResultsBusyError(
            f"--results {folder}: cannot write there ({exc.strerror or exc}); pass a folder you can write to"
        ) from None


@contextmanager
def exclusive(layout: records.Layout, wait: bool = False, poll_s: float = 1.0) -> Iterator[None]:
    """Hold the folder's lock for the whole run.

    flock is released by the kernel when its holder dies, so the lock of a
    SIGKILLed run is taken over safely; the file only says who holds it.
    """
    ensure_writable(layout.root)
    handle = open(layout.lock, "a+")  # noqa: SIM115  (held for the whole run)
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if not wait:
                    handle.seek(0)
                    holder = handle.read().strip() or "another run"
                    raise ResultsBusyError(
                        f"--results {layout.root} is in use by {holder}; wait for it (--wait) "
                        "or pass another --results folder"
                    ) from None
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} ({cleanup.RUN_OWNER}), started {started}\n")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def check_backend(layout: records.Layout, backend: str) -> None:
    """Records of one backend are never silently overwritten by another's."""
    made_by = records.Manifest.read(layout.manifest).backend
    if made_by and made_by != backend:
        raise ResultsBusyError(
            f"--results {layout.root} holds records made by the {made_by} backend and this run uses {backend}; "
            f"pass another --results folder (e.g. {layout.root}-{backend}), or --backend {made_by}"
        )


def write_manifest(layout: records.Layout, backend: str, cells: list[str], variants: list[tuple[str, str]],
                   repeats: int) -> None:  # fmt: skip
    """What made the folder; a run narrowed to some cells does not disown the others."""
    before = records.Manifest.read(layout.manifest)
    manifest = records.Manifest(backend, before.cells | set(cells), frozenset(variants), repeats)
    records.write_json(layout.manifest, manifest.to_json())
