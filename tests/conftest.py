"""Shared fixtures: real TensorFlow virtualenvs (oldest and newest supported) and a real Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from repromatrix.backends import code_root
from repromatrix.backends.container import DockerBackend, DockerEngine
from repromatrix.backends.local import LocalBackend
from repromatrix.harness import exchange, lease, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.catalog import discover, plan
from repromatrix.harness.layout import CellLayout
from repromatrix.harness.records import Isolation
from repromatrix.matrix import REPO_ROOT, DockerSettings

OLDEST_TF = "2.12.1"
NEWEST_TF = "2.21.0"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def tf_python():
    """Python of a cached virtualenv with tensorflow-cpu==VERSION, made from the committed lock."""
    made: dict[str, str] = {}

    def get(version: str) -> str:
        if version not in made:
            backend = LocalBackend()
            made[version] = backend.prepare(Cell(version, "cpu"), verbose=False).handle
        return made[version]

    return get


# Set in the environment of what a test starts (every process below it inherits it): the test's own
# processes are those that carry its token, whatever else runs on the machine.
TOKEN_ENV = "REPROMATRIX_TEST_TOKEN"


def process_token() -> dict[str, str]:
    """An environment entry that marks the processes of one test."""
    return {TOKEN_ENV: uuid.uuid4().hex}


def processes_with(token: dict[str, str]) -> list[str]:
    """The command lines of the live processes that carry `token` in their environment."""
    marker = f"{TOKEN_ENV}={token[TOKEN_ENV]}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def harness(python: str, *args: str, scenarios: Path | None = None, timeout: float = 900,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m repromatrix.harness ARGS` as a cell runs it: from the staged code (the built-ins, and
    the scenario folder `scenarios` beside them), with nothing else importable."""
    root = code_root(scenario_dirs=(scenarios,) if scenarios else ())
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    return subprocess.run([python, "-P", "-m", "repromatrix.harness", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def harness_plan(python: str, cell: Cell, out: Path, scenario: str, repeats: int = 1,
                 isolation: Isolation = Isolation.PROCESS) -> subprocess.CompletedProcess:  # fmt: skip
    """The harness as the runner starts it: a plan file for `cell` in `out`'s attempt folder, its lease held,
    and --attempt."""
    found = discover()
    specs = tuple(r.spec(None, isolation) for r in plan(found, [scenario], repeats, records.DEFAULT_SEED))
    attempt = "test"
    exchange.Plan(specs, cell=cell.params(), knobs=cell.knobs, isolation=isolation).write(
        CellLayout(out).plan_file(attempt)
    )
    with lease.Held(CellLayout(out).lease_file(attempt)):  # the runner holds it while the harness runs
        return harness(python, "--attempt", attempt, "--out", str(out))


def repromatrix_cli(*args: str, timeout: float = 1800, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repromatrix", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def docker_settings() -> DockerSettings:
    return DockerSettings(
        base_image=os.environ.get("REPROMATRIX_BASE_IMAGE", "python:3.11-slim"),
        extra_ca=os.environ.get("REPROMATRIX_EXTRA_CA", ""),
        memory="3g",
        cpus=2.0,
    )


@pytest.fixture(scope="session")
def docker_backend(docker_settings: DockerSettings) -> DockerBackend:
    """A backend on a real engine. Skipped without one, except in CI, where that is a failure."""
    reason = DockerEngine().reachable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return DockerBackend(settings=docker_settings)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


TWO_CELLS = f"""
[matrix]
tf = ["{NEWEST_TF}"]
device = ["cpu"]
onednn = [true, false]
[run]
scenarios = ["init", "seeded_init"]
repeats = 2
"""


@pytest.fixture(scope="session")
def two_cell_run(tmp_path_factory, tf_python):
    """One real run of a two-cell matrix (oneDNN on and off): (matrix file, results folder)."""
    tf_python(NEWEST_TF)
    root = tmp_path_factory.mktemp("two_cells")
    path = root / "matrix.toml"
    path.write_text(TWO_CELLS)
    results = root / "single"
    done = repromatrix_cli("run", "--matrix", str(path), "--backend", "local", "--results", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    return path, results


REPEATS = 3


@pytest.fixture(scope="session", params=[OLDEST_TF, NEWEST_TF])
def run_all(request, tf_python, tmp_path_factory):
    """Every built-in scenario variant, 3 fresh processes each, in one harness call (process isolation)."""
    out = tmp_path_factory.mktemp(f"tf{request.param}")
    done = harness(tf_python(request.param), "--repeat", str(REPEATS), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, out, done


@pytest.fixture
def scenarios_copy(tmp_path):
    """A user's scenario folder, staged beside the built-ins, so tests can add broken scenarios to it."""
    root = tmp_path / "user_scenarios"
    root.mkdir()
    return root


def write_scenario(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(body)


# Scenarios that fail in the ways a user's can: the harness must turn each into an error record.
RAISING = '''"""Raises while building."""
VARIANTS = ("seeded",)


def run(variant, seed):
    raise RuntimeError("boom from a user scenario")
'''
HANGING = '''"""Never returns."""
import time

VARIANTS = ("seeded",)


def run(variant, seed):
    time.sleep(600)
'''
