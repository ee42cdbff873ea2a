"""The environment axes (issue 33): keras, packages pins, python, tf = "nightly".

Fast tests of the axis logic, the skips and their reasons, the per-cell locks (the resolver faked) and CI's
plan; one TF test that a tf-keras cell really runs Keras 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from repromatrix import cli, envaxes, locks, matrix, nightly, runner
from repromatrix.backends import cell_env
from repromatrix.backends.local import LocalBackend, python_for
from repromatrix.errors import CellSkipped, ConfigurationError
from repromatrix.harness import axes, records, worker
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import Layout
from tests.conftest import REPO_ROOT, repromatrix_cli
from tests.fakes import FakeBackend

PIN = "2.23.0.dev20261026"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


# -- keras -------------------------------------------------------------------------------------------


def test_the_default_keras_python_and_packages_leave_ids_as_they_were():
    assert Cell("2.21.0", "cpu").id == "tf2.21.0-cpu-onednn1-det0"
    assert Cell("2.21.0", "cpu", keras="tf-keras").id == "tf2.21.0-cpu-onednn1-det0-tfkeras"
    assert Cell("2.21.0", "cpu", python="3.13").id == "tf2.21.0-cpu-onednn1-det0-py3.13"
    assert Cell("2.21.0", "cpu", packages=(("numpy", "2.1.3"),)).id == "tf2.21.0-cpu-onednn1-det0-numpy2.1.3"
    # A record made before these axes existed names the same cell as a new one at the defaults.
    assert Cell.from_record({"tf": "2.21.0", "device": "cpu"}) == Cell("2.21.0", "cpu")
    pinned = Cell("2.21.0", "cpu", packages=(("numpy", "2.1.3"),))
    assert Cell.from_record(json.loads(json.dumps(pinned.params()))) == pinned


def test_tf_keras_sets_legacy_keras_in_every_process_of_the_cell_and_changes_its_environment():
    legacy = Cell("2.21.0", "cpu", keras="tf-keras")
    assert cell_env(legacy, "/code")["TF_USE_LEGACY_KERAS"] == "1"
    assert "TF_USE_LEGACY_KERAS" not in cell_env(Cell("2.21.0", "cpu"), "/code")
    assert legacy.environment != Cell("2.21.0", "cpu").environment  # its own virtualenv or image
    assert legacy.knobs == Cell("2.21.0", "cpu").knobs  # not a run-time knob


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        (Cell("2.15.1", "cpu", keras="tf-keras"), "TF 2.15.1 ships Keras 2 as tf.keras itself"),
        (Cell("2.12.1", "cpu", keras="tf-keras"), "exists from TF 2.16 on"),
        (Cell(PIN, "cpu", keras="tf-keras"), "needs a TensorFlow release"),
        (Cell("2.21.0", "cpu", recipe="official", keras="tf-keras"), "use recipe = pip"),
        (Cell("2.16.2", "cpu", keras="tf-keras"), None),
        (Cell("2.21.0", "cpu", keras="tf-keras"), None),
        (Cell("2.15.1", "cpu"), None),  # keras = "3" is the release's own tf.keras: Keras 2 on 2.15
    ],
)
def test_keras_combinations_that_do_not_exist_are_skipped_with_the_reason(cell, reason):
    found = envaxes.skip_reason(cell)
    assert (found is None) == (reason is None)
    if reason:
        assert reason in found


def test_lock_names_gain_a_part_only_off_the_defaults():
    assert locks.lock_name("2.21.0", "cpu") == "tf2.21.0-cpu.txt"
    assert locks.lock_name("2.21.0", "cpu", "3.11", "tf-keras") == "tf2.21.0-cpu-tfkeras.txt"
    assert locks.lock_name("2.21.0", "cuda", "3.13", "3") == "tf2.21.0-cuda-py3.13.txt"
    assert (locks.LOCK_DIR / "tf2.21.0-cpu-tfkeras.txt").is_file()  # committed beside the release's own


def test_the_committed_tf_keras_lock_is_the_release_lock_plus_tf_keras_alone():
    base = locks.blocks((locks.LOCK_DIR / "tf2.21.0-cpu.txt").read_text())
    legacy = locks.blocks((locks.LOCK_DIR / "tf2.21.0-cpu-tfkeras.txt").read_text())
    assert set(legacy) - set(base) == {"tf-keras"}
    assert {name: legacy[name] for name in base} == base
    assert "tensorflow" not in legacy  # tf-keras's own dependency would install a second TF over tensorflow-cpu
    assert legacy["tf-keras"].startswith("tf-keras==2.21.")


def test_records_name_the_keras_that_ran():
    class Module:
        def __init__(self, name: str, version: str | None) -> None:
            self.__name__ = name
            if version:
                self.__version__ = version

    class TF:
        keras = Module("keras._tf_keras.keras", "3.15.1")

    assert worker._keras_version(TF) == "3.15.1"
    fake_tf_keras = Module("tf_keras", "2.21.0")
    sys.modules["tf_keras"] = fake_tf_keras  # type: ignore[assignment]
    try:
        TF.keras = Module("tf_keras.api._v2.keras", None)  # tf_keras's tf.keras has no __version__
        assert worker._keras_version(TF) == "2.21.0"
    finally:
        del sys.modules["tf_keras"]


# -- packages -------------------------------------------------------------------------------------------


def test_package_pins_are_an_axis_of_the_design(tmp_path):
    pins = 'packages = { numpy = ["2.1.3", "2.4.6"], "ml_dtypes" = ["0.5.1", "0.6.0"] }\n'
    one = matrix.load(write(tmp_path, f'[matrix]\ndesign = "one-at-a-time"\ntf = ["2.21.0"]\ndevice = ["cpu"]\n{pins}'))
    assert [c.packages for c in one.cells] == [
        (("ml-dtypes", "0.5.1"), ("numpy", "2.1.3")),
        (("ml-dtypes", "0.5.1"), ("numpy", "2.4.6")),
        (("ml-dtypes", "0.6.0"), ("numpy", "2.1.3")),
    ]
    assert one.reasons[one.cells[1].id] == "changes numpy to numpy 2.4.6"
    full = matrix.load(write(tmp_path, '[matrix]\ntf = ["2.21.0", "2.15.1"]\ndevice = ["cpu"]\n'
                                       'packages = { numpy = ["1.26.4", "2.1.3"] }\n'))  # fmt: skip
    assert len(full.cells) == 4 and {c.packages for c in full.cells} == {(("numpy", "1.26.4"),), (("numpy", "2.1.3"),)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("packages = 3", "[matrix].packages = 3 is not valid; a table"),
        ('packages = { tensorflow = ["2.21.0"] }', "TensorFlow and Keras are the tf and keras axes"),
        ('packages = { onednn = ["1"] }', "a PyPI project name (not an axis name)"),
        ('packages = { numpy = [">=2"] }', "a list of exact versions"),
        ("packages = { numpy = [] }", "a list of exact versions"),
        ('packages = { numpy = ["2.1.3", "2.1.3"] }', "values must not repeat"),
        ('keras = ["2"]', "[matrix].keras = '2' is not valid; allowed: 3, tf-keras"),
        ('python = ["3"]', 'write a Python minor version, e.g. "3.13"'),
    ],
)
def test_bad_environment_axes_are_one_clear_error(tmp_path, text, expected):
    with pytest.raises(ConfigurationError) as caught:
        matrix.load(write(tmp_path, f"[matrix]\n{text}\n"))
    assert expected in caught.value.message and caught.value.message.startswith("matrix.toml: ")


LOCK = """# tensorflow-cpu==2.21.0 for Python 3.11
ml-dtypes==0.6.0 \\
    --hash=sha256:aa
    # via tensorflow-cpu
