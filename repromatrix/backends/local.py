"""The local backend: one cached virtualenv per TF version and device, on the host CPU.

The fallback when no Docker engine answers, so `nox -s matrix` works on any
machine. It installs the same hash-pinned lock the Docker recipe does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from repromatrix import cleanup, envaxes, locks, progress
from repromatrix.backends import (
    HarnessRun,
    Prepared,
    cache_dir,
    cell_env,
    code_root,
    hardware_skip_reason,
    harness_args,
)
from repromatrix.errors import CellError, CellSkipped, LockError
from repromatrix.extras import PINS_FILE, Extras, Resolved, resolve
from repromatrix.guards import exclusive
from repromatrix.harness.axes import DEFAULT_PYTHON, Cell
from repromatrix.harness.hosts import first_cores, usable_cores

COMPLETE = ".repromatrix-complete"


def gpu_visible() -> str | None:
    """None if an NVIDIA GPU answers, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this host (nvidia-smi not found)"
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or "GPU" not in done.stdout:
        return f"no NVIDIA GPU on this host (nvidia-smi -L: {(done.stderr or done.stdout).strip()[:200]})"
    return None


_pythons: dict[str, tuple[str, str]] = {}
_pythons_guard = threading.Lock()


def python_for(version: str) -> tuple[str, str]:
    """The interpreter of that Python minor version on this machine, as uv's discovery finds it (never
    downloaded): (path, "") or ("", why there is none). This very interpreter when it is that version."""
    with _pythons_guard:
        if version not in _pythons:
            _pythons[version] = _find_python(version)
        return _pythons[version]


def _find_python(version: str) -> tuple[str, str]:
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable, ""
    env = {**locks.uv_env(), "UV_PYTHON_DOWNLOADS": "never"}
    done = cleanup.run([locks.uv_binary(), "python", "find", version], env=env)
    found = done.stdout.strip().splitlines()
    if done.returncode != 0 or not found:
        # uv's own warnings (a deprecated variable) are not the reason.
        kept = [line for line in (done.stderr or "").splitlines() if not line.startswith("warning:")]
        said = " ".join(" ".join(kept).split()).removeprefix("error: ")[:240] or f"exit code {done.returncode}"
        return "", (f"no Python {version} found here by uv's discovery (uv python find {version}: {said}); install one "
                    f"(uv python install {version}, or your system's packages) or use the docker backend")  # fmt: skip
    return found[-1], ""


def installed_digest(venv: Path) -> str:
    """What is installed in a virtualenv, as Python sees it at start-up.

    The names in site-packages (a package added or removed by hand) and the
    contents of the files Python executes on start (.pth, sitecustomize): a
    virtualenv that no longer matches what its lock made is a new environment.
    """
    sha = hashlib.sha256()
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for entry in sorted(site.iterdir()):
            sha.update(entry.name.encode() + b"\0")
            if entry.suffix == ".pth" or entry.name in ("sitecustomize.py", "usercustomize.py"):
                sha.update(entry.read_bytes())
    return sha.hexdigest()


