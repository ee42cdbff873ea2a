"""Hash-pinned lock files, one per TF version, device, Keras and Python, shared by both backends.

The Docker image and the local virtualenv of a cell install the very same
files, so a difference between them is the environment's, not the packages'.

A cell's lock (`cell_lock`) is its release's lock, then what its environment axes lay over it:
keras = "tf-keras" adds tf-keras of the matching release; [matrix] packages replaces the pinned
packages' entries, resolved with everything else in the lock as constraints. Nothing else changes,
so two cells differing in one of these axes differ in that package alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from repromatrix import cleanup, progress
from repromatrix.errors import LockError
from repromatrix.guards import exclusive
from repromatrix.harness import fileio
from repromatrix.harness.axes import DEFAULT_PYTHON, KERAS_AS_SHIPPED, LEGACY_KERAS, Cell, is_nightly
from repromatrix.matrix import RECIPES_DIR

LOCK_DIR = RECIPES_DIR / "locks"
# The wheels TF publishes for Linux: the platform every image and this host share.
PYTHON_VERSION = DEFAULT_PYTHON
PYTHON_PLATFORM = "x86_64-manylinux_2_28"


def requirement(tf: str, device: str) -> str:
    if is_nightly(tf):
        from repromatrix import nightly

        package = nightly.package_for(tf)
        return f"{package}=={tf}" if device == "cpu" else f"tf-nightly[and-cuda]=={tf}"
    return f"tensorflow-cpu=={tf}" if device == "cpu" else f"tensorflow[and-cuda]=={tf}"


def lock_name(tf: str, device: str, python: str = PYTHON_VERSION, keras: str = KERAS_AS_SHIPPED) -> str:
    """tf2.21.0-cpu.txt; a part for each environment axis off its default (so old names stay valid)."""
    parts = [f"tf{tf}", device, *([f"py{python}"] if python != PYTHON_VERSION else []),
             *(["tfkeras"] if keras == LEGACY_KERAS else [])]  # fmt: skip
    return "-".join(parts) + ".txt"


class Unresolvable(LockError):
    """The resolver proved the cell's packages cannot be installed together (a pin TF excludes, no wheel
    for that Python): the cell does not exist, and is skipped with the resolver's reason."""


def _failure(what: str, stderr: str) -> LockError:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # uv says "No solution found" when the requirements exclude each other, not for a network failure.
    # A version the index does not have at all ("there is no version of tensorflow-cpu==2.99.0") is a
    # typo to fix, not a combination that does not exist: the cell fails, it is not skipped.
    missing = any("there is no version of" in line for line in lines)
    if any("No solution found" in line for line in lines) and not missing:
        start = next(i for i, line in enumerate(lines) if "No solution found" in line)
        return Unresolvable(f"{what}: {' '.join(lines[start:])[:600]}")
    return LockError(f"{what}: {' '.join(lines[-3:])}")


_uv_found: list[str] = []
_uv_guard = threading.Lock()


def uv_binary() -> str:
    """Found once per process, by one thread: uv's finder reads `sysconfig`, whose first use is not
    thread-safe (a second thread saw its variables half made, and its cell failed with a TypeError)."""
    with _uv_guard:
        if not _uv_found:
            _uv_found.append(_find_uv())
        return _uv_found[0]


def _find_uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise LockError("uv is not installed; pip install uv") from None
        return found


def uv_env() -> dict[str, str]:
    env = dict(os.environ)
    # uv's bundled roots do not know a TLS-intercepting proxy's CA; the system store does.
    env.setdefault("UV_NATIVE_TLS", "1")
    return env


def _compile(stdin: str, python: str, index_url: str, *extra: str) -> tuple[int, str, str]:
    command = [
        uv_binary(), "pip", "compile", "-", "--quiet", "--generate-hashes", "--no-header",
        "--python-version", python, "--python-platform", PYTHON_PLATFORM, *extra,
    ]  # fmt: skip
    if index_url:
        command += ["--index-url", index_url]
    done = cleanup.run(command, stdin=stdin, env=uv_env())
    return done.returncode, done.stdout, done.stderr


def generate(tf: str, device: str, dest: Path, index_url: str = "", python: str = PYTHON_VERSION,
             keras: str = KERAS_AS_SHIPPED) -> Path:  # fmt: skip
    """Resolve and hash-pin TF's dependency tree for that Python on manylinux x86_64 (and tf-keras over it)."""
    base = dest if keras == KERAS_AS_SHIPPED else dest.with_name(lock_name(tf, device, python))
    if keras != KERAS_AS_SHIPPED and not base.is_file():
        generate(tf, device, base, index_url, python)
    if keras == LEGACY_KERAS:
        text = _with_legacy_keras(tf, base.read_text(), python, index_url)
        fileio.write_text(dest, text)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    # Another Python keeps the default Python's versions where it can, so a python pair of cells differs in
    # Python (and what has no wheel for it) rather than in a fresh resolution of everything.
    same = LOCK_DIR / lock_name(tf, device)
    held = ["-c", str(same)] if python != PYTHON_VERSION and same.is_file() else []
    how = f"; versions held to {same.name} where they have wheels" if held else ""
    returncode, _, stderr = _compile(requirement(tf, device) + "\n", python, index_url, "-o", str(tmp), *held)
    if returncode != 0 and held and isinstance(_failure("", stderr), Unresolvable):
        why = " ".join(_failure("", stderr).message.split())[:300]
        how = f"; resolved afresh: {same.name}'s versions cannot all be had for Python {python} ({why})"
        returncode, _, stderr = _compile(requirement(tf, device) + "\n", python, index_url, "-o", str(tmp))
    if returncode != 0:
        tmp.unlink(missing_ok=True)
        raise _failure(f"cannot resolve {requirement(tf, device)} for Python {python}", stderr)
    header = f"# {requirement(tf, device)} for Python {python} on {PYTHON_PLATFORM}{how}; made by: nox -s lock\n"
    tmp.write_text(header + tmp.read_text())
    os.replace(tmp, dest)
    return dest


