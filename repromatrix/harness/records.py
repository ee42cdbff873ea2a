"""The result record and its folder: the contract between the harness, the runner and the reporter.

One JSON file per (cell, scenario variant, repeat), next to an `.npz` holding
the arrays. Both are written atomically (temp file + rename), the JSON last,
so a JSON file that exists always has its arrays beside it.

This module is the only owner of the record's field names, of the seed rule and
of the run defaults; `layout` owns the folder a record sits in, `exchange` what the
runner and the harness hand each other. Standard library and NumPy only: it runs
inside any TensorFlow image.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .fileio import write_json, write_npz, write_text
from .hosts import Host
from .layout import CellLayout

SCHEMA = 2  # 2: outputs may be kept as a sample (`kept`); schema 1 records are still read
READABLE_SCHEMAS = (1, 2)


class Status(StrEnum):
    """What became of a repeat: measured, failed (with the reason), or not run here (with the reason)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class Isolation(StrEnum):
    """How a repeat gets its own process identity: a fresh interpreter, or a fork of a parent per repeat index."""

    PROCESS = "process"
    FORK = "fork"


ISOLATIONS = tuple(Isolation)
# How much of a failing process's stderr a record keeps: enough for a traceback.
STDERR_TAIL_CHARS = 4000

# Run defaults, shared by the harness's command line and matrix.toml.
DEFAULT_REPEATS = 3
DEFAULT_SEED = 42
DEFAULT_TIMEOUT_S = 600.0
# Other seeds each seeded variant is run with, once each, to measure what a different seed does to
# the same model in the same cell (the seed-to-seed spread a difference is judged against). Two keep
# the default matrix within +25% of its time (docs/benchmarks.md); variants with an unseeded sibling
# use its repeats instead unless [run] spread_siblings = false.
DEFAULT_SPREAD_SEEDS = 2
# Fork mode measures the same bits as fresh processes (tests/test_isolation.py proves it per TF line).
DEFAULT_ISOLATION = Isolation.FORK
# Bytes of array data a record keeps whole at most (predictions and final weights first); past
# it, and for every per-layer and per-epoch array, a fixed sample. 256 KiB keeps the default
# matrix's 252 records near 20 MB (docs/benchmarks.md) and a CNN's weights (20k float32) whole.
DEFAULT_RECORD_BYTES = 256 * 1024
# In an environment with a user's project or extra requirements (sys.prefix), what they installed,
# one name==version a line: written by repromatrix/extras.py, read into every record's fingerprint.
EXTRAS_PINS_FILE = "repromatrix-extras.txt"
# Values a sampled array keeps: at the same positions in every process, cell and NumPy version.
SAMPLE_VALUES = 512


class RecordError(ValueError):
    """A file that is not a valid record (or whose arrays do not match it). Never fatal: the
    reporter leaves it out with a warning and the runner measures that repeat again."""


def is_seeded(variant: str) -> bool:
    """The seed rule: every variant gets the seed except the unseeded ones."""
    return not variant.startswith("unseeded")


def seed_for(variant: str, seed: int | None) -> int | None:
    return seed if is_seeded(variant) else None


# -- arrays -------------------------------------------------------------------


def canonical_bytes(array: Any) -> bytes:
    """Dtype, shape and little-endian C-order bytes: equal iff the arrays are bit-identical."""
    import numpy as np

    array = np.asarray(array)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    header = f"{data.dtype.str}|{','.join(map(str, data.shape))}|".encode()
    return header + data.tobytes(order="C")


def digest(array: Any) -> str:
    return hashlib.sha256(canonical_bytes(array)).hexdigest()


# A command's outputs (harness/saved_files.py): one of a series of per-epoch files, and a file that holds
# no array (its bytes). Both are details: read for first divergence and "also differs", kept as a sample.
COMMAND_EPOCH_PREFIX = "epoch."
COMMAND_BYTES_PREFIX = "bytes:"
COMMAND_DETAIL = re.compile(r"^(epoch\.\d+:|bytes:)")


