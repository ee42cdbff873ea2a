"""Signals and bad output folders, as an operator meets them: what is left behind, and what a run says.

Real processes (the orchestrator, uv, a build backend), no TensorFlow and no Docker: fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repromatrix import runner
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import Layout
from repromatrix.matrix import REPO_ROOT, DockerSettings, Matrix
from tests.conftest import NEWEST_TF, alive
from tests.fakes import FakeBackend

# A project whose build backend takes its time: it says so in a file, then sleeps. A run interrupted
# while it builds must take uv and the backend with it, and leave no scratch folder behind.
SLOW_BACKEND = """
import os, pathlib, time

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    pathlib.Path(os.environ["SLOW_BUILD_MARKER"]).write_text(str(os.getpid()))
    time.sleep(300)
    raise RuntimeError("not reached")
"""
PYPROJECT = """
[build-system]
requires = []
build-backend = "slow_backend"
backend-path = ["."]

[project]
name = "slowpkg"
version = "0.1.0"
"""


def cli(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "repromatrix", *args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_while_the_project_is_built_stops_uv_and_its_backend_and_leaves_nothing(tmp_path, signum):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "slow_backend.py").write_text(SLOW_BACKEND)
    (project / "matrix.toml").write_text(
        f'[matrix]\ntf = ["{NEWEST_TF}"]\nonednn = [true, false]\n[run]\nscenarios = ["seeded_init"]\n'
        'project = "."\nrepeats = 2\n'
    )
    marker, cache = tmp_path / "building", tmp_path / "cache"
    env = {"SLOW_BUILD_MARKER": str(marker), "REPROMATRIX_CACHE": str(cache), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    process = cli("run", "--backend", "local", "--jobs", "2", "--results", str(tmp_path / "r"), cwd=project, env=env,
                  start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.is_file() or not marker.read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.1)
    backend_pid = int(marker.read_text())
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "unexpected" not in stdout, stdout + stderr
    assert [line for line in stderr.splitlines() if line.startswith("interrupted")], stderr
    deadline = time.monotonic() + 10  # SIGKILLed with its group: gone as soon as the kernel reaps it
    while alive(backend_pid):
        assert time.monotonic() < deadline, "the project's build backend outlived the run"
        time.sleep(0.1)
    assert [p.name for p in (cache / "wheels").glob(".build-*")] == []  # uv's scratch folder
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list(Layout(tmp_path / "r").record_files()) == []  # nothing measured: nothing made up
    assert not list((tmp_path / "r").rglob(".attempts"))


def fake_results(folder: Path) -> Path:
    """A real results folder of two cells, made by the real runner and harness on the fake backend."""
    cells = (Cell(NEWEST_TF, "cpu"), Cell(NEWEST_TF, "cpu", onednn=False))
    matrix = Matrix(cells=cells, scenarios=("init", "seeded_init"), repeats=2, seed=42, timeout=60.0,
                    docker=DockerSettings(), source=Path("matrix.toml"))  # fmt: skip
    runner.run_matrix(FakeBackend(), matrix, list(cells), runner.RunOptions(folder, jobs=2))
    return folder


# Not writable even by root: /proc takes no new folders, and nothing can be made under a file.
UNWRITABLE = ["/proc/repromatrix-report", "{tmp}/a-file/report"]


@pytest.mark.parametrize("out", UNWRITABLE)
def test_an_unwritable_out_is_one_line_and_exit_2_before_anything_runs(tmp_path, out):
    (tmp_path / "a-file").write_text("")
    out = out.format(tmp=tmp_path)
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "repromatrix", "matrix", "--backend", "local", "--tf", NEWEST_TF, "--device", "cpu",
         "--results", str(tmp_path / "r"), "--out", out],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "REPROMATRIX_CACHE": str(cache)},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {out}: cannot write there (") and "pass a folder you can write to" in line
    assert not (tmp_path / "r").exists() and not cache.exists()  # no run started, no virtualenv made
    assert done.stdout == ""


@pytest.mark.parametrize("out", UNWRITABLE)
def test_report_into_an_unwritable_out_is_one_line_and_exit_2(tmp_path, out):
    (tmp_path / "a-file").write_text("")
    out = out.format(tmp=tmp_path)
    results = fake_results(tmp_path / "r")
    done = subprocess.run([sys.executable, "-m", "repromatrix", "report", str(results), "--out", out], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {out}: cannot write there (")


def test_a_writable_out_that_does_not_exist_yet_is_not_made_before_the_report_is(tmp_path):
    from repromatrix import results

    out = tmp_path / "new" / "deeper" / "report"
    results.ensure_writable(out, "--out", keep=False)
    assert not (tmp_path / "new").exists()


def test_sigterm_while_the_report_renders_is_130_and_leaves_no_half_written_file(tmp_path):
    results = fake_results(tmp_path / "r")
    # Many records make rendering take long enough to be caught in it.
    for copy in range(60):
        for cell in ("tf2.21.0-cpu-onednn1-det0", "tf2.21.0-cpu-onednn0-det0"):
            subprocess.run(["cp", "-r", str(results / cell), str(results / f"{cell}-copy{copy}")], check=True)
    out = tmp_path / "report"
    process = cli("report", str(results), "--out", str(out), start_new_session=True)
    time.sleep(1.5)  # past start-up, into reading and rendering (the whole render takes several seconds)
    assert process.poll() is None, "the report was done before the signal; make it larger"
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("interrupted (SIGTERM)")
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert [name for name in left if name.startswith(".")] == []  # no temporary file of an atomic write
