"""The runner on the local backend with real TensorFlow: resume, reuse, kill -9, failing cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repromatrix import matrix, runner
from repromatrix.backends.local import LocalBackend
from repromatrix.harness import records
from repromatrix.harness.layout import Layout
from repromatrix.matrix import REPO_ROOT
from tests.conftest import NEWEST_TF, process_token, processes_with, repromatrix_cli

pytestmark = pytest.mark.tf

SMALL = f"""
[matrix]
tf = ["{NEWEST_TF}"]
device = ["cpu", "cuda"]
onednn = [true]
[run]
scenarios = ["init", "seeded_init"]
repeats = 2
spread_seeds = 0  # these tests count repeats
"""


@pytest.fixture
def small_matrix(tmp_path, tf_python) -> Path:
    tf_python(NEWEST_TF)  # the cached virtualenv exists before any timing-sensitive step
    path = tmp_path / "matrix.toml"
    path.write_text(SMALL)
    return path


def records_of(results: Path) -> list[Path]:
    return sorted(path for _, path in Layout(results).record_files())


def test_second_run_with_nothing_changed_starts_no_process(small_matrix, tmp_path):
    loaded = matrix.load(small_matrix)
    options = runner.RunOptions(results=tmp_path / "results", jobs=2)
    first = runner.run_matrix(LocalBackend(), loaded, list(loaded.cells), options)
    assert [o.state for o in first] == ["ran", "skipped"]
    assert sum(o.started for o in first) == 4
    before = {p: records.Record.read(p).process_id for p in records_of(options.results)}

    second = runner.run_matrix(LocalBackend(), loaded, list(loaded.cells), options)
    assert sum(o.started for o in second) == 0
    assert [o.state for o in second] == ["up to date", "skipped"]
    after = {p: records.Record.read(p).process_id for p in records_of(options.results)}
    assert after == before

    forced = runner.run_matrix(
        LocalBackend(), loaded, list(loaded.cells)[:1], runner.RunOptions(options.results, force=True)
    )
    assert forced[0].started == 4


def test_cuda_cell_is_skipped_with_the_reason_on_a_host_without_gpu(small_matrix, tmp_path):
    loaded = matrix.load(small_matrix)
    cuda = [c for c in loaded.cells if c.device == "cuda"]
    [outcome] = runner.run_matrix(LocalBackend(), loaded, cuda, runner.RunOptions(tmp_path / "r"))
    assert outcome.state == "skipped" and "no NVIDIA GPU" in outcome.message
    for path in records_of(tmp_path / "r"):
        record = records.Record.read(path)
        assert record.status == "skipped" and "no NVIDIA GPU" in record.message
        assert record.outputs == {}


def test_kill_9_during_a_run_then_resume_loses_and_duplicates_nothing(small_matrix, tmp_path):
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "repromatrix", "run", "--matrix", str(small_matrix),
        "--backend", "local", "--results", str(results), "--device", "cpu",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not any(records.Record.read(p).status == "ok" for p in records_of(results)):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Kill the runner, its harness and the scenario process in flight, all at once.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(records_of(results))
    assert 1 <= done_before < 4

    resumed = repromatrix_cli(*command[3:])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    started = int(resumed.stdout.split("scenario processes started: ")[1].split(";")[0])
    assert started == 4 - done_before
    paths = records_of(results)
    assert [p.relative_to(results).as_posix() for p in paths] == [
        f"tf{NEWEST_TF}-cpu-onednn1-det0/{s}/{i}.json" for s in ("init-unseeded", "seeded_init-seeded") for i in (0, 1)
    ]
    for path in paths:
        record = records.Record.read(path)
        assert record.status == "ok"
        assert path.with_suffix(".npz").is_file()


def test_a_version_without_a_wheel_fails_alone(tmp_path, tf_python):
    tf_python(NEWEST_TF)
    path = tmp_path / "matrix.toml"
    path.write_text(f'[matrix]\ntf = ["2.99.0", "{NEWEST_TF}"]\n[run]\nscenarios = ["seeded_init"]\nrepeats = 1\n')
    done = repromatrix_cli("run", "--matrix", str(path), "--backend", "local", "--results", str(tmp_path / "r"))
    assert done.returncode == 4, done.stdout + done.stderr
    error_lines = [line for line in done.stdout.splitlines() if line.startswith("error: tf2.99.0")]
    assert error_lines and "cannot resolve tensorflow-cpu==2.99.0" in error_lines[0]
    assert "1 of 2 cells had errors (tf2.99.0-cpu-onednn1-det0)" in done.stderr
    bad = records.Record.read(tmp_path / "r" / "tf2.99.0-cpu-onednn1-det0" / "seeded_init-seeded" / "0.json")
    assert bad.status == "error" and "2.99.0" in bad.message
    good = records.Record.read(tmp_path / "r" / f"tf{NEWEST_TF}-cpu-onednn1-det0" / "seeded_init-seeded" / "0.json")
    assert good.status == "ok"


def test_a_virtualenv_changed_by_hand_is_a_new_environment_and_is_made_again(tmp_path):
    backend = LocalBackend(cache=tmp_path / "cache")
    cell = matrix.Cell(NEWEST_TF, "cpu")
    prepared = backend.prepare(cell, verbose=False)
    assert backend.environment_key(cell) == prepared.key
    site = next(Path(prepared.handle).parents[1].glob("lib/python*/site-packages"))
    (site / "sitecustomize.py").write_text("import os\n")  # runs in every process of that virtualenv
    changed = backend.environment_key(cell)
    assert changed != prepared.key and "changed" in changed  # no record made before is reused now
    again = backend.prepare(cell, verbose=False)  # made again from the lock
    assert again.key == prepared.key and not (site / "sitecustomize.py").exists()
    assert backend.environment_key(cell) == prepared.key


def test_the_wheel_claims_no_generic_top_level_name(tmp_path):
    import zipfile

    from repromatrix import locks

    # uv, a dependency of repromatrix: nox's virtualenvs have no pip.
    done = subprocess.run(
        [locks.uv_binary(), "build", "--wheel", "--quiet", "--out-dir", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=600, env=locks.uv_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("repromatrix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"repromatrix", wheel.name.split("-py3")[0] + ".dist-info"}
    for packaged in ("repromatrix/harness/records.py", "repromatrix/scenarios/cnn_training.py",
                     "repromatrix/reporting/analysis.py", "repromatrix/docker/Dockerfile.pip",
                     "repromatrix/docker/locks/tf2.21.0-cpu.txt", "repromatrix/matrix.toml"):  # fmt: skip
        assert packaged in names, packaged


def test_sigterm_of_a_local_run_leaves_no_scenario_process_behind(small_matrix, tmp_path):
    results = tmp_path / "results"
    token = process_token()
    process = subprocess.Popen(
        [sys.executable, "-m", "repromatrix", "run", "--matrix", str(small_matrix), "--backend", "local",
         "--device", "cpu", "--isolation", "fork", "--results", str(results)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **token},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(records.Record.read(p).is_ok for p in records_of(results) if records.read_if_valid(p)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # the orchestrator alone, as `timeout` or a CI cancel sends it
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "SIGTERM" in stderr
    time.sleep(1)
    assert processes_with(token) == []  # its harness, fork parents and scenario processes are gone