def is_detail(name: str) -> bool:
    """Per-layer and per-epoch arrays: read for first divergence (by digest), kept only as a sample."""
    return ".layer." in name or ".epoch." in name or COMMAND_DETAIL.match(name) is not None


def sample_positions(size: int, count: int = SAMPLE_VALUES) -> Any:
    """Where a sampled array of `size` values is read: the same positions for every array of that size.

    A golden-ratio sequence in plain float64 arithmetic rather than a random generator, whose
    streams NumPy does not promise to keep across versions (TF 2.12 and 2.21 ship different ones).
    """
    import numpy as np

    steps = np.modf(np.arange(count, dtype=np.float64) * 0.6180339887498949)[0]
    return np.unique(np.floor(steps * size).astype(np.int64))


def whole_stats(array: Any) -> dict[str, Any]:
    """What a sample cannot show, computed over the whole array where it was made."""
    import numpy as np

    array = np.asarray(array)
    if array.dtype.kind not in "fiub" or array.size == 0:
        return {}
    wide = array.astype(np.float64).ravel()
    finite = np.isfinite(wide)
    values = wide[finite]
    return {
        "max_abs": float(np.abs(values).max()) if values.size else None,
        "nonfinite": int(wide.size - values.size),
        "norm": float(np.linalg.norm(values)),
    }


@dataclass(frozen=True)
class Output:
    """What a record says of one array: its whole-array digest, and what of it the record keeps.

    Bits are compared on `sha256`, always the whole array's. A sampled output keeps `kept` values
    at `sample_positions(size)`, their own digest (so a tampered sample is noticed) and whole-array stats.
    """

    dtype: str
    shape: tuple[int, ...]
    sha256: str
    kept: int | None = field(default=None, compare=False)  # values kept when sampled; None: kept whole
    kept_sha256: str | None = field(default=None, compare=False)
    stats: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, array: Any, sampled: bool = False) -> Output:
        import numpy as np

        array = np.asarray(array)
        whole = cls(array.dtype.str.lstrip("<>|="), tuple(array.shape), digest(array))
        if not sampled:
            return whole
        sample = array.ravel()[sample_positions(array.size)]
        return replace(whole, kept=int(sample.size), kept_sha256=digest(sample), stats=whole_stats(array))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def sampled(self) -> bool:
        return self.kept is not None

    def kept_of(self, array: Any) -> Any:
        """What a record stores of the whole array: the array, or its sample."""
        return array.ravel()[sample_positions(self.size)] if self.sampled else array

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape), "sha256": self.sha256}
        if self.sampled:
            payload["kept"] = {"values": self.kept, "sha256": self.kept_sha256, "stats": self.stats}
        return payload

    @classmethod
    def from_json(cls, name: str, raw: Any) -> Output:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("sha256"), str)
            or not isinstance(raw.get("shape"), list)
        ):
            raise RecordError(f"output {name!r} is not {{dtype, shape, sha256}}")
        kept = raw.get("kept")
        if kept is not None and (
            not isinstance(kept, dict)
            or not isinstance(kept.get("values"), int)
            or not isinstance(kept.get("sha256"), str)
        ):
            raise RecordError(f"output {name!r}: kept must be {{values, sha256, stats}}")
        output = cls(str(raw.get("dtype", "")), tuple(int(n) for n in raw["shape"]), raw["sha256"])
        if kept is None:
            return output
        return replace(output, kept=kept["values"], kept_sha256=kept["sha256"], stats=_dict(kept.get("stats"), "stats"))


def bound(arrays: dict[str, Any], budget: int) -> dict[str, Output]:
    """Each array's Output, deciding what is kept whole within `budget` bytes.

    Compared outputs (predictions, final weights: model1's, then model2's) are kept whole while
    they fit; per-layer and per-epoch arrays, and whatever does not fit, keep a sample. An array
    no larger than its sample is always kept whole.
    """
    import numpy as np

    def priority(name: str) -> tuple[int, int, str]:
        return (is_detail(name), not name.startswith("model1."), name)

    outputs: dict[str, Output] = {}
    used = 0
    for name in sorted(arrays, key=priority):
        array = np.asarray(arrays[name])
        small = array.size <= SAMPLE_VALUES
        fits = not is_detail(name) and used + array.nbytes <= budget
        outputs[name] = Output.of(array, sampled=not (small or fits))
        if not small and fits:
            used += array.nbytes
    return dict(sorted(outputs.items()))