def find_or_create(tf: str, device: str, cache_dir: Path, index_url: str = "", python: str = PYTHON_VERSION,
                   keras: str = KERAS_AS_SHIPPED) -> Path:  # fmt: skip
    """The committed lock, else one generated into the cache (say so: it should be committed)."""
    name = lock_name(tf, device, python, keras)
    committed = LOCK_DIR / name
    if committed.is_file():
        return committed
    cached = cache_dir / "locks" / name
    with exclusive(cached):  # cells of one TF version ask at once: one of them generates it
        if cached.is_file():
            return cached
        if keras != KERAS_AS_SHIPPED:  # over the release's own lock, committed or not
            base = find_or_create(tf, device, cache_dir, index_url, python)
            fileio.write_text(cached, _with_legacy_keras(tf, base.read_text(), python, index_url))
            return cached
        if not is_nightly(tf):  # a nightly is pinned per run: committing its lock would freeze it
            progress.say(
                f"note: no committed lock for {requirement(tf, device)}; generating {cached} (commit one: nox -s lock)"
            )
        # The default Python is not passed: generate's signature before the python axis stays enough.
        return generate(tf, device, cached, index_url, **({"python": python} if python != PYTHON_VERSION else {}))


def blocks(lock_text: str) -> dict[str, str]:
    """A lock's entries by normalised project name: each its `name==version` line and the lines under it."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name = re.split(r"[=<>!~ \[@;]", line, maxsplit=1)[0]
            current = found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), [])
        elif current is None:
            continue
        current.append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def _with_legacy_keras(tf: str, base: str, python: str, index_url: str) -> str:
    """The release's lock plus tf-keras of the matching release, and nothing else.

    tf-keras depends on `tensorflow`, which for a tensorflow-cpu lock would install a second TF over the
    first: tf-keras alone is pinned (--no-deps), and the lock's own TF stands for the one it asks for."""
    major, minor = tf.split(".")[:2]
    wanted = f"tf-keras~={major}.{minor}.0"
    returncode, stdout, stderr = _compile(wanted + "\n", python, index_url, "--no-deps")
    if returncode != 0:
        raise _failure(f"cannot resolve {wanted} for TF {tf}", stderr)
    entry = blocks(stdout).get("tf-keras")
    if entry is None:
        raise LockError(f"cannot resolve {wanted} for TF {tf}: the resolver named no tf-keras")
    pin = entry.splitlines()[0].split()[0]
    return f"# keras = tf-keras: {pin} (--no-deps) over the lock below\n{base.rstrip()}\n{entry}\n"


def cell_lock(cell: Cell, cache_dir: Path, index_url: str = "") -> Path:
    """What the cell installs: its (tf, device, python, keras) lock, with its pinned packages over it."""
    lock = find_or_create(cell.tf, cell.device, cache_dir, index_url, cell.python, cell.keras)
    if not cell.packages:
        return lock
    pins = "-".join(f"{name}{version}" for name, version in cell.packages)
    digest = file_digest(lock)[:12]
    cached = cache_dir / "locks" / f"{lock.stem}-{pins}-{digest}.txt"
    with exclusive(cached):
        if not cached.is_file():
            fileio.write_text(cached, _with_pins(cell, lock.read_text(), index_url))
    return cached


def _with_pins(cell: Cell, base: str, index_url: str) -> str:
    """The lock with each pinned package's entry replaced, resolved with every other entry as a constraint:
    a pin that cannot live with this TF (or with what the lock pins beside it) is Unresolvable."""
    entries = blocks(base)
    pinned = {name for name, _ in cell.packages}
    with tempfile.TemporaryDirectory(prefix="repromatrix-pins-") as scratch:
        constraints = Path(scratch) / "constraints.txt"
        constraints.write_text("\n".join(text for name, text in entries.items() if name not in pinned) + "\n")
        stdin = "".join(f"{line}\n" for line in [requirement(cell.tf, cell.device),
                                                  *(f"{n}=={v}" for n, v in cell.packages)])  # fmt: skip
        returncode, stdout, stderr = _compile(stdin, cell.python, index_url, "-c", str(constraints))
    if returncode != 0:
        pins = ", ".join(f"{n}=={v}" for n, v in cell.packages)
        raise _failure(f"{pins} cannot be installed beside TF {cell.tf}", stderr)
    resolved = blocks(stdout)
    merged = {**entries, **{name: text for name, text in resolved.items() if name in pinned or name not in entries}}
    header = f"# packages pinned over the lock: {', '.join(f'{n}=={v}' for n, v in cell.packages)}\n"
    return header + "\n".join(merged.values()) + "\n"


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
