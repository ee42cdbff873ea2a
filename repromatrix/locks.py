"""Hash-pinned lock files, one per TF version and device, shared by both backends.

The Docker image and the local virtualenv of a cell install the very same
files, so a difference between them is the environment's, not the packages'.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from repromatrix import cleanup, progress
from repromatrix.errors import LockError
from repromatrix.guards import exclusive
from repromatrix.matrix import RECIPES_DIR

LOCK_DIR = RECIPES_DIR / "locks"
# The wheels TF publishes for Linux: the platform every image and this host share.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_28"


def requirement(tf: str, device: str) -> str:
    return f"tensorflow-cpu=={tf}" if device == "cpu" else f"tensorflow[and-cuda]=={tf}"


def lock_name(tf: str, device: str) -> str:
    return f"tf{tf}-{device}.txt"


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


def generate(tf: str, device: str, dest: Path, index_url: str = "") -> Path:
    """Resolve and hash-pin TF's dependency tree for Python 3.11 on manylinux x86_64."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    command = [
        uv_binary(), "pip", "compile", "-", "--quiet", "--generate-hashes", "--no-header",
        "--python-version", PYTHON_VERSION, "--python-platform", PYTHON_PLATFORM, "-o", str(tmp),
    ]  # fmt: skip
    if index_url:
        command += ["--index-url", index_url]
    done = cleanup.run(command, stdin=requirement(tf, device) + "\n", env=uv_env())
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        reason = [line for line in done.stderr.splitlines() if line.strip()][-3:]
        raise LockError(f"cannot resolve {requirement(tf, device)}: {' '.join(r.strip() for r in reason)}")
    header = f"# {requirement(tf, device)} for Python {PYTHON_VERSION} on {PYTHON_PLATFORM}; made by: nox -s lock\n"
    tmp.write_text(header + tmp.read_text())
    os.replace(tmp, dest)
    return dest


def find_or_create(tf: str, device: str, cache_dir: Path, index_url: str = "") -> Path:
    """The committed lock, else one generated into the cache (say so: it should be committed)."""
    committed = LOCK_DIR / lock_name(tf, device)
    if committed.is_file():
        return committed
    cached = cache_dir / "locks" / lock_name(tf, device)
    with exclusive(cached):  # cells of one TF version ask at once: one of them generates it
        if cached.is_file():
            return cached
        progress.say(
            f"note: no committed lock for {requirement(tf, device)}; generating {cached} (commit one: nox -s lock)"
        )
        return generate(tf, device, cached, index_url)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
