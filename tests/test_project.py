"""Your real project in the matrix: its package, a dependency, helper modules and a data file, in every cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repromatrix.harness import records
from repromatrix.harness.layout import Layout
from repromatrix.matrix import REPO_ROOT
from tests.conftest import NEWEST_TF, OLDEST_TF

pytestmark = pytest.mark.tf

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mypkg"
version = "0.1.0"
dependencies = ["einops>=0.7"]
"""
MODEL = '''"""The user's model, in their package."""
import einops
import tensorflow as tf


def build():
    return tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(3), tf.keras.layers.Dense(1)])


def flat(x):
    return einops.rearrange(x, "b c -> b c")
'''
PEER = '''"""A helper beside the scenarios, imported by both."""


def prepare(inputs):
    return inputs.astype("float32")
'''
SCENARIO = '''"""The user's model from their package, on their own inputs."""
from pathlib import Path

import numpy as np

{import_peer}
from mypkg.model import build, flat

from repromatrix.scenarios import common

VARIANTS = ("seeded",)
INPUTS = np.load(Path(__file__).parent / "data" / "inputs.npy")


def run(variant, seed):
    outputs = {{}}
    for name in ("model1", "model2"):
        common.seed_everything(seed)
        outputs[name] = common.model_outputs(build(), flat(_peer.prepare(INPUTS)))
    return outputs
'''
MATRIX = """
[matrix]
tf = [{tfs}]
[run]
scenarios = ["absolute_peer", "relative_peer"]
scenario_paths = ["{scenarios}"]
project = "{project}"
repeats = 2
spread_seeds = 0
{requirements}
"""


