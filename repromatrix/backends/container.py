"""The Docker backend: one image per cell environment, one hardened container per cell.

Works against any Docker-API engine docker-py reaches from the environment
(`DOCKER_HOST`), Podman's compatible socket included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from docker.utils import parse_repository_tag

import docker
from repromatrix import cleanup, envaxes, locks, progress
from repromatrix.backends import (
    PACKAGE,
    HarnessRun,
    Prepared,
    cache_dir,
    cell_env,
    code_root,
    hardware_skip_reason,
    harness_args,
)
from repromatrix.errors import (
    BaseImageUnavailableError,
    CellError,
    CellSkipped,
    EngineLostError,
    EngineUnavailableError,
    LockError,
)
from repromatrix.extras import Extras, resolve
from repromatrix.guards import KeyedLocks
from repromatrix.harness import exchange, hostprobe
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import CellLayout
from repromatrix.matrix import RECIPES_DIR, DockerSettings

LABEL = "org.repromatrix"
MANAGED = {f"{LABEL}.managed": "true"}
# A container that runs a cell (the key alone filters): the build's own step containers inherit the
# recipes' managed label, and the engine removes those itself.
CELL_LABEL = f"{LABEL}.cell"
# Which run a container belongs to (host:pid:start ticks), so a later run can remove the orphans of a killed one.
OWNER = f"{LABEL}.owner"
# Where the container sees the scenarios (read-only) and the cell's results (the only writable mount).
CONTAINER_CODE = "/opt/repromatrix"
CONTAINER_RESULTS = "/results"
CONTAINER_WORK = "/work"  # `repromatrix shell`: the user's folder, read-only
NOBODY = "65534:65534"
ULIMITS = {"nofile": 4096, "nproc": 4096}
BUILD_LOG_LINES = 30
# What a call to the engine raises when the engine refuses it or cannot be reached (docker-py's own
# errors, and the HTTP client's under them): the one tuple every engine call here catches.
ENGINE_ERRORS: tuple[type[Exception], ...] = (docker.errors.DockerException, requests.exceptions.RequestException)


def build_context(files: dict[str, bytes]) -> io.BytesIO:
    """The build context as the engine takes it, a tar of the files (folders as their names make them)."""
    archive = io.BytesIO()
    folders = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for folder in sorted(folders):
            entry = tarfile.TarInfo(folder)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(entry)
        for name, content in sorted(files.items()):
            entry = tarfile.TarInfo(name)
            entry.size, entry.mode = len(content), 0o644
            tar.addfile(entry, io.BytesIO(content))
    archive.seek(0)
    return archive


def _engine_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@dataclass(frozen=True)
class DockerEngine:
    """The engine, as docker-py reaches it from the environment (DOCKER_HOST, DOCKER_TLS_VERIFY...)."""

    timeout: int = 600  # seconds without a byte from the engine (a quiet pip step in a build)

    def client(self) -> Any:
        try:
            api = docker.from_env(timeout=self.timeout).api
            api.ping()
        except ENGINE_ERRORS:
            raise EngineUnavailableError(
                f"no Docker engine answers at {_engine_host()}; start one (systemctl start docker, or `dockerd &`), "
                "point DOCKER_HOST at it (Podman: unix:///run/podman/podman.sock), or use --backend local"
            ) from None
        return api

    def lost(self, during: str) -> EngineLostError:
        """The error for an engine that stopped answering mid-run (the runner adds what was measured)."""
        return EngineLostError(f"the Docker engine at {_engine_host()} stopped answering during {during}")

    def answers(self) -> bool:
        try:
            docker.from_env(timeout=5).api.ping()
        except ENGINE_ERRORS:
            return False
        return True

    def reachable(self) -> str | None:
        """None if the engine answers, else why not (one short clause)."""
        try:
            self.client()
        except EngineUnavailableError:
            return f"no Docker engine answers at {_engine_host()}"
        return None


@dataclass
class DockerBackend:
    settings: DockerSettings = field(default_factory=DockerSettings)
    engine: DockerEngine = field(default_factory=DockerEngine)
    verbose: bool = False
    cache: Path = field(default_factory=cache_dir)
    scenario_dirs: tuple[Path, ...] = ()  # the user's scenario folders, beside the built-ins
    projects: tuple[Path, ...] = ()  # the folders the user's commands run from (staged beside them)
    extras: Extras = field(default_factory=Extras)  # the user's project and requirements, on top of the lock
    name: str = "docker"
    _api: Any = field(default=None, init=False, repr=False)
    _build_locks: KeyedLocks = field(default_factory=KeyedLocks, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def api(self) -> Any:
        with self._guard:
            if self._api is None:
                self._api = self.engine.client()
            return self._api

    # -- recipes -------------------------------------------------------------

    def _lock(self, cell: Cell) -> Path | None:
        if cell.recipe != "pip":
            return None
        try:
            return locks.cell_lock(cell, self.cache, self.settings.index_url)
        except locks.Unresolvable as exc:
            raise CellSkipped(cell.id, exc.message) from None
        except LockError as exc:
            raise CellError(cell.id, exc.message) from None

    def build_args(self, cell: Cell) -> dict[str, str]:
        """The recipe's build arguments: part of the image's content tag."""
        if cell.recipe == "official":
            suffix = "-gpu" if cell.device == "cuda" else ""
            return {"TF_IMAGE": f"{self.settings.official_image}:{cell.tf}{suffix}"}
        base = envaxes.docker_base(cell, self.settings.base_image)[0] or self.settings.base_image
        return {"BASE_IMAGE": base, "INDEX_URL": self.settings.index_url}

    def _base(self, cell: Cell) -> str:
        """The image the recipe builds FROM."""
        return next(iter(self.build_args(cell).values()))

    def _extra_ca(self, cell: Cell) -> bytes:
        if not self.settings.extra_ca:
            return b""
        try:
            return Path(self.settings.extra_ca).expanduser().read_bytes()
        except OSError as exc:
            raise CellError(
                cell.id, f"extra CA bundle {self.settings.extra_ca}: {exc.strerror}; fix [docker].extra_ca"
            ) from None

    def context_files(self, cell: Cell) -> dict[str, bytes]:
        """The build context, by file name: the recipe, and for pip the lock and the extra CA bundle."""
        files = {"Dockerfile": (RECIPES_DIR / f"Dockerfile.{cell.recipe}").read_bytes()}
        lock = self._lock(cell)
        if lock is None:
            if self.extras:
                raise CellError(cell.id, f"the {cell.recipe!r} recipe has no lock to resolve [run] project and "
                                "requirements against; use recipe = \"pip\" for cells with your project")  # fmt: skip
            return files
        files["requirements.lock"] = lock.read_bytes()
        files["extra-ca.pem"] = self._extra_ca(cell)
        # The user's project and requirements, resolved against this lock; empty files without them.
        resolved = resolve(self.extras, lock, self.cache, cell, self.settings.index_url)
        files["extras.txt"] = resolved.for_image().encode() if resolved else b""
        files["extras-pins.txt"] = "".join(f"{pin}\n" for pin in resolved.pins).encode() if resolved else b""
        files["wheels/.keep"] = b""
        for wheel in resolved.wheels if resolved else ():
            files[f"wheels/{wheel.name}"] = wheel.read_bytes()
        return files

    def image_tag(self, cell: Cell) -> str:
        """Content-addressed: recipe, build arguments and lock. An unchanged cell is never rebuilt."""
        sha = hashlib.sha256()
        for name, content in sorted(self.context_files(cell).items()):
            sha.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        sha.update(json.dumps(self.build_args(cell), sort_keys=True).encode())
        return f"repromatrix/tf:{cell.tf}-{cell.device}-{cell.recipe}-{sha.hexdigest()[:16]}"

    def _image_id(self, tag: str) -> str | None:
        try:
            return self.api.inspect_image(tag)["Id"]
        except docker.errors.ImageNotFound:
            return None

    def require_bases(self, cells: list[Cell]) -> None:
        """Exit 3 up front when an image that must be built starts FROM one the engine neither has nor
        can pull: one line, rather than every cell's build failing on the registry in turn."""

        needed: dict[str, Cell] = {}
        for cell in cells:
            base = self._base(cell)
            if base in needed or self._image_id(base) is not None or self.skip_reason(cell) is not None:
                continue
            try:
                built = self._image_id(self.image_tag(cell)) is not None
            except CellError:  # it cannot be built at all: the cell fails alone, with its own reason
                continue
            if not built:
                needed[base] = cell
        for base, cell in needed.items():
            progress.say(f"pulling {base}, which {cell.id} is built FROM (this engine does not have it)")
            repository, tag = parse_repository_tag(base)
            try:
                # An engine may answer a failed pull with an error in the stream rather than a status.
                streamed = self.api.pull(repository, tag=tag or "latest", stream=True, decode=True)
                reason = next((str(chunk["error"]) for chunk in streamed if chunk.get("error")), "")
            except docker.errors.APIError as exc:
                reason = str(getattr(exc, "explanation", None) or exc)
            if reason:
                reason = " ".join(reason.split())[:300]
                how = (
                    "build one with `nox -s base_image` and set REPROMATRIX_BASE_IMAGE to it (or [docker].base_image)"
                    if cell.recipe == "pip"
                    else 'the official recipe needs a registry; use recipe = "pip"'
                )
                raise BaseImageUnavailableError(
                    f"the base image {base} cannot be had: this engine does not have it and cannot pull it "
                    f"({reason}); {how}, or use --backend local"
                ) from None

    # -- Backend protocol ----------------------------------------------------

    def environment_key(self, cell: Cell) -> str:
        # The image id when the image exists: a rebuilt image (new base layers) is a new environment.
        tag = self.image_tag(cell)
        return self._image_id(tag) or f"unbuilt:{tag}"

    def skip_reason(self, cell: Cell) -> str | None:
        if reason := envaxes.skip_reason(cell) or (cell.recipe == "pip" and envaxes.docker_base(
                cell, self.settings.base_image)[1]):  # fmt: skip
            return reason
        info = self.api.info()
        hardware = hardware_skip_reason(cell, int(info.get("NCPU") or 1))
        if hardware or cell.device != "cuda":
            return hardware
        runtimes = sorted(info.get("Runtimes", {}))
        if not any("nvidia" in runtime for runtime in runtimes):
            return (
                f"the Docker engine has no NVIDIA runtime (runtimes: {', '.join(runtimes) or 'none'}); "
                "install nvidia-container-toolkit on a host with an NVIDIA GPU"
            )
        return None

    def prepare(self, cell: Cell, verbose: bool) -> Prepared:
        tag = self.image_tag(cell)
        with self._build_locks(tag):
            image_id = self._image_id(tag)
            if image_id is None:
                image_id = self._build(cell, tag, verbose or self.verbose)
        return Prepared(
            key=image_id,
            description={"backend": self.name, "tag": tag, "id": image_id, "base": self._base(cell)},
            handle=image_id,
        )

    def build_cold(self, cell: Cell) -> float:
        tag = self.image_tag(cell) + "-bench"
        start = time.perf_counter()
        image_id = self._build(cell, tag, verbose=False, nocache=True)
        seconds = time.perf_counter() - start
        self.api.remove_image(image_id, force=True)
        return seconds

    def _build(self, cell: Cell, tag: str, verbose: bool, nocache: bool = False) -> str:
        if cleanup.stopping.is_set():
            raise CellError(cell.id, "interrupted before the image build")
        progress.say(f"{cell.id}: building {tag}")
        labels = {
            **MANAGED,
            f"{LABEL}.recipe": cell.recipe,
            f"{LABEL}.tf": cell.tf,
            f"{LABEL}.device": cell.device,
            f"{LABEL}.base": self._base(cell),
            f"{LABEL}.cell-environment": f"tf{cell.tf}-{cell.device}-{cell.recipe}",
        }
        tail: deque[str] = deque(maxlen=BUILD_LOG_LINES)
        # The context goes to the engine from memory: no folder of it (the lock, the proxy's CA) is ever
        # on disk, so a run that exits mid-build, however it exits, leaves no copy behind. On Ctrl-C the
        # main thread does not wait for this build: it exits, and the engine cancels a build whose
        # client went away (see cli.main).
        context = build_context(self.context_files(cell))
        try:
            stream = self.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                buildargs=self.build_args(cell),
                labels=labels,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=nocache,
                decode=True,
            )
            for chunk in stream:
                error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
                text = error or chunk.get("stream") or chunk.get("status") or ""
                for line in text.splitlines():
                    if line.strip():
                        tail.append(line.rstrip())
                        if verbose:
                            progress.say(f"{cell.id} | {line.rstrip()}")
                if error:
                    raise CellError(cell.id, f"image build failed: {error.strip()}", "\n".join(tail))
        except ENGINE_ERRORS as exc:
            if not self.engine.answers():
                raise self.engine.lost(f"the image build of {cell.id}") from None
            raise CellError(cell.id, f"image build failed: {exc}", "\n".join(tail)) from None
        image_id = self._image_id(tag)
        if image_id is None:
            raise CellError(cell.id, "image build reported success but left no image", "\n".join(tail))
        return image_id

    @contextmanager
    def container(self, cell: Cell, **create: Any) -> Iterator[str]:
        """A created container, force-removed on every way out, Ctrl-C included."""
        if cleanup.stopping.is_set():
            raise CellError(cell.id, "interrupted before the container started")
        name = f"repromatrix-{cell.id}-{uuid.uuid4().hex[:8]}"
        labels = {**MANAGED, CELL_LABEL: cell.id, OWNER: cleanup.RUN_OWNER, **create.pop("labels", {})}
        container_id = self.api.create_container(name=name, labels=labels, **create)["Id"]

        def remove() -> None:
            self.api.remove_container(container_id, force=True, v=True)

        try:
            with cleanup.registered(remove):
                if cleanup.stopping.is_set():  # the stop came while it was being created
                    raise CellError(cell.id, "interrupted before the container started")
                yield container_id
        finally:
            # Already gone when the Ctrl-C handler removed it first.
            with contextlib.suppress(*ENGINE_ERRORS):
                remove()

    def run(self, cell: Cell, prepared: Prepared, attempt: str, out_dir: Path, timeout: float) -> HarnessRun:
        command = ["python3", *harness_args(attempt, CONTAINER_RESULTS)]
        plan = exchange.Plan.read(CellLayout(out_dir).plan_file(attempt))
        hostprobe.carry(plan.host, plan.cell, out_dir, into_cell=True)
        # Its exit code is judged by the runner, for both backends alike.
        run = self.execute(cell, prepared.handle, command, out_dir, timeout)
        hostprobe.carry(plan.host, plan.cell, out_dir, into_cell=False)
        return run

    def shell(self, cell: Cell, command: list[str], workdir: Path) -> int:
        """The command in the cell's image, hardened as a run is; `workdir` is mounted read-only at /work."""
        prepared = self.prepare(cell, verbose=False)
        if os.getuid() == 0 and workdir.stat().st_mode & 0o005 != 0o005:
            progress.warn(
                f"warning: {workdir} is not readable by others; the container runs as nobody and will not "
                f"see your files in /work (chmod o+rX {workdir})"
            )
        with tempfile.TemporaryDirectory(prefix="repromatrix-shell-") as scratch:
            result = self.execute(cell, prepared.handle, command, Path(scratch), timeout=self.engine.timeout,
                                  workdir=workdir, knobs=True)  # fmt: skip
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode

    def execute(
        self,
        cell: Cell,
        image: str,
        command: list[str],
        out_dir: Path,
        timeout: float,
        workdir: Path | None = None,
        knobs: bool = False,
    ) -> HarnessRun:
        """Run `command` in a hardened container whose only writable mount is `out_dir`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        user = NOBODY if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
        if user == NOBODY:
            # Root on the host: the container runs as nobody, which gets the cell's folder (and
            # only it) rather than a world-writable one. Root on the host still reads everything.
            uid, gid = (int(part) for part in NOBODY.split(":"))
            for path in [out_dir, *out_dir.rglob("*")]:
                os.chown(path, uid, gid, follow_symlinks=False)
        code = code_root(self.cache, self.scenario_dirs, self.projects) / PACKAGE
        host_config = self.api.create_host_config(
            binds={
                str(code): {"bind": f"{CONTAINER_CODE}/{PACKAGE}", "mode": "ro"},
                str(out_dir.resolve()): {"bind": CONTAINER_RESULTS, "mode": "rw"},
                **({str(workdir.resolve()): {"bind": CONTAINER_WORK, "mode": "ro"}} if workdir else {}),
            },
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"},
            mem_limit=self.settings.memory,
            memswap_limit=self.settings.memory,
            # The cpus axis: exactly that many cores (a set, and a quota to match); else the settings' quota.
            cpuset_cpus=f"0-{cell.cpus - 1}" if cell.cpus else None,
            nano_cpus=int((cell.cpus or self.settings.cpus) * 1e9),
            pids_limit=self.settings.pids,
            # Explicit and bounded: Podman otherwise asks for limits above what a nested or
            # rootless host grants, and the container fails to start.
            ulimits=[docker.types.Ulimit(name=name, soft=limit, hard=limit) for name, limit in ULIMITS.items()],
            device_requests=(
                [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if cell.device == "cuda" else None
            ),
        )
        try:
            with self.container(
                cell,
                image=image,
                command=command,
                user=user,
                environment={"HOME": "/tmp", **cell_env(cell, CONTAINER_CODE, knobs)},
                host_config=host_config,
                working_dir=CONTAINER_WORK if workdir else "/tmp",
                network_disabled=True,
            ) as container_id:
                self.api.start(container_id)
                if self.verbose:
                    threading.Thread(target=self._stream, args=(cell, container_id), daemon=True).start()
                try:
                    status = self.api.wait(container_id, timeout=timeout)
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    # docker-py over a Unix socket reports its read timeout as a ConnectionError too:
                    # an engine that still answers means the container ran out of time.
                    if not self.engine.answers():
                        raise self.engine.lost(cell.id) from None
                    stderr = self._logs(container_id, stderr=True)
                    raise CellError(cell.id, f"container timed out after {timeout:g} s", stderr) from None
                stdout = self._logs(container_id, stdout=True)
                stderr = self._logs(container_id, stderr=True)
                state = self.api.inspect_container(container_id).get("State", {})
        except ENGINE_ERRORS as exc:
            if cleanup.stopping.is_set():
                raise CellError(cell.id, "interrupted") from None
            lost = self.lost(exc, cell)  # an engine going down drops connections or answers with errors
            if lost is not None:
                raise lost from None
            raise CellError(cell.id, f"container could not run: {getattr(exc, 'explanation', None) or exc}") from None
        return HarnessRun(int(status.get("StatusCode", -1)), stdout, stderr, bool(state.get("OOMKilled")))

    def _stream(self, cell: Cell, container_id: str) -> None:
        """-v: the harness's and the scenarios' output as it comes (until the container is gone)."""
        with contextlib.suppress(*ENGINE_ERRORS):
            pending = ""
            for chunk in self.api.logs(container_id, stream=True, follow=True):
                pending += chunk.decode(errors="replace")
                *lines, pending = pending.split("\n")
                for line in lines:
                    progress.say(f"{cell.id} | {line}")

    def _logs(self, container_id: str, stdout: bool = False, stderr: bool = False) -> str:
        try:
            raw = self.api.logs(container_id, stdout=stdout, stderr=stderr)
        except ENGINE_ERRORS:
            return ""
        return raw.decode(errors="replace")

    def sweep(self) -> None:
        """Remove the containers of runs that died without removing them (SIGKILL, OOM kill).

        Only those whose owner is a process of this host that no longer exists: a
        live concurrent run's containers, and other hosts' (a shared engine), are left alone.
        """
        found = self.api.containers(all=True, filters={"label": CELL_LABEL})
        for container in found:
            owner = (container.get("Labels") or {}).get(OWNER)
            if owner and cleanup.owner_alive(owner) is False:
                with contextlib.suppress(*ENGINE_ERRORS):  # removed meanwhile (by its own run's last act, say)
                    self.api.remove_container(container["Id"], force=True, v=True)
                    name = (container.get("Names") or ["?"])[0].lstrip("/")
                    progress.say(
                        f"removed container {name}, left behind by a run that ended without removing it ({owner})"
                    )

    def lost(self, exc: Exception, cell: Cell) -> EngineLostError | None:
        """The engine-lost error when `exc` (raised by a call to the engine) means the engine is gone."""
        if isinstance(exc, EngineLostError):
            return exc
        if isinstance(exc, ENGINE_ERRORS) and not self.engine.answers():
            return self.engine.lost(cell.id)
        return None

    def leftovers(self) -> list[str]:
        """Names of containers this tool created that still exist (there should be none)."""
        found = self.api.containers(all=True, filters={"label": CELL_LABEL})
        return [name.lstrip("/") for container in found for name in container.get("Names", [])]