# -- files --------------------------------------------------------------------


def load_arrays(path: Path) -> dict[str, Any]:
    """Every array of an npz; RecordError when the file is missing, truncated or not an npz."""
    import zipfile

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RecordError(f"{path.name}: arrays unreadable ({type(exc).__name__}: {exc})") from None


# -- the record ---------------------------------------------------------------


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{what} must be an integer, got {value!r}")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"{what} must be an object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Record:
    """One repeat of one scenario variant in one cell, ok or not."""

    scenario: str
    variant: str
    repeat: int
    status: Status
    cell: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    outputs: dict[str, Output] = field(default_factory=dict)
    in_process_identical: bool | None = None
    message: str = ""
    stderr_tail: str = ""
    knobs: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reuse_key: str | None = None
    process_id: str | None = None
    started_at: str | None = None
    isolation: Isolation = Isolation.PROCESS
    # What the scenario declared of this variant (run_to_run, in_process); empty: the defaults.
    expect: dict[str, str] = field(default_factory=dict)
    # The real machine it was measured on (hosts.py): id, label, CPU, cores, GPUs, kernel.
    host: Host = field(default_factory=Host)
    # Extra facts a run attaches (e.g. the fork parent); kept as they are.
    extra: dict[str, Any] = field(default_factory=dict)
    # A spread run: the variant with another seed, measuring the seed-to-seed spread. Never part of
    # run-to-run or cross-cell verdicts (the reporter keeps it apart); written only when true.
    spread: bool = False
    # What the scenario declared of its decisions (DECISION, e.g. {"threshold": 0.5}); written when given.
    decision: dict[str, float] = field(default_factory=dict)

    # -- constructors ----------------------------------------------------------

    @classmethod
    def ok(cls, *, arrays: dict[str, Any], in_process_identical: bool | None, record_bytes: int = DEFAULT_RECORD_BYTES,
           **fields: Any) -> Record:  # fmt: skip
        """A measured repeat: every array digested whole, kept whole or sampled within `record_bytes`."""
        outputs = bound(arrays, record_bytes)
        return cls(status=Status.OK, outputs=outputs, in_process_identical=in_process_identical,
                   process_id=fields.pop("process_id", None) or uuid.uuid4().hex, **fields)  # fmt: skip

    @classmethod
    def failed(cls, status: Status, message: str, *, stderr: str = "", **fields: Any) -> Record:
        """A repeat that produced no outputs: error or skipped, with the reason."""
        if status not in (Status.ERROR, Status.SKIPPED):
            raise ValueError(f"a failed record is error or skipped, not {status!r}")
        return cls(status=status, message=message, stderr_tail=stderr[-STDERR_TAIL_CHARS:], **fields)

    # -- properties ------------------------------------------------------------

    @property
    def is_ok(self) -> bool:
        return self.status == Status.OK

    @property
    def cell_id(self) -> str:
        return str(self.cell.get("id") or "")

    @property
    def name(self) -> str:
        """The scenario variant, as folders and reports name it."""
        return f"{self.scenario}-{self.variant}"

    @property
    def host_id(self) -> str:
        """The machine's id ('' for records made before hosts were recorded)."""
        return self.host.id

    @property
    def host_label(self) -> str:
        return self.host.label or self.host.id

    @property
    def ran_on(self) -> str:
        return str(self.environment.get("ran_on") or "cpu")

    @property
    def process_wall_s(self) -> float:
        return float(self.timings.get("process_wall_s") or 0.0)

    @property
    def tf_import_s(self) -> float:
        return float(self.timings.get("tf_import_s") or 0.0)

    def with_cell(self, cell: dict[str, Any]) -> Record:
        return replace(self, cell=cell)

    # -- JSON ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": SCHEMA,
            "cell": self.cell,
            "scenario": self.scenario,
            "variant": self.variant,
            "seed": self.seed,
            "repeat": self.repeat,
            "status": self.status,
            "error": None if self.is_ok else {"message": self.message, "stderr_tail": self.stderr_tail},
            "outputs": {name: output.to_json() for name, output in self.outputs.items()},
            "in_process_identical": self.in_process_identical,
            "knobs": self.knobs,
            "environment": self.environment,
            "timings": self.timings,
            "reuse_key": self.reuse_key,
            "isolation": self.isolation,
        }
        if self.expect:
            payload["expect"] = self.expect
        if self.host != Host():
            payload["host"] = self.host.to_json()
        if self.process_id:
            payload["process_id"] = self.process_id
        if self.started_at:
            payload["started_at"] = self.started_at
        if self.spread:
            payload["spread"] = True
        if self.decision:
            payload["decision"] = self.decision
        payload.update(self.extra)
        return payload

    @classmethod
    def from_json(cls, raw: Any) -> Record:
        """Validate a parsed record; every problem is a RecordError saying what is wrong."""
        if not isinstance(raw, dict) or raw.get("schema") not in READABLE_SCHEMAS:
            raise RecordError(f"not a repromatrix record of schema {' or '.join(map(str, READABLE_SCHEMAS))}")
        missing = [key for key in ("scenario", "variant", "repeat", "status") if key not in raw]
        if missing:
            raise RecordError(f"record lacks {', '.join(missing)}")
        status = raw["status"]
        if status not in tuple(Status):
            raise RecordError(f"unknown status {status!r}")
        for key in ("scenario", "variant"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise RecordError(f"{key} must be a non-empty string, got {raw[key]!r}")
        repeat = _int(raw["repeat"], "repeat")
        seed = raw.get("seed")
        if seed is not None:
            seed = _int(seed, "seed")
        outputs_raw = raw.get("outputs")
        if status == Status.OK and (not isinstance(outputs_raw, dict) or not outputs_raw):
            raise RecordError("status ok but it names no outputs")
        outputs = {name: Output.from_json(name, value) for name, value in _dict(outputs_raw, "outputs").items()}
        error = _dict(raw.get("error"), "error")
        if not isinstance(raw.get("spread", False), bool):
            raise RecordError(f"spread must be true or false, got {raw['spread']!r}")
        in_process = raw.get("in_process_identical")
        if in_process is not None and not isinstance(in_process, bool):
            raise RecordError(f"in_process_identical must be true, false or null, got {in_process!r}")
        isolation = raw.get("isolation", "process")
        if isolation not in ISOLATIONS:
            raise RecordError(f"unknown isolation {isolation!r}")
        known = {"schema", "cell", "scenario", "variant", "seed", "repeat", "status", "error", "outputs",
                 "in_process_identical", "knobs", "environment", "timings", "reuse_key", "isolation",
                 "process_id", "started_at", "expect", "host", "spread", "decision"}  # fmt: skip
        return cls(
            scenario=raw["scenario"],
            variant=raw["variant"],
            repeat=repeat,
            status=Status(status),
            cell=_dict(raw.get("cell"), "cell"),
            seed=seed,
            outputs=outputs,
            in_process_identical=in_process,
            message=str(error.get("message") or ""),
            stderr_tail=str(error.get("stderr_tail") or ""),
            knobs=_dict(raw.get("knobs"), "knobs"),
            environment=_dict(raw.get("environment"), "environment"),
            timings=_dict(raw.get("timings"), "timings"),
            reuse_key=raw.get("reuse_key") if isinstance(raw.get("reuse_key"), str) else None,
            process_id=raw.get("process_id"),
            started_at=raw.get("started_at"),
            isolation=Isolation(isolation),
            expect={str(k): str(v) for k, v in _dict(raw.get("expect"), "expect").items()},
            host=Host.from_json(_dict(raw.get("host"), "host")),
            extra={k: v for k, v in raw.items() if k not in known},
            spread=bool(raw.get("spread", False)),
            decision={
                str(k): float(v)
                for k, v in _dict(raw.get("decision"), "decision").items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        )

    # -- files -----------------------------------------------------------------

    def write(self, path: Path, arrays: dict[str, Any] | None = None) -> None:
        """What it keeps of the arrays first, then the JSON: a JSON file that exists always has its arrays."""
        if arrays is not None:
            write_npz(arrays_path(path), {name: self.outputs[name].kept_of(arrays[name]) for name in self.outputs})
        write_json(path, self.to_json())

    def write_if_changed(self, path: Path) -> bool:
        """For status records: an unchanged skip is not rewritten (same bytes, same mtime)."""
        payload = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        try:
            if path.read_text() == payload:
                return False
        except (OSError, UnicodeDecodeError):
            pass
        write_text(path, payload)
        return True

    @classmethod
    def read(cls, path: Path) -> Record:
        """Parse and check one record file; RecordError says what is wrong with it."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(f"not a readable JSON record: {exc}") from None
        record = cls.from_json(raw)
        if record.is_ok and not arrays_path(path).is_file():
            raise RecordError("status ok but its .npz is missing")
        return record

    def verify_arrays(self, path: Path) -> dict[str, Any]:
        """What the record kept of its arrays (whole, or a sample), checked against its digests;
        RecordError if any does not match."""
        arrays = load_arrays(arrays_path(path))
        for name, output in self.outputs.items():
            if name not in arrays:
                raise RecordError(f"{arrays_path(path).name} lacks {name}")
            expected = output.kept_sha256 if output.sampled else output.sha256
            if digest(arrays[name]) != expected:
                what = (
                    "its sample does not match the sample's digest" if output.sampled else "does not match its digest"
                )
                raise RecordError(f"{arrays_path(path).name}: {name} {what}")
        return arrays


def arrays_path(record_path: Path) -> Path:
    return record_path.with_suffix(".npz")


def read_if_valid(path: Path) -> Record | None:
    try:
        return Record.read(path)
    except RecordError:
        return None


def _stamp(path: Path) -> str:
    """A record's two files as the file system sees them: size and modification time of each."""
    found = [p.stat() for p in (path, arrays_path(path))]
    return ":".join(f"{st.st_size}:{st.st_mtime_ns}" for st in found)


@dataclass
class Verifications:
    """Which records of one cell folder had their kept arrays checked against their digests, each
    remembered by its files' sizes and modification times: a report or run reads no array that was
    checked and has not changed since. A file rewritten, truncated or replaced is checked again."""

    file: Path
    stamps: dict[str, str] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def of(cls, cell: CellLayout) -> Verifications:
        try:
            raw = json.loads(cell.verified_file.read_text())
            stamps = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        except (OSError, ValueError):
            stamps = {}
        return cls(cell.verified_file, stamps)

    def check(self, record: Record, path: Path) -> None:
        """RecordError unless the record's arrays match it (now, or when last checked and unchanged)."""
        key = f"{path.parent.name}/{path.name}"
        try:
            stamp = _stamp(path)
        except OSError as exc:
            raise RecordError(f"{arrays_path(path).name}: arrays unreadable ({exc.strerror})") from None
        if self.stamps.get(key) == stamp:
            return
        record.verify_arrays(path)
        self.stamps[key] = stamp
        self.changed = True

    def save(self) -> None:
        if self.changed:
            with contextlib.suppress(OSError):  # a read-only folder (downloaded artifacts) is checked each time
                write_json(self.file, self.stamps)
            self.changed = False


def is_reusable(path: Path, reuse_key: str | None, verifications: Verifications | None = None) -> bool:
    """A measured record for exactly these inputs, with arrays that load and match it.

    A skip the scenario process itself measured (TensorFlow refused to run it here) carries the
    reuse key too, and is as reusable as an ok record: running it again would only refuse again.
    """
    if not reuse_key:
        return False
    try:
        record = Record.read(path)
        if record.reuse_key != reuse_key or record.status == Status.ERROR:
            return False
        if record.status == Status.SKIPPED:
            return True
        if verifications is not None:
            verifications.check(record, path)
        else:
            record.verify_arrays(path)
    except RecordError:
        return False
    return True
