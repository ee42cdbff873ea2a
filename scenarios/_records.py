"""The result record: the contract between the scenarios harness, the runner and the reporter.

One JSON file per (cell, scenario variant, repeat), next to an `.npz` holding the
arrays. Both are written atomically (temp file + rename) and the JSON last, so a
JSON file that exists always has its arrays beside it.

Standard library and NumPy only: this module runs inside any TensorFlow image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = 1
STATUSES = ("ok", "error", "skipped")
# How much of a failing process's stderr a record keeps: enough for a traceback.
STDERR_TAIL_CHARS = 4000


def canonical_bytes(array: Any) -> bytes:
    """Dtype, shape and little-endian C-order bytes: equal iff the arrays are bit-identical."""
    import numpy as np

    array = np.asarray(array)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    header = f"{data.dtype.str}|{','.join(map(str, data.shape))}|".encode()
    return header + data.tobytes(order="C")


def digest(array: Any) -> str:
    return hashlib.sha256(canonical_bytes(array)).hexdigest()


def describe(array: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(array)
    return {"dtype": array.dtype.str.lstrip("<>|="), "shape": list(array.shape), "sha256": digest(array)}


def record_path(out: Path, scenario: str, variant: str, repeat: int) -> Path:
    return out / f"{scenario}-{variant}" / f"{repeat}.json"


def _atomic_write(path: Path, write: Any, suffix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode()), ".tmp")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_npz(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    # The temp name must end in .npz or numpy appends the suffix itself.
    _atomic_write(path, lambda handle: np.savez(handle, **arrays), ".tmp.npz")


def read_record(path: Path) -> dict[str, Any]:
    """Parse and sanity-check one record; ValueError says what is wrong with it."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a readable JSON record: {exc}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ValueError(f"not a repromatrix record of schema {SCHEMA}")
    missing = [key for key in ("scenario", "variant", "repeat", "status") if key not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise ValueError(f"unknown status {record['status']!r}")
    if record["status"] == "ok" and not path.with_suffix(".npz").is_file():
        raise ValueError("status ok but its .npz is missing")
    return record


def is_reusable(path: Path, reuse_key: str) -> bool:
    """A measured record for exactly these inputs exists, so the repeat need not run again."""
    try:
        record = read_record(path)
    except ValueError:
        return False
    return record["status"] == "ok" and record.get("reuse_key") == reuse_key


def status_record(
    *,
    scenario: str,
    variant: str,
    seed: int | None,
    repeat: int,
    status: str,
    message: str,
    stderr: str = "",
    cell: dict[str, Any] | None = None,
    reuse_key: str | None = None,
) -> dict[str, Any]:
    """A record for a repeat that produced no outputs: error or skipped, with the reason."""
    return {
        "schema": SCHEMA,
        "cell": cell or {},
        "scenario": scenario,
        "variant": variant,
        "seed": seed,
        "repeat": repeat,
        "status": status,
        "error": {"message": message, "stderr_tail": stderr[-STDERR_TAIL_CHARS:]},
        "outputs": {},
        "in_process_identical": None,
        "knobs": {},
        "environment": {},
        "timings": {},
        "reuse_key": reuse_key,
    }
