"""The local backend: one cached virtualenv per TF version and device, on the host CPU.

The fallback when no Docker engine answers, so `nox -s matrix` works on any
machine. It installs the same hash-pinned lock the Docker recipe does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import scenarios
from repromatrix import cleanup, locks
from repromatrix.backends import HarnessRun, Prepared, cache_dir
from repromatrix.errors import CellError
from repromatrix.matrix import Cell

COMPLETE = ".repromatrix-complete"
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One builder per environment, across threads and processes."""
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(path, threading.Lock())
    path.parent.mkdir(parents=True, exist_ok=True)
    with thread_lock, open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def gpu_visible() -> str | None:
    """None if an NVIDIA GPU answers, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this host (nvidia-smi not found)"
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or "GPU" not in done.stdout:
        return f"no NVIDIA GPU on this host (nvidia-smi -L: {(done.stderr or done.stdout).strip()[:200]})"
    return None


@dataclass(frozen=True)
class LocalBackend:
    index_url: str = ""
    name: str = "local"

    def _lock(self, cell: Cell) -> Path:
        try:
            return locks.find_or_create(cell.tf, cell.device, cache_dir(), self.index_url)
        except locks.LockError as exc:
            raise CellError(cell.id, str(exc)) from None

    def _key(self, lock: Path) -> str:
        parts = [self.name, sys.version, platform.machine(), locks.file_digest(lock)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def environment_key(self, cell: Cell) -> str:
        return self._key(self._lock(cell))

    def skip_reason(self, cell: Cell) -> str | None:
        if cell.recipe != "pip":
            return f"the {cell.recipe!r} recipe is an image; it needs the docker backend"
        if cell.device == "cuda":
            return gpu_visible()
        return None

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        lock = self._lock(cell)
        key = self._key(lock)
        venv = cache_dir() / "venvs" / f"tf{cell.tf}-{cell.device}-{key[:12]}"
        python = venv / "bin" / "python"
        with exclusive(venv):
            if not (venv / COMPLETE).is_file():
                # A half-made virtualenv (a killed run) is never trusted: start over.
                shutil.rmtree(venv, ignore_errors=True)
                print(f"{cell.id}: creating virtualenv {venv} from {lock.name}", flush=True)
                uv = locks.uv_binary()
                index = ["--index-url", self.index_url] if self.index_url else []
                # Bytecode now: scenario processes run with PYTHONDONTWRITEBYTECODE, and compiling
                # TensorFlow's sources on every import would more than double its import time.
                install = ["--require-hashes", "--no-deps", "--compile-bytecode", "-r", str(lock), *index]
                steps = [
                    [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                    [uv, "pip", "install", "--python", str(python), *install],
                ]
                for step in steps:
                    done = subprocess.run(step, capture_output=not verbose, text=True, env=locks.uv_env(), check=False)
                    if done.returncode != 0:
                        tail = "\n".join((done.stderr or "").splitlines()[-30:])
                        last = tail.splitlines()[-1] if tail else f"exit code {done.returncode}"
                        raise CellError(cell.id, f"virtualenv install failed: {last}", tail)
                (venv / COMPLETE).write_text(lock.name + "\n")
        return Prepared(
            key=key,
            description={"backend": self.name, "venv": venv.name, "lock": lock.name},
            handle=str(python),
        )

    def run(self, cell: Cell, prepared: Prepared, harness_args: list[str], out_dir: Path, timeout: float) -> HarnessRun:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(scenarios.SCENARIOS_DIR.parent)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [prepared.handle, "-m", "scenarios", *harness_args, "--out", str(out_dir)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with cleanup.registered(process.kill):
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                raise CellError(cell.id, f"timed out after {timeout:g} s", stderr[-4000:]) from None
        return HarnessRun(process.returncode, stdout, stderr)
