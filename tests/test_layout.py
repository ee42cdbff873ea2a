"""One name per place: the typed cell is the axis table, every module is found one standard way."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from repromatrix import locks, options
from repromatrix.harness import axes
from repromatrix.harness.axes import Cell, Knobs
from repromatrix.matrix import REPO_ROOT, DockerSettings

WALK = """
import json, pkgutil, sys
import repromatrix
names = sorted(m.name for m in pkgutil.walk_packages(repromatrix.__path__, "repromatrix."))
hooks = [type(f).__module__ for f in sys.meta_path
         if "repromatrix" in type(f).__module__ or "editable" in type(f).__module__]
print(json.dumps({"modules": names, "hooks": hooks}))
"""


def test_the_cell_is_the_axis_table():
    fields = dataclasses.fields(Cell)
    assert tuple(f.name for f in fields) == axes.NAMES  # the table's order, which cell ids follow
    for f in fields:
        table = axes.BY_NAME[f.name].default
        assert (f.default is dataclasses.MISSING) == (table is None), f.name
        if table is not None:
            assert f.default == table, f.name


def test_the_knobs_are_the_run_time_axes():
    assert tuple(f.name for f in dataclasses.fields(Knobs)) == tuple(a.name for a in axes.AT_RUN_TIME)
    cell = Cell("2.21.0", "cpu", onednn=False, cpus=1, cpu_isa="avx2")
    assert cell.knobs.env() == {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert Knobs().env() == {}  # nothing given: TensorFlow's own defaults


def test_every_axis_says_how_it_reaches_a_cell_and_carries_its_hook():
    for axis in axes.AXES:
        assert axis.reaches, axis.name
        assert (axis.tf_call is not None) == (axes.Reach.TF_CALL in axis.reaches), axis.name
        assert (axis.in_harness is not None) == (axes.Reach.AFFINITY in axis.reaches), axis.name
        if axes.Reach.ENV in axis.reaches:
            assert any(axis.env(value) for value in axis.values or (axis.default,)), axis.name


def test_docker_settings_are_the_docker_table_of_the_options():
    declared = {option.name: option.default for option in options.in_table("docker")}
    assert {f.name: f.default for f in dataclasses.fields(DockerSettings)} == declared


def walk(cwd: Path, python: str = sys.executable) -> dict[str, list[str]]:
    done = subprocess.run([python, "-c", WALK], cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_the_checkout_finds_every_module_with_no_import_hook(tmp_path):
    here, there = walk(REPO_ROOT), walk(tmp_path)  # from the checkout's own folder, and from elsewhere
    assert here == there
    assert here["hooks"] == []
    assert {"repromatrix.harness.records", "repromatrix.scenarios.common", "repromatrix.reporting.analysis"} <= set(
        here["modules"]
    )


@pytest.mark.slow  # builds the wheel (setuptools from the package index)
def test_the_wheel_and_the_checkout_hold_the_same_modules(tmp_path):
    subprocess.run([locks.uv_binary(), "build", "--wheel", "--quiet", "--out-dir", str(tmp_path), str(REPO_ROOT)],
                   check=True, env=locks.uv_env())  # fmt: skip
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = [name for name in archive.namelist() if name.endswith(".py")]
    assert {name.split("/")[0] for name in archive.namelist() if not name.startswith("repromatrix-")} == {"repromatrix"}
    # repromatrix/harness/records.py → repromatrix.harness.records; a package by its __init__
    in_wheel = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in files
        if name != "repromatrix/__init__.py"
    )
    assert in_wheel == walk(tmp_path)["modules"]