numpy==2.4.6 \\
    --hash=sha256:bb
    # via tensorflow-cpu
tensorflow-cpu==2.21.0 \\
    --hash=sha256:cc
"""


def test_a_pin_replaces_its_entry_and_nothing_else(tmp_path, monkeypatch):
    asked: list[tuple[str, str]] = []

    def compile_(stdin: str, python: str, index_url: str, *extra: str) -> tuple[int, str, str]:
        constraints = Path(extra[extra.index("-c") + 1]).read_text()
        asked.append((stdin, constraints))
        return 0, LOCK.replace("numpy==2.4.6 \\\n    --hash=sha256:bb", "numpy==2.1.3 \\\n    --hash=sha256:dd"), ""

    monkeypatch.setattr(locks, "_compile", compile_)
    lock = tmp_path / "base.txt"
    lock.write_text(LOCK)
    monkeypatch.setattr(locks, "find_or_create", lambda *args, **kwargs: lock)
    made = locks.cell_lock(Cell("2.21.0", "cpu", packages=(("numpy", "2.1.3"),)), tmp_path)
    [(stdin, constraints)] = asked
    assert stdin == "tensorflow-cpu==2.21.0\nnumpy==2.1.3\n"
    assert "numpy" not in constraints and "ml-dtypes==0.6.0" in constraints  # everything else held to the lock
    entries = locks.blocks(made.read_text())
    assert entries["numpy"].startswith("numpy==2.1.3") and entries["ml-dtypes"] == locks.blocks(LOCK)["ml-dtypes"]


def test_a_pin_the_resolver_rules_out_skips_the_cell_with_its_reason(tmp_path, monkeypatch):
    said = (
        "  × No solution found when resolving dependencies:\n  ╰─▶ Because tensorflow-cpu==2.15.1 depends on "
        "numpy>=1.23.5,<2.0.0 and you require numpy==2.1.3, we can conclude that your requirements are unsatisfiable.\n"
    )
    monkeypatch.setattr(locks, "_compile", lambda *args: (1, "", said))
    lock = tmp_path / "base.txt"
    lock.write_text(LOCK)
    monkeypatch.setattr(locks, "find_or_create", lambda *args, **kwargs: lock)
    cell = Cell("2.15.1", "cpu", packages=(("numpy", "2.1.3"),))
    with pytest.raises(locks.Unresolvable) as caught:
        locks.cell_lock(cell, tmp_path)
    assert "numpy==2.1.3 cannot be installed beside TF 2.15.1" in caught.value.message
    assert "depends on numpy>=1.23.5,<2.0.0" in caught.value.message
    with pytest.raises(CellSkipped):  # what the backend makes of it
        LocalBackend(cache=tmp_path)._lock(cell)
    # A network failure is no proof: an error, not a skip.
    monkeypatch.setattr(locks, "_compile", lambda *args: (2, "", "error: Failed to fetch: connection refused\n"))
    with pytest.raises(locks.LockError) as failed:
        locks.cell_lock(cell, tmp_path)
    assert not isinstance(failed.value, locks.Unresolvable)
    # Nor is a version the index does not have at all (a typo): the cell fails, it is not skipped.
    absent = (
        "  × No solution found when resolving dependencies:\n  ╰─▶ Because there is no version of numpy==9.9.9 and "
        "you require numpy==9.9.9, we can conclude that your requirements are unsatisfiable.\n"
    )
    monkeypatch.setattr(locks, "_compile", lambda *args: (1, "", absent))
    with pytest.raises(locks.LockError) as typo:
        locks.cell_lock(cell, tmp_path)
    assert not isinstance(typo.value, locks.Unresolvable) and "no version of numpy==9.9.9" in typo.value.message


class SkippingBackend(FakeBackend):
    def environment_key(self, cell: Cell) -> str:
        raise CellSkipped(cell.id, "numpy==2.1.3 cannot be installed beside TF 2.15.1: because ...")


def test_the_runner_records_a_cell_whose_lock_cannot_exist_as_skipped_and_runs_the_others(tmp_path):
    from tests.test_runner_logic import matrix as fake_matrix

    loaded = fake_matrix(repeats=1, scenarios=("init",))
    bad = Cell("2.15.1", "cpu", packages=(("numpy", "2.1.3"),))
    [outcome] = runner.run_matrix(SkippingBackend(), loaded, [bad], runner.RunOptions(tmp_path))
    assert outcome.state == runner.CellState.SKIPPED
    made = records.Record.read(Layout(tmp_path).cell(bad.id).record("init", "unseeded", 0))
    assert made.status == records.Status.SKIPPED and "cannot be installed beside TF 2.15.1" in made.message
    [ran] = runner.run_matrix(FakeBackend(), loaded, [Cell("2.21.0", "cpu")], runner.RunOptions(tmp_path))
    assert ran.state == runner.CellState.RAN


# -- python --------------------------------------------------------------------------------------------


def test_a_python_this_machine_lacks_is_skipped_never_run_on_another():
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert python_for(running) == (sys.executable, "")
    path, why = python_for("3.99")
    assert path == "" and why.startswith("no Python 3.99 found here by uv's discovery (uv python find 3.99:")
    backend = LocalBackend()
    assert backend.skip_reason(Cell("2.21.0", "cpu", python="3.99")) == why
    assert backend.skip_reason(Cell("2.21.0", "cpu")) is None


@pytest.mark.parametrize(
    ("base", "python", "image", "reason"),
    [
        ("python:3.11-slim", "3.13", "python:3.13-slim", ""),
        ("repromatrix/debian-python:bookworm", "3.13", "repromatrix/debian-python:trixie", ""),
        ("repromatrix/debian-python:bookworm", "3.11", "repromatrix/debian-python:bookworm", ""),
        ("repromatrix/debian-python:bookworm", "3.12", "", "no Debian base image has Python 3.12"),
        ("registry.example/my-base:1", "3.13", "", "the base image registry.example/my-base:1 has Python 3.11"),
    ],
)
def test_docker_cells_take_a_base_image_per_python(base, python, image, reason):
    found, why = envaxes.docker_base(Cell("2.21.0", "cpu", python=python), base)
    assert found == image and (reason in why if reason else why == "")


# -- nightly ----------------------------------------------------------------------------------------


def test_nightly_is_pinned_when_the_matrix_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv(nightly.NIGHTLY_ENV, f"tf-nightly=={PIN}")
    loaded = matrix.load(write(tmp_path, '[matrix]\ntf = ["2.21.0", "nightly"]\ndevice = ["cpu"]\n'))
    assert [c.tf for c in loaded.cells] == ["2.21.0", PIN]
    assert loaded.cells[1].id == f"tf{PIN}-cpu-onednn1-det0"  # the date is in the id
    assert [c.tf for c in matrix.select(loaded.cells, tf=["nightly"])] == [PIN]
    assert locks.requirement(PIN, "cpu") == f"tf-nightly=={PIN}"
    assert axes.BY_NAME["tf"].order(PIN) > axes.BY_NAME["tf"].order("2.21.0")  # the release before it pairs with it
    monkeypatch.setenv(nightly.NIGHTLY_ENV, "yesterday")
    with pytest.raises(ConfigurationError, match="not a nightly pin"):
        matrix.load(write(tmp_path, '[matrix]\ntf = ["nightly"]\n'))


def test_the_newest_nightly_is_asked_once_a_day_and_the_newer_package_wins(tmp_path, monkeypatch):
    calls: list[str] = []

    class Done:
        def __init__(self, stdout: str) -> None:
            self.returncode, self.stdout, self.stderr = 0, stdout, ""

    def run(command, stdin=None, env=None, quiet=True):
        calls.append(stdin.strip())
        version = "2.22.0.dev20260905" if stdin.strip() == "tf-nightly-cpu" else PIN
        return Done(f"{stdin.strip()}=={version}\n")

    monkeypatch.setattr(nightly.cleanup, "run", run)
    assert nightly.newest(tmp_path, today="2026-12-03") == nightly.Pin("tf-nightly", PIN)
    assert nightly.newest(tmp_path, today="2026-12-03").date == "20261026"
    assert calls == ["tf-nightly-cpu", "tf-nightly"]  # the second ask read what the first remembered


def plan_jobs(tmp_path: Path, *args: str) -> list[dict[str, str]]:
    out = tmp_path / "cells.json"
    assert cli.main(["plan", "--format", "json", "--output", str(out), *args]) == 0
    return json.loads(out.read_text())


def test_the_weekly_plan_adds_one_nightly_cell_beside_the_newest_release(tmp_path, monkeypatch):
    monkeypatch.setenv(nightly.NIGHTLY_ENV, f"tf-nightly=={PIN}")
    plain = plan_jobs(tmp_path, "--runners", "ubuntu-24.04,ubuntu-24.04-arm")
    jobs = plan_jobs(tmp_path, "--nightly", "--runners", "ubuntu-24.04,ubuntu-24.04-arm")
    extra = [job for job in jobs if job not in plain]
    assert extra == [{
        "id": f"tf{PIN}-cpu-onednn1-det0", "session": f"cell(tf{PIN}-cpu-onednn1-det0)", "device": "cpu",
        "why": f"nightly beside 2.21.0 (baseline (onednn=on), tf 2.21.0→{PIN})", "runner": "ubuntu-24.04",
        "artifact": f"results-tf{PIN}-cpu-onednn1-det0-ubuntu-24.04", "tf_nightly": f"tf-nightly=={PIN}",
    }]  # fmt: skip
    assert all("tf_nightly" not in job for job in plain)
    # Its job's nox has the session the plan names (the workflow hands it the pin).
    listed = subprocess.run([sys.executable, "-m", "nox", "-l", "--json", "-k", "cell"], cwd=REPO_ROOT,
                            capture_output=True, text=True, env={**__import__("os").environ})  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert extra[0]["session"] in {s["session"] for s in json.loads(listed.stdout)}


def test_the_workflow_runs_the_nightly_with_the_pin_its_plan_made():
    workflow = (REPO_ROOT / ".github" / "workflows" / "matrix.yml").read_text()
    assert "nox -s plan -- --format json --nightly" in workflow
    assert "REPROMATRIX_TF_NIGHTLY: ${{ matrix.cell.tf_nightly }}" in workflow


def test_nightly_beside_needs_a_release(tmp_path, monkeypatch):
    monkeypatch.setenv(nightly.NIGHTLY_ENV, PIN)
    loaded = matrix.load(write(tmp_path, '[matrix]\ntf = ["nightly"]\ndevice = ["cpu"]\n'))
    with pytest.raises(ConfigurationError, match="no TensorFlow release to put the nightly beside"):
        envaxes.beside_newest(loaded, PIN)


# -- real TensorFlow ---------------------------------------------------------------------------------


@pytest.mark.tf
def test_a_tf_keras_cell_runs_keras_2_and_its_records_say_so(tmp_path):
    toml = write(tmp_path, '[matrix]\ntf = ["2.21.0"]\ndevice = ["cpu"]\nkeras = ["tf-keras"]\n[run]\nrepeats = 1\n')
    results = tmp_path / "results"
    done = repromatrix_cli("run", "--matrix", str(toml), "--backend", "local", "--scenario", "init",
                           "--results", str(results), env={"UV_NATIVE_TLS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cell = Cell("2.21.0", "cpu", keras="tf-keras")
    made = records.Record.read(Layout(results).cell(cell.id).record("init", "unseeded", 0))
    assert made.is_ok, made.message
    assert made.environment["keras"].split(".")[0] == "2"  # tf_keras, not the installed Keras 3
    assert made.environment["tensorflow"] == "2.21.0" and made.cell["keras"] == "tf-keras"


def test_docker_builds_a_tf_keras_cell_from_its_own_lock_and_a_python_cell_from_its_own_base():
    from repromatrix.backends.container import DockerBackend
    from repromatrix.matrix import DockerSettings

    backend = DockerBackend(settings=DockerSettings(base_image="repromatrix/debian-python:bookworm"))
    legacy, plain = Cell("2.21.0", "cpu", keras="tf-keras"), Cell("2.21.0", "cpu")
    assert (
        backend.context_files(legacy)["requirements.lock"] == (locks.LOCK_DIR / "tf2.21.0-cpu-tfkeras.txt").read_bytes()
    )
    assert backend.image_tag(legacy) != backend.image_tag(plain)  # an image of its own
    assert backend.build_args(Cell("2.21.0", "cpu", python="3.13"))["BASE_IMAGE"] == "repromatrix/debian-python:trixie"
    assert backend.build_args(plain)["BASE_IMAGE"] == "repromatrix/debian-python:bookworm"
    # Skipped before the engine is asked anything (no engine is needed to say so).
    assert "no Debian base image has Python 3.12" in backend.skip_reason(Cell("2.21.0", "cpu", python="3.12"))


def test_another_pythons_lock_keeps_the_default_pythons_versions_where_it_can(tmp_path, monkeypatch):
    asked: list[tuple[str, ...]] = []
    unresolvable = "error: No solution found when resolving dependencies\n  cause: numpy==2.4.6 has no cp399 wheel\n"
    answers = [(1, "", unresolvable), (0, "", "")]

    def compile_(stdin: str, python: str, index_url: str, *extra: str) -> tuple[int, str, str]:
        asked.append(extra)
        Path(extra[extra.index("-o") + 1]).write_text("numpy==2.5.5 \\\n    --hash=sha256:ee\n")
        return answers.pop(0)

    monkeypatch.setattr(locks, "_compile", compile_)
    made = locks.generate("2.21.0", "cpu", tmp_path / "tf2.21.0-cpu-py3.99.txt", python="3.99")
    held, free = asked
    assert held[held.index("-c") + 1] == str(locks.LOCK_DIR / "tf2.21.0-cpu.txt") and "-c" not in free
    assert "resolved afresh: tf2.21.0-cpu.txt's versions cannot all be had for Python 3.99" in made.read_text()