def make_project(root: Path, tfs: list[str], requirements: str = "", absolute: bool = False) -> Path:
    """pyproject + src/mypkg + my_scenarios/{two scenarios, _peer.py, data/inputs.npy} + matrix.toml."""
    (root / "src" / "mypkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "src" / "mypkg" / "__init__.py").write_text("")
    (root / "src" / "mypkg" / "model.py").write_text(MODEL)
    scenarios = root / "my_scenarios"
    (scenarios / "data").mkdir(parents=True)
    (scenarios / "_peer.py").write_text(PEER)
    (scenarios / "absolute_peer.py").write_text(SCENARIO.format(import_peer="import _peer"))
    (scenarios / "relative_peer.py").write_text(SCENARIO.format(import_peer="from . import _peer"))
    np.save(scenarios / "data" / "inputs.npy", np.arange(24, dtype=np.float64).reshape(6, 4) / 24)
    where = (lambda p: str(root / p)) if absolute else (lambda p: p)
    (root / "matrix.toml").write_text(MATRIX.format(
        tfs=", ".join(f'"{tf}"' for tf in tfs), scenarios=where("my_scenarios"), project=where("."),
        requirements=requirements,
    ))  # fmt: skip
    for path in [root, *root.rglob("*")]:  # readable by a container's unprivileged user
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def run_matrix(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run([sys.executable, "-m", "repromatrix", "matrix", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1800, env=env)  # fmt: skip


def started(done: subprocess.CompletedProcess) -> int:
    return int(done.stdout.split("scenario processes started: ")[-1].split(";")[0])


@pytest.mark.parametrize("backend", ["local", "docker"])
@pytest.mark.parametrize("where", ["project folder", "checkout"])
def test_a_project_with_a_package_a_dependency_helpers_and_data_runs_in_every_cell(
    tmp_path, tf_python, backend, where, request
):
    if backend == "docker":
        request.getfixturevalue("docker_backend")  # skipped without an engine (a failure in CI)
    tf_python(NEWEST_TF)
    project = make_project(tmp_path / "proj", [NEWEST_TF], absolute=where == "checkout")
    args = ["--backend", backend, "--results", str(tmp_path / "r"), "--out", str(tmp_path / "report")]
    if where == "checkout":  # run from this repository, whose own scenarios/ must not shadow the staged one
        args += ["--matrix", str(project / "matrix.toml")]
    cwd = REPO_ROOT if where == "checkout" else project
    done = run_matrix(cwd, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    paths = [p for _, p in Layout(tmp_path / "r").record_files()]
    assert len(paths) == 4
    for path in paths:
        record = records.Record.read(path)
        assert record.status == "ok", record.message
        extras = record.environment["extras"]
        assert "mypkg==0.1.0" in extras and any(pin.startswith("einops==") for pin in extras), extras
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {v["run_to_run"] for v in report["variants"]} == {"identical"}


def test_an_edited_helper_is_measured_again_and_nothing_changed_is_reused(tmp_path, tf_python):
    tf_python(NEWEST_TF)
    project = make_project(tmp_path / "proj", [NEWEST_TF])
    args = ["--backend", "local", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "report")]
    first = run_matrix(project, *args)
    assert first.returncode == 0 and started(first) == 4, first.stdout[-3000:] + first.stderr[-3000:]
    again = run_matrix(project, *args)
    assert again.returncode == 0 and started(again) == 0, again.stdout[-2000:]
    (project / "my_scenarios" / "_peer.py").write_text(PEER + "\n# an edit to the helper alone\n")
    edited = run_matrix(project, *args)
    assert edited.returncode == 0 and started(edited) == 4, edited.stdout[-2000:]


def test_a_requirement_that_cannot_live_beside_one_cells_tf_fails_that_cell_alone(tmp_path, tf_python):
    tf_python(OLDEST_TF)
    tf_python(NEWEST_TF)
    # TF 2.12 pins numpy 1.x; numpy 2 cannot be installed beside it without changing its lock.
    project = make_project(tmp_path / "proj", [OLDEST_TF, NEWEST_TF], requirements='requirements = ["numpy>=2"]')
    done = run_matrix(project, "--backend", "local", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"))
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    errors = [line for line in done.stdout.splitlines() if line.startswith(f"error: tf{OLDEST_TF}")]
    assert errors and "cannot be installed beside TensorFlow 2.12.1" in errors[0], done.stdout[-3000:]
    by_cell = {}
    for cell_id, path in Layout(tmp_path / "r").record_files():
        by_cell.setdefault(cell_id, set()).add(records.Record.read(path).status)
    assert by_cell == {f"tf{OLDEST_TF}-cpu-onednn1-det0": {"error"}, f"tf{NEWEST_TF}-cpu-onednn1-det0": {"ok"}}


def test_a_scenario_folder_past_the_size_limit_is_one_line(tmp_path):
    project = make_project(tmp_path / "proj", [NEWEST_TF])
    with open(project / "my_scenarios" / "data" / "huge.bin", "wb") as handle:
        handle.truncate(51 * 1024 * 1024)
    done = run_matrix(project, "--backend", "local", "--results", str(tmp_path / "r"))
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "MiB of files to stage into every cell, more than the 50 MiB allowed (largest: data/huge.bin" in line


FOUR_CELLS = f"""
[matrix]
tf = ["{OLDEST_TF}", "{NEWEST_TF}"]
onednn = [true, false]
[run]
scenarios = ["seeded_init"]
project = "."
repeats = 2
spread_seeds = 0
"""


def test_a_project_in_four_cells_with_two_jobs_measures_every_cell_run_after_run(tmp_path, tf_python):
    """The shape that lost a cell to a race: [run] project, four cells, two at a time, in fresh runs."""
    tf_python(OLDEST_TF)
    tf_python(NEWEST_TF)
    project = make_project(tmp_path / "proj", [NEWEST_TF])
    (project / "matrix.toml").write_text(FOUR_CELLS)
    for attempt in range(2):  # each a fresh orchestrator, as the race needs; --force: every cell measured
        done = run_matrix(project, "--backend", "local", "--jobs", "2", "--force", "--results", str(tmp_path / "r"),
                          "--out", str(tmp_path / "report"))  # fmt: skip
        assert done.returncode == 0, f"run {attempt}: " + done.stdout[-3000:] + done.stderr[-3000:]
        assert "unexpected" not in done.stdout and "Traceback" not in done.stderr
        assert started(done) == 8 and "4 ran" in done.stdout, done.stdout[-2000:]
    by_cell: dict[str, set[str]] = {}
    for cell_id, path in Layout(tmp_path / "r").record_files():
        by_cell.setdefault(cell_id, set()).add(records.Record.read(path).status)
    assert len(by_cell) == 4 and set(map(frozenset, by_cell.values())) == {frozenset({"ok"})}
