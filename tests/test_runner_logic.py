"""The runner's plan, reuse, fill and resume logic on a fake backend: no TensorFlow, no Docker, fast."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from repromatrix import cleanup, runner
from repromatrix.errors import EngineUnavailableError, ResultsBusyError
from repromatrix.harness import exchange, fileio, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import Layout, Manifest
from repromatrix.matrix import DockerSettings, Matrix
from repromatrix.reporting.load import load
from repromatrix.results import exclusive
from tests.fakes import FakeBackend

CELL = Cell("2.21.0", "cpu")
OTHER = Cell("2.21.0", "cpu", onednn=False)


def matrix(repeats: int = 2, scenarios: tuple[str, ...] = ("init", "seeded_init"), spread_seeds: int = 0) -> Matrix:
    # No spread runs by default here: these tests count the repeats of the verdicts (tests/test_matter.py
    # runs the spread runs).
    return Matrix(
        cells=(CELL, OTHER), scenarios=scenarios, repeats=repeats, seed=42, timeout=60.0,
        docker=DockerSettings(), source=Path("matrix.toml"), spread_seeds=spread_seeds,
    )  # fmt: skip


def run(backend: FakeBackend, results: Path, cells=(CELL,), **options) -> list[runner.CellOutcome]:
    return runner.run_matrix(backend, options.pop("m", matrix()), list(cells), runner.RunOptions(results, **options))


def record(results: Path, cell: Cell, name: str, variant: str, repeat: int) -> records.Record:
    return records.Record.read(Layout(results).cell(cell.id).record(name, variant, repeat))


@pytest.fixture(autouse=True)
def _not_stopping():
    cleanup.stopping.clear()
    yield
    cleanup.stopping.clear()


def test_resume_runs_only_what_is_missing_and_a_second_run_nothing(tmp_path):
    backend = FakeBackend()
    [first] = run(backend, tmp_path)
    assert (first.state, first.started, first.counts) == ("ran", 4, {"ok": 4})
    Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 1).unlink()

    again = FakeBackend()
    [second] = run(again, tmp_path)
    assert again.started == ["init-unseeded #1"] and second.started == 1
    third = FakeBackend()
    [up_to_date] = run(third, tmp_path)
    assert up_to_date.state == "up to date" and third.started == [] and third.prepared == []
    assert not (tmp_path / CELL.id / ".attempts").exists() or not any((tmp_path / CELL.id / ".attempts").iterdir())


def test_a_new_environment_reruns_everything(tmp_path):
    run(FakeBackend(key="image-1"), tmp_path)
    rebuilt = FakeBackend(key="image-2")
    [outcome] = run(rebuilt, tmp_path)
    assert outcome.started == 4 and record(tmp_path, CELL, "init", "unseeded", 0).reuse_key


def test_failed_and_lost_repeats_get_error_records_and_measured_ones_stay(tmp_path):
    run(FakeBackend(), tmp_path)
    before = record(tmp_path, CELL, "seeded_init", "seeded", 0)
    Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 0).unlink()
    Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 1).unlink()
    broken = FakeBackend(error_repeats={"init-unseeded #0"}, lose_repeats={"init-unseeded #1"})
    [outcome] = run(broken, tmp_path)
    assert outcome.state == "error" and outcome.counts == {"ok": 2, "error": 2}
    failed = record(tmp_path, CELL, "init", "unseeded", 0)
    assert failed.status == "error" and "RuntimeError: boom" in failed.message
    lost = record(tmp_path, CELL, "init", "unseeded", 1)
    assert lost.status == "error" and "left no record" in lost.message and "killed by SIGKILL" in lost.message
    assert record(tmp_path, CELL, "seeded_init", "seeded", 0) == before  # measured, untouched


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_cell_that_cannot_be_built_fails_alone(tmp_path, jobs):
    backend = FakeBackend(fail_prepare={OTHER.id: "cannot resolve tensorflow-cpu==2.99.0"})
    outcomes = run(backend, tmp_path, cells=(CELL, OTHER), jobs=jobs)
    assert [o.state for o in outcomes] == ["ran", "error"]
    failed = record(tmp_path, OTHER, "init", "unseeded", 0)
    assert failed.status == "error" and "2.99.0" in failed.message and failed.stderr_tail == "build log tail"


def test_skipped_cells_say_why_and_unchanged_skips_are_not_rewritten(tmp_path):
    backend = FakeBackend(skip={CELL.id: "no NVIDIA GPU on this host"})
    [outcome] = run(backend, tmp_path)
    assert outcome.state == "skipped" and outcome.counts == {"skipped": 4}
    path = Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 0)
    assert records.Record.read(path).message == "no NVIDIA GPU on this host"
    os.utime(path, (1, 1))
    run(backend, tmp_path)
    assert path.stat().st_mtime == 1  # same bytes: not written again


def test_interrupted_run_starts_nothing_and_writes_no_made_up_errors(tmp_path):
    cleanup.stopping.set()
    backend = FakeBackend()
    [outcome] = run(backend, tmp_path)
    assert outcome.state == "interrupted" and backend.started == []
    assert list(Layout(tmp_path).record_files()) == []


def test_damaged_arrays_are_measured_again_and_left_out_of_the_report(tmp_path):
    run(FakeBackend(), tmp_path)
    layout = Layout(tmp_path).cell(CELL.id)
    npz = records.arrays_path(layout.record("seeded_init", "seeded", 0))
    npz.write_bytes(npz.read_bytes()[:50])  # truncated
    empty = records.arrays_path(layout.record("seeded_init", "seeded", 1))
    empty.write_bytes(b"")
    loading = load([tmp_path])
    assert len(loading.records) == 2
    assert sum("arrays unreadable" in w for w in loading.warnings) == 2
    rerun = FakeBackend()
    run(rerun, tmp_path)
    assert sorted(rerun.started) == ["seeded_init-seeded #0", "seeded_init-seeded #1"]
    assert len(load([tmp_path]).records) == 4


def test_arrays_that_do_not_match_their_digests_are_not_reused(tmp_path):
    run(FakeBackend(), tmp_path)
    path = Layout(tmp_path).cell(CELL.id).record("seeded_init", "seeded", 0)
    arrays = records.load_arrays(records.arrays_path(path))
    arrays["model1.predictions"] = np.zeros(4, np.float32)
    fileio.write_npz(records.arrays_path(path), arrays)
    rerun = FakeBackend()
    run(rerun, tmp_path)
    assert rerun.started == ["seeded_init-seeded #0"]


@pytest.mark.parametrize(
    "mutation, problem",
    [
        ({"outputs": None}, "names no outputs"),
        ({"cell": None, "outputs": {}}, "names no outputs"),
        ({"repeat": "zero"}, "repeat must be an integer"),
        ({"cell": "tf2"}, "cell must be an object"),
        ({"status": "fine"}, "unknown status"),
    ],
)
def test_malformed_but_parseable_records_are_warnings(tmp_path, mutation, problem):
    import json

    run(FakeBackend(), tmp_path)
    path = Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 0)
    raw = json.loads(path.read_text())
    raw.update(mutation)
    path.write_text(json.dumps(raw))
    loading = load([tmp_path])
    assert len(loading.records) == 3
    assert any(problem in warning for warning in loading.warnings), loading.warnings


def test_records_outside_the_plan_are_left_out_and_counted(tmp_path):
    run(FakeBackend(), tmp_path, m=matrix(repeats=3))
    run(FakeBackend(), tmp_path, m=matrix(repeats=2, scenarios=("seeded_init",)))
    loading = load([tmp_path])
    assert {(r.record.scenario, r.record.repeat) for r in loading.records} == {("seeded_init", 0), ("seeded_init", 1)}
    assert loading.left_out_of_plan == 4 and "4 records outside" in loading.warnings[-1]


def test_a_second_run_into_the_same_folder_is_refused_naming_the_holder(tmp_path):
    with exclusive(Layout(tmp_path)), pytest.raises(ResultsBusyError, match=r"is in use by pid \d+ .*--wait"):
        run(FakeBackend(), tmp_path)
    [outcome] = run(FakeBackend(), tmp_path)  # released
    assert outcome.state == "ran"


def test_records_of_another_backend_are_not_overwritten(tmp_path):
    run(FakeBackend(name="docker"), tmp_path)
    before = {p: p.read_bytes() for _, p in Layout(tmp_path).record_files()}
    with pytest.raises(ResultsBusyError, match="made by the docker backend and this run uses local"):
        run(FakeBackend(name="local"), tmp_path)
    assert {p: p.read_bytes() for _, p in Layout(tmp_path).record_files()} == before


@pytest.mark.parametrize("manifest", ["missing", "garbage"])
def test_without_a_readable_manifest_the_records_still_name_their_backend(tmp_path, manifest):
    run(FakeBackend(name="local"), tmp_path)
    layout = Layout(tmp_path)
    if manifest == "missing":
        layout.manifest.unlink()
    else:
        layout.manifest.write_text("{not json")
    before = {p: p.read_bytes() for _, p in layout.record_files()}
    with pytest.raises(ResultsBusyError, match="made by the local backend and this run uses docker"):
        run(FakeBackend(name="docker"), tmp_path)
    assert {p: p.read_bytes() for _, p in layout.record_files()} == before
    [outcome] = run(FakeBackend(name="local"), tmp_path)  # the same backend goes on, and the manifest is rewritten
    assert outcome.state == "up to date" and Manifest.read(layout.manifest).backend == "local"


def test_a_run_removes_what_dead_runs_left_in_the_folder(tmp_path):
    run(FakeBackend(), tmp_path)
    cell = Layout(tmp_path).cell(CELL.id)
    litter = [
        cell.root / "init-unseeded" / ".0.npz.k2j3h4.tmp.npz",  # a half-written npz
        cell.root / "init-unseeded" / ".1.json.x8y7z6.tmp",
        cell.root / "..verified.json.abc123.tmp",
        cell.attempt_dir("deadbeef0000") / "plan.json",
        cell.attempt_dir("deadbeef0000") / "fork" / "parent-1.err",
    ]
    for path in litter:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    [outcome] = run(FakeBackend(), tmp_path)
    assert outcome.state == "up to date"
    assert [p for p in litter if p.exists()] == [] and not (cell.root / ".attempts").exists()
    assert len(list(cell.record_files())) == 4  # records untouched


def test_a_harness_whose_run_ended_measures_nothing_more_and_blames_no_scenario(tmp_path):
    backend = FakeBackend(abandon_after="init-unseeded #0")
    run(backend, tmp_path)
    assert backend.started == ["init-unseeded #0"]  # it stopped before the next repeat
    first = record(tmp_path, CELL, "init", "unseeded", 0)
    assert first.status == "ok"  # measured before the end: kept
    assert not (tmp_path / CELL.id / ".attempts").exists()  # no summary written into a removed folder


def test_a_busy_folder_says_how_long_its_holder_has_run():
    from datetime import UTC, datetime, timedelta

    from repromatrix.results import _how_long

    started = (datetime.now(UTC) - timedelta(minutes=12)).isoformat(timespec="seconds")
    assert _how_long(f"pid {os.getpid()} (host:1:2), started {started}").startswith(", running 12 min")
    assert _how_long("another run") == ""


def test_a_fatal_error_in_a_cell_ends_the_run_with_its_own_code(tmp_path):
    backend = FakeBackend(raise_in_run=EngineUnavailableError("no Docker engine answers"))
    with pytest.raises(EngineUnavailableError):
        run(backend, tmp_path, cells=(CELL, OTHER), jobs=2)


def test_an_unwritable_results_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ResultsBusyError, match="cannot write there"):
        run(FakeBackend(), blocker / "results")


def test_records_get_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        run(FakeBackend(), tmp_path)
    finally:
        os.umask(previous)
    path = Layout(tmp_path).cell(CELL.id).record("init", "unseeded", 0)
    assert path.stat().st_mode & 0o777 == 0o644
    assert records.arrays_path(path).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / CELL.id).stat().st_mode & 0o002 == 0  # not world-writable


def test_progress_comes_from_the_harness_summary_file(tmp_path):
    from repromatrix import progress

    summary = tmp_path / "summary.json"
    exchange.Summary(planned=6, ok=2, error=1).write(summary)
    monitor = progress.Monitor(live=False)
    monitor.track(CELL.id, summary, planned=6)
    [line] = monitor._lines()
    assert line.startswith(f"{CELL.id}: 3/6 repeats, ") and "elapsed, about" in line
    monitor.done(CELL.id)
    assert monitor._lines() == []


def test_tensorflows_refusal_of_unseeded_ops_under_op_determinism_is_a_skip_with_its_reason(tmp_path):
    from repromatrix.harness.launch import judge_exit

    stderr = "Traceback ...\nRuntimeError: Random ops require a seed to be set when determinism is enabled. ..."
    outcome = judge_exit(1, stderr, tmp_path / "0.json")
    assert outcome.status == "skipped" and "op determinism" in outcome.message
    assert judge_exit(1, "RuntimeError: boom", tmp_path / "0.json").status == "error"


def test_a_measured_refusal_is_recorded_as_a_skip_and_not_run_again(tmp_path):
    refusing = FakeBackend(refused_repeats={"init-unseeded #0", "init-unseeded #1"})
    [outcome] = run(refusing, tmp_path)
    assert outcome.state == "ran" and outcome.counts == {"ok": 2, "skipped": 2}
    assert "op determinism" in record(tmp_path, CELL, "init", "unseeded", 0).message
    again = FakeBackend(refused_repeats=refusing.refused_repeats)
    [second] = run(again, tmp_path)
    assert second.state == "up to date" and again.started == []


def test_wait_says_who_holds_the_folder_and_since_when_until_it_is_free(tmp_path, monkeypatch):
    import threading

    from repromatrix import progress, results

    said: list[str] = []
    monkeypatch.setattr(progress, "say", said.append)
    got = threading.Event()

    def wait_for_it() -> None:
        with results.exclusive(Layout(tmp_path), wait=True, poll_s=0.01, notice_s=0.1):
            got.set()

    with exclusive(Layout(tmp_path)):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        deadline = time.monotonic() + 10
        while len(said) < 3:  # said again and again while it waits
            assert time.monotonic() < deadline, said
            time.sleep(0.01)
        assert not got.is_set()
    waiter.join(timeout=10)
    assert got.is_set()
    first = said[0]
    assert first.startswith(f"waiting for --results {tmp_path}: in use by pid {os.getpid()} (")
    assert ", started 20" in first and ", running 0 min" in first


def _tmpfs(folder: Path, size: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def test_a_results_folder_that_fills_mid_run_is_one_line_and_keeps_what_was_measured(tmp_path):
    from repromatrix.errors import ResultsFullError

    small = tmp_path / "small"
    _tmpfs(small, "64k")
    try:
        with pytest.raises(ResultsFullError) as raised:
            run(FakeBackend(), small / "r", cells=(CELL, OTHER), jobs=2, m=matrix(repeats=6))
        message = raised.value.message
        assert message.startswith(f"--results {small / 'r'}: no room left to write records (No space left on device)")
        assert " of 24 repeats measured; free space there (or pass another --results folder) and rerun to resume" in (
            message
        )
        measured = [p for _, p in Layout(small / "r").record_files() if records.read_if_valid(p)]
        assert measured and all(records.Record.read(p).is_ok for p in measured)  # whole records only, all kept
        assert not list((small / "r").rglob(".attempts")) and not list(
            Layout(small / "r").cell(CELL.id).temporary_files()
        )
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_base_image_the_engine_cannot_have_is_one_line_and_exit_3_before_any_build(monkeypatch):
    import docker
    from repromatrix.backends.container import DockerBackend
    from repromatrix.errors import BaseImageUnavailableError

    class Engine:
        def __init__(self) -> None:
            self.pulled: list[str] = []

        def inspect_image(self, name: str) -> dict:
            raise docker.errors.ImageNotFound(name)

        def info(self) -> dict:
            return {"NCPU": 2}

        def pull(self, repository: str, tag: str, stream: bool, decode: bool):
            self.pulled.append(f"{repository}:{tag}")
            raise docker.errors.APIError("500", explanation='Get "https://registry-1.docker.io/v2/": no such host')

    backend = DockerBackend(settings=DockerSettings(base_image="python:3.11-slim"))
    backend._api = engine = Engine()
    monkeypatch.setattr(backend, "_build", lambda *args, **kwargs: pytest.fail("built"))
    with pytest.raises(BaseImageUnavailableError) as raised:
        backend.require_bases([CELL, OTHER])
    assert raised.value.return_code == 3 and engine.pulled == ["python:3.11-slim"]  # tried once, not per cell
    assert raised.value.message == (
        "the base image python:3.11-slim cannot be had: this engine does not have it and cannot pull it "
        '(Get "https://registry-1.docker.io/v2/": no such host); build one with `nox -s base_image` and set '
        "REPROMATRIX_BASE_IMAGE to it (or [docker].base_image), or use --backend local"
    )
    Engine.inspect_image = lambda self, name: {"Id": "sha256:base"}  # present: nothing is pulled
    engine.pulled.clear()
    backend.require_bases([CELL, OTHER])
    assert engine.pulled == []