@dataclass(frozen=True)
class LocalBackend:
    index_url: str = ""
    cache: Path = field(default_factory=cache_dir)
    scenario_dirs: tuple[Path, ...] = ()  # the user's scenario folders, beside the built-ins
    projects: tuple[Path, ...] = ()  # the folders the user's commands run from (staged beside them)
    verbose: bool = False  # stream the harness's and the scenarios' output
    extras: Extras = field(default_factory=Extras)  # the user's project and requirements, on top of the lock
    name: str = "local"

    def _lock(self, cell: Cell) -> Path:
        try:
            return locks.cell_lock(cell, self.cache, self.index_url)
        except locks.Unresolvable as exc:
            raise CellSkipped(cell.id, exc.message) from None
        except LockError as exc:
            raise CellError(cell.id, exc.message) from None

    def _key(self, lock: Path, resolved: Resolved | None, cell: Cell | None = None) -> str:
        parts = [self.name, sys.version, platform.machine(), locks.file_digest(lock)]
        if cell is not None and cell.python != DEFAULT_PYTHON:  # the default's keys stay as they were
            parts.append(python_for(cell.python)[0])
        if resolved is not None:
            parts.append(resolved.digest)
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def _resolved(self, cell: Cell, lock: Path) -> Resolved | None:
        return resolve(self.extras, lock, self.cache, cell, self.index_url)

    def _venv(self, cell: Cell, key: str) -> Path:
        return self.cache / "venvs" / f"tf{cell.tf}-{cell.device}-{key[:12]}"

    def environment_key(self, cell: Cell) -> str:
        lock = self._lock(cell)
        key = self._key(lock, self._resolved(cell, lock), cell)
        venv = self._venv(cell, key)
        try:
            made = (venv / COMPLETE).read_text().split()
        except OSError:
            return f"unbuilt:{key}"
        installed = installed_digest(venv)
        # A virtualenv changed by hand since it was made is not the lock's environment.
        return key if made[1:2] == [installed] else f"{key}|changed:{installed}"

    def sweep(self) -> None:
        """Scenario processes die with their harness (their own process group is killed): nothing to sweep."""

    def lost(self, exc: Exception, cell: Cell) -> None:
        """A virtualenv cannot go away mid-run the way an engine can: every failure is the cell's."""
        return None

    def build_cold(self, cell: Cell) -> float:
        scratch = Path(tempfile.mkdtemp(prefix="repromatrix-bench-"))
        try:
            start = time.perf_counter()
            replace(self, cache=scratch).prepare(cell, verbose=False)
            return time.perf_counter() - start
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def skip_reason(self, cell: Cell) -> str | None:
        if cell.recipe != "pip":
            return f"the {cell.recipe!r} recipe is an image; it needs the docker backend"
        if cell.device == "cuda" and (reason := gpu_visible()):
            return reason
        if reason := envaxes.skip_reason(cell):
            return reason
        if reason := python_for(cell.python)[1]:
            return reason
        return hardware_skip_reason(cell, usable_cores())

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        lock = self._lock(cell)
        resolved = self._resolved(cell, lock)
        key = self._key(lock, resolved, cell)
        venv = self._venv(cell, key)
        python = venv / "bin" / "python"
        with exclusive(venv):
            if self.environment_key(cell) != key:
                # Half-made (a killed run) or changed by hand since: never trusted, start over.
                shutil.rmtree(venv, ignore_errors=True)
                progress.say(f"{cell.id}: creating virtualenv {venv} from {lock.name}")
                uv = locks.uv_binary()
                index = ["--index-url", self.index_url] if self.index_url else []
                # Bytecode now: scenario processes run with PYTHONDONTWRITEBYTECODE, and compiling
                # TensorFlow's sources on every import would more than double its import time.
                install = ["--require-hashes", "--no-deps", "--compile-bytecode", "-r", str(lock), *index]
                steps = [
                    [uv, "venv", "--quiet", "--python", python_for(cell.python)[0], str(venv)],
                    [uv, "pip", "install", "--python", str(python), *install],
                ]
                if resolved is not None:  # the user's project and requirements, never changing the lock's
                    extra = venv.parent / f"{venv.name}.extras.txt"
                    extra.write_text(resolved.requirements)
                    steps.append([uv, "pip", "install", "--python", str(python), "--require-hashes", "--no-deps",
                                  "--compile-bytecode", "-r", str(extra), *index])  # fmt: skip
                for step in steps:
                    done = cleanup.run(step, env=locks.uv_env(), quiet=not verbose)
                    if done.returncode != 0:
                        tail = "\n".join((done.stderr or "").splitlines()[-30:])
                        last = tail.splitlines()[-1] if tail else f"exit code {done.returncode}"
                        raise CellError(cell.id, f"virtualenv install failed: {last}", tail)
                if resolved is not None:
                    (venv / PINS_FILE).write_text("".join(f"{pin}\n" for pin in resolved.pins))
                (venv / COMPLETE).write_text(f"{lock.name} {installed_digest(venv)}\n")
        return Prepared(
            key=key,
            description={
                "backend": self.name,
                "venv": venv.name,
                "lock": lock.name,
                **({"extras": list(resolved.pins)} if resolved is not None else {}),
            },
            handle=str(python),
        )

    def shell(self, cell: Cell, command: list[str], workdir: Path) -> int:
        prepared = self.prepare(cell, verbose=False)
        bin_dir = Path(prepared.handle).parent
        code = str(code_root(self.cache, self.scenario_dirs, self.projects))
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, **cell_env(cell, code, knobs=True), "VIRTUAL_ENV": str(bin_dir.parent), "PATH": path}
        cores = first_cores(cell.cpus) if cell.cpus else None
        process = subprocess.Popen(command, cwd=workdir, env=env)
        if cores:
            os.sched_setaffinity(process.pid, cores)  # the cpus axis, as the harness applies it
        with cleanup.registered(process.kill):
            return process.wait()

    def run(self, cell: Cell, prepared: Prepared, attempt: str, out_dir: Path, timeout: float) -> HarnessRun:
        env = {**os.environ, **cell_env(cell, str(code_root(self.cache, self.scenario_dirs, self.projects)))}
        # -P and the cell's folder as working directory: a checkout's own scenarios/ (the folder this
        # was started from, say) never shadows the staged one.
        out_dir = out_dir.resolve()
        command = [prepared.handle, *harness_args(attempt, str(out_dir))]
        # Its own process group: stopping it stops the scenario process it started too.
        process = subprocess.Popen(
            command, env=env, cwd=out_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip

        def stop() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        lines: list[str] = []
        errors: list[str] = []

        def follow() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                progress.say(f"{cell.id} | {line.rstrip()}")

        def collect() -> None:
            assert process.stderr is not None
            errors.append(process.stderr.read())

        with cleanup.registered(stop):
            try:
                if self.verbose:
                    readers = [threading.Thread(target=fn, daemon=True) for fn in (follow, collect)]
                    for reader in readers:
                        reader.start()
                    process.wait(timeout=timeout)
                    for reader in readers:
                        reader.join()
                    stdout, stderr = "".join(lines), "".join(errors)
                else:
                    stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop()
                stdout, stderr = process.communicate()
                raise CellError(cell.id, f"timed out after {timeout:g} s", stderr[-4000:]) from None
            finally:
                stop()  # nothing the harness started outlives it
        return HarnessRun(process.returncode, stdout, stderr)
