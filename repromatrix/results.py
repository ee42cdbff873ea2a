"""The results folder as a whole: one run at a time (a lock), and what made it (a manifest).

The record module owns the layout inside the folder; this module owns the
rules for sharing it between runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repromatrix import cleanup, progress
from repromatrix.errors import ConfigurationError, ResultsBusyError, ResultsFullError
from repromatrix.harness import fileio, records
from repromatrix.harness.hosts import Host
from repromatrix.harness.layout import Layout, Manifest


def ensure_writable(folder: Path, flag: str = "--results", keep: bool = True) -> None:
    """One line and exit 2 when the folder cannot be written, before any work starts.

    Tried, not judged from permission bits (root passes those on a read-only mount or in /proc).
    `keep=False`: the folders made for the try are removed again (a report folder is made when written).
    """
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        error = ResultsBusyError if flag == "--results" else ConfigurationError
        why = exc.strerror or exc
        raise error(f"{flag} {folder}: cannot write there ({why}); pass a folder you can write to") from None
    finally:
        if not keep:
            for path in made:  # the deepest first
                with contextlib.suppress(OSError):
                    path.rmdir()


def check_room(folder: Path, exc: OSError) -> None:
    """ResultsFullError when `exc` (a failed write somewhere) is the results folder having no room left:
    then no cell can write a record, and the run stops with what it measured kept."""
    if exc.errno in fileio.NO_ROOM:
        require_room(folder)


def require_room(folder: Path) -> None:
    """ResultsFullError when the results folder cannot take another record now."""
    full = fileio.no_room(folder)
    if full:
        raise ResultsFullError(f"--results {folder}: no room left to write records ({full})")


# While --wait waits: who holds the folder, said when it starts waiting and then this often.
WAIT_NOTICE_S = 60.0


@contextmanager
def exclusive(
    layout: Layout, wait: bool = False, poll_s: float = 1.0, notice_s: float = WAIT_NOTICE_S
) -> Iterator[None]:
    """Hold the folder's lock for the whole run.

    flock is released by the kernel when its holder dies, so the lock of a
    SIGKILLed run is taken over safely; the file only says who holds it.
    """
    ensure_writable(layout.root)
    handle = open(layout.lock, "a+")  # noqa: SIM115  (held for the whole run)
    try:
        next_notice = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another run"
                if not wait:
                    raise ResultsBusyError(
                        f"--results {layout.root} is in use by {holder}{_how_long(holder)}; wait for it (--wait) "
                        "or pass another --results folder"
                    ) from None
                if time.monotonic() >= next_notice:
                    progress.say(f"waiting for --results {layout.root}: in use by {holder}{_how_long(holder)}")
                    next_notice = time.monotonic() + notice_s
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


def _from_records(layout: Layout, pick: Callable[[records.Record], Any]) -> Any:
    """The first non-empty `pick(record)` among the folder's valid records, else None: what made a
    folder whose manifest is missing or damaged, since every measured record says it."""
    for _, path in layout.record_files():
        record = records.read_if_valid(path)
        found = pick(record) if record is not None else None
        if found:
            return found
    return None


def _backend(record: records.Record) -> str:
    image = record.environment.get("image")
    return str(image.get("backend") or "") if isinstance(image, dict) else ""


def _how_long(holder: str) -> str:
    """', running 12 min' — and whether the holder was orphaned (its parent, a nox session say, is gone)."""
    match = re.match(r"pid (\d+) .*started (\S+)", holder)
    if not match:
        return ""
    pid, started = int(match.group(1)), match.group(2)
    text = ""
    with contextlib.suppress(ValueError):
        minutes = (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds() / 60
        text = f", running {minutes:.0f} min"
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return text
    if parent == 1:
        text += f"; its parent process is gone (an orphan): if nobody runs it on purpose, stop it with kill {pid}"
    return text


def check_host(layout: Layout, host: Host) -> None:
    """A results folder holds one machine's records: another host's run goes to its own folder,
    and the report merges the folders (host is an axis there)."""
    recorded = _from_records(layout, lambda r: r.host_id and r.host.to_json())
    made_on = Manifest.read(layout.manifest).host or recorded or {}
    if made_on.get("id") and made_on["id"] != host.id:
        raise ResultsBusyError(
            f"--results {layout.root} holds records measured on host {made_on.get('label') or made_on['id']}, and "
            f"this is host {host.label}; pass another --results folder (e.g. {layout.root}-{host.label}) "
            "and give both folders to `repromatrix report` to compare the hosts"
        )
    # A label is a host (reporting/hostid.py): one folder under two labels would be two hosts in one folder.
    if made_on.get("id") == host.id and made_on.get("label") and host.label and made_on["label"] != host.label:
        raise ResultsBusyError(
            f"--results {layout.root} holds records of host {made_on['label']}, and this run is labelled "
            f"{host.label}; pass --host {made_on['label']} to add to them, or another --results folder "
            f"(e.g. {layout.root.parent / host.label}) to measure this label as a host of its own"
        )


def check_backend(layout: Layout, backend: str) -> None:
    """Records of one backend are never silently overwritten by another's, manifest or no manifest."""
    made_by = Manifest.read(layout.manifest).backend or _from_records(layout, _backend) or ""
    if made_by and made_by != backend:
        raise ResultsBusyError(
            f"--results {layout.root} holds records made by the {made_by} backend and this run uses {backend}; "
            f"pass another --results folder (e.g. {layout.root}-{backend}), or --backend {made_by}"
        )


def write_manifest(layout: Layout, backend: str, cells: list[str], variants: list[tuple[str, str]],
                   repeats: int, host: Host | None = None,
                   spread: frozenset[tuple[str, str, int]] = frozenset()) -> None:  # fmt: skip
    """What made the folder; a run narrowed to some cells does not disown the others."""
    before = Manifest.read(layout.manifest)
    manifest = Manifest(backend, before.cells | set(cells), frozenset(variants), repeats,
                        {"id": host.id, "label": host.label} if host else {}, spread)  # fmt: skip
    fileio.write_json(layout.manifest, manifest.to_json())


def remove_litter(layout: Layout) -> None:
    """What runs that died left in the folder: temporary files of atomic writes, and attempt folders.

    Called under the folder's lock, after the sweep of dead runs' containers: no other run of this
    folder is alive, so every attempt folder and every temporary file is a dead run's.
    """
    for _, cell in layout.cells():
        shutil.rmtree(cell.root / ".attempts", ignore_errors=True)
        for path in cell.temporary_files():
            path.unlink(missing_ok=True)
