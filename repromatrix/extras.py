"""A user's project and extra requirements, installed into every cell on top of its TensorFlow lock.

`[run] project = "."` (a pip-installable folder, built into a wheel here on the host) and
`[run] requirements = ["einops==0.8.2", ...]` are resolved **per cell** with the cell's lock as
constraints, so they can never change TensorFlow or anything it pinned: a requirement that cannot
coexist with one cell's TF fails that cell alone, with the resolver's reason. The result is
hash-pinned like the lock, cached by content, and part of the environment's key; what it installs
lands in every record's fingerprint (`environment.extras`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from repromatrix import cleanup, locks
from repromatrix.errors import CellError
from repromatrix.guards import KeyedLocks, exclusive
from repromatrix.harness import fileio, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.catalog import SKIPPED_DIRS

PINS_FILE = records.EXTRAS_PINS_FILE
# Inside an image build: where the wheels of the build context land.
IMAGE_WHEELS = "/opt/repromatrix/build/wheels"
_BUILD_OUTPUTS = {"build", "dist"}


@dataclass(frozen=True)
class Extras:
    project: Path | None = None
    requirements: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.project is not None or bool(self.requirements)


@dataclass(frozen=True)
class Resolved:
    """What one cell installs on top of its lock: the hash-pinned requirements and the wheels they name."""

    requirements: str  # for pip/uv: --require-hashes, --no-deps
    wheels: tuple[Path, ...]
    pins: tuple[str, ...]  # name==version, for the records

    @property
    def digest(self) -> str:
        sha = hashlib.sha256(self.requirements.encode())
        for wheel in self.wheels:
            sha.update(wheel.name.encode() + hashlib.sha256(wheel.read_bytes()).digest())
        return sha.hexdigest()

    def for_image(self) -> str:
        """The same requirements, naming the wheels where the image build finds them."""
        text = self.requirements
        for wheel in self.wheels:
            text = text.replace(wheel.resolve().as_uri(), f"file://{IMAGE_WHEELS}/{wheel.name}")
        return text


def _project_digest(project: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(project.rglob("*")):
        parts = path.relative_to(project).parts
        if any(p in SKIPPED_DIRS or p in _BUILD_OUTPUTS or p.startswith(".") or p.endswith(".egg-info")
               for p in parts):  # fmt: skip
            continue
        if path.is_file():
            sha.update("/".join(parts).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def _uv(args: list[str], cell: Cell, what: str, stdin: str | None = None) -> str:
    done = cleanup.run([locks.uv_binary(), *args], stdin=stdin, env=locks.uv_env())
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = " ".join(lines[-3:]) or f"exit code {done.returncode}"
        raise CellError(cell.id, f"{what}: {reason}", done.stderr[-4000:])
    return done.stdout


def build_wheel(project: Path, cache: Path, cell: Cell) -> Path:
    """The project as a wheel, built once per content (its files, not its build outputs).

    One build at a time per project, across threads and runs: a build writes into the project's own
    folder (build/, *.egg-info), where two at once would trip over each other.
    """
    folder = cache / "wheels" / _project_digest(project)[:16]
    with exclusive(folder):
        found = sorted(folder.glob("*.whl"))
        if found:
            return found[0]
        scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
        try:
            _uv(["build", "--wheel", "--quiet", "--out-dir", str(scratch), str(project)], cell,
                f"cannot build the project {project} into a wheel")  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)  # a folder without its wheel (emptied by hand)
            scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return sorted(folder.glob("*.whl"))[0]


def _pins(requirements: str) -> tuple[str, ...]:
    pins = []
    for line in requirements.splitlines():
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        head = line.split(" \\")[0].strip()
        wheel = re.search(r"/([^/]+?)-([^-/]+)-[^/]*\.whl", head)
        pins.append(f"{head.split(' @ ')[0]}=={wheel.group(2)}" if " @ " in head and wheel else head)
    return tuple(pins)


def _name(line: str) -> str:
    """The normalised project name a requirement line starts with."""
    return re.split(r"[=<>!~ \[@]", line, maxsplit=1)[0].lower().replace("_", "-")


def _names(lock_text: str) -> set[str]:
    return {_name(line) for line in lock_text.splitlines() if line and not line[0].isspace() and line[0] != "#"}


# Resolved once per process and lock: a backend asks for a cell's environment key, then prepares
# it (and Docker tags, then builds), and each would otherwise re-read the project and the lock.
# The cells of one lock ask from several threads at once: one resolves, the others wait for it.
_resolved: dict[tuple[Extras, Path, Path, str], Resolved] = {}
_resolving = KeyedLocks()


def resolve(extras: Extras, lock: Path, cache: Path, cell: Cell, index_url: str = "") -> Resolved | None:
    """The extras for this cell, resolved against its lock (constraints) and hash-pinned; None without extras.

    Cached by lock, requirements and project content, so an unchanged cell resolves nothing.
    """
    if not extras:
        return None
    memo = (extras, lock, cache, index_url)
    with _resolving(memo):
        if memo not in _resolved:  # a failure is not remembered: each cell says it with its own id
            _resolved[memo] = _resolve(extras, lock, cache, cell, index_url)
        return _resolved[memo]


def _resolve(extras: Extras, lock: Path, cache: Path, cell: Cell, index_url: str) -> Resolved:
    wheels = (build_wheel(extras.project, cache, cell),) if extras.project is not None else ()
    wanted = [*extras.requirements, *(f"{w.name.split('-')[0]} @ {w.resolve().as_uri()}" for w in wheels)]
    key = hashlib.sha256("\0".join([locks.file_digest(lock), *wanted,
                                    *(locks.file_digest(w) for w in wheels)]).encode()).hexdigest()  # fmt: skip
    cached = cache / "extras" / f"{key[:24]}.txt"
    if not cached.is_file():
        index = ["--index-url", index_url] if index_url else []
        compiled = _uv(
            ["pip", "compile", "-", "--quiet", "--generate-hashes", "--no-header", "--python-version",
             cell.python, "--python-platform", locks.PYTHON_PLATFORM, "-c", str(lock), *index],
            cell, f"[run] requirements/project cannot be installed beside TensorFlow {cell.tf}",
            stdin="\n".join(wanted) + "\n",
        )  # fmt: skip
        # What the lock already pins stays installed from the lock: only the new packages are extras.
        pinned = _names(lock.read_text())
        kept, keep = [], False
        for line in compiled.splitlines():
            if line and not line[0].isspace():
                keep = _name(line) not in pinned
            if keep and not line.lstrip().startswith("#"):
                kept.append(line)
        fileio.write_text(cached, "\n".join(kept) + "\n")
    text = cached.read_text()
    return Resolved(text, wheels, _pins(text))
