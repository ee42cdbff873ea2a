"""Your own model in the matrix: a scenario folder outside this repository, declared expectations, flags, shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repromatrix.harness import records
from repromatrix.harness.catalog import discover
from repromatrix.harness.layout import Layout
from tests.conftest import IN_CI, NEWEST_TF

pytestmark = pytest.mark.tf

SEEDED_ONCE = '''"""Seeding once before two builds: the builds differ, yet every process gives the same bits."""
import tensorflow as tf

from repromatrix.scenarios import common

VARIANTS = ("seeded_once", "seeded_wrong")
# seeded_wrong behaves the same, but declares (wrongly) that its builds are identical in-process.
EXPECT = {
    "seeded_once": {"in_process": "differs", "run_to_run": "identical"},
    "seeded_wrong": {"in_process": "identical"},
}
SEED = 200


def run(variant, seed):
    images = common.fixed_data(4, 8, 8, 1)
    common.seed_everything(seed)
    outputs = {}
    for name in ("model1", "model2"):
        model = tf.keras.Sequential(
            [tf.keras.Input(shape=(8, 8, 1)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)]
        )
        outputs[name] = common.model_outputs(model, images)
    return outputs


if __name__ == "__main__":
    raise SystemExit(common.standalone(run, VARIANTS, seed=SEED))
'''
PROJECT_MATRIX = f"""
[matrix]
tf = ["{NEWEST_TF}"]
[run]
scenarios = ["seeded_once_demo"]
scenario_paths = ["my_scenarios"]
repeats = 2
"""


@pytest.fixture
def project(tmp_path, tf_python) -> Path:
    """A user's project: its own matrix.toml and scenario folder, nowhere near this repository."""
    tf_python(NEWEST_TF)
    (tmp_path / "my_scenarios").mkdir()
    (tmp_path / "my_scenarios" / "seeded_once_demo.py").write_text(SEEDED_ONCE)
    (tmp_path / "matrix.toml").write_text(PROJECT_MATRIX)
    # Readable by the container's unprivileged user (`shell` mounts it read-only); pytest makes it 0700.
    for path in (tmp_path, tmp_path / "my_scenarios"):
        path.chmod(0o755)
    return tmp_path


def repromatrix_in(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repromatrix", *args], cwd=project, capture_output=True, text=True,
                          timeout=1800, env={**os.environ, **(env or {})})  # fmt: skip


def docker_env() -> dict[str, str]:
    return {key: value for key in ("REPROMATRIX_BASE_IMAGE", "REPROMATRIX_EXTRA_CA") if (value := os.environ.get(key))}


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_a_scenario_folder_outside_the_repository_runs_on_both_backends(project, backend):
    if backend == "docker":
        from repromatrix.backends.container import DockerEngine

        reason = DockerEngine().reachable()
        if reason is not None:
            if IN_CI:
                pytest.fail(f"CI=true but {reason}")
            pytest.skip(reason)
    done = repromatrix_in(project, "matrix", "--backend", backend, "--out", "report", env=docker_env())
    # seeded_wrong's declaration breaks: exit code 5, after every report file is written.
    assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 expectation broke" in done.stderr
    report = json.loads((project / "report" / "report.json").read_text())
    claims = {v["variant"]: v for v in report["variants"]}
    assert claims["seeded_once"]["claim"] == "held"
    assert claims["seeded_once"]["in_process"] == "differs" and claims["seeded_once"]["run_to_run"] == "identical"
    assert claims["seeded_wrong"]["claim"] == "broken"
    [finding] = [f for f in report["findings"] if f["severity"] == "finding"]
    assert finding["scenario"] == "seeded_once_demo-seeded_wrong" and "declared in EXPECT" in finding["text"]
    record = records.Record.read(
        Layout(project / "results" / "matrix")
        .cell(f"tf{NEWEST_TF}-cpu-onednn1-det0")
        .record("seeded_once_demo", "seeded_once", 0)
    )
    assert record.seed == 200 and record.expect == {"in_process": "differs", "run_to_run": "identical"}


def test_a_name_clash_is_one_clear_line(project):
    (project / "my_scenarios" / "init.py").write_text('VARIANTS = ("seeded",)\n\ndef run(variant, seed):\n    pass\n')
    done = repromatrix_in(project, "run", "--backend", "local")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: scenario 'init' is defined twice:") and "rename one" in line


def test_a_malformed_declaration_is_broken_in_the_listing(tmp_path):
    (tmp_path / "bad_expect.py").write_text(
        'VARIANTS = ("seeded",)\nEXPECT = {"seeded": {"in_process": "maybe"}}\n\ndef run(variant, seed):\n    pass\n'
    )
    (tmp_path / "bad_seed.py").write_text('VARIANTS = ("seeded",)\nSEED = "x"\n\ndef run(variant, seed):\n    pass\n')
    found = discover(tmp_path)
    assert "EXPECT['seeded']['in_process'] = 'maybe'; allowed: identical, differs, any" in found["bad_expect"].problem
    assert "SEED must be an integer literal" in found["bad_seed"].problem


def test_fixed_data_takes_any_shape_and_makes_labels_from_its_own_generator(tf_python):
    code = (
        "import numpy as np\nfrom repromatrix.scenarios import common\n"
        "np.random.seed(1); a = common.fixed_data(2, 4, 4, 3); np.random.seed(2); b = common.fixed_data(2, 4, 4, 3)\n"
        "labels = common.fixed_data(50, stream=4, classes=10)\n"
        "print(a.shape, a.dtype, (a == b).all(), labels.dtype, labels.min() >= 0, labels.max() < 10)\n"
    )
    from repromatrix.backends import code_root

    root = code_root()  # as a cell holds it: the scenarios, and the harness whose seed rule they use
    done = subprocess.run([tf_python(NEWEST_TF), "-c", code], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(2,", "4,", "4,", "3)", "float32", "True", "int64", "True", "True"]


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_shell_runs_a_command_in_the_cells_environment(project, backend):
    if backend == "docker":
        from repromatrix.backends.container import DockerEngine

        if (reason := DockerEngine().reachable()) is not None:
            if IN_CI:
                pytest.fail(f"CI=true but {reason}")
            pytest.skip(reason)
    cell = f"tf{NEWEST_TF}-cpu-onednn1-det0"
    probe = "import os, tensorflow as tf; print(tf.__version__, os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    done = repromatrix_in(project, "shell", "--cell", cell, "--backend", backend, "--", "python", "-c", probe,
                          env=docker_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"{NEWEST_TF} 1"
    standalone = repromatrix_in(project, "shell", "--cell", cell, "--backend", backend, "--",
                                "python", "my_scenarios/seeded_once_demo.py", env=docker_env())  # fmt: skip
    assert standalone.returncode == 0, standalone.stderr[-2000:]
    assert "[seeded_once]" in standalone.stdout and "Are outputs identical?: False" in standalone.stdout


def test_repeats_seed_and_scenario_flags_override_the_matrix_for_one_run(project):
    results = project / "flags"
    repository_matrix = str(Path(__file__).parents[1] / "matrix.toml")
    done = repromatrix_in(project, "run", "--backend", "local", "--matrix", repository_matrix,
                          "--tf", NEWEST_TF, "--cell", f"tf{NEWEST_TF}-cpu-onednn1-det0", "--scenario", "seeded_init",
                          "--repeats", "1", "--seed", "7", "--spread-seeds", "0",
                          "--results", str(results))  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    paths = [p for _, p in Layout(results).record_files()]
    assert [p.parent.name for p in paths] == ["seeded_init-seeded"] and len(paths) == 1
    assert records.Record.read(paths[0]).seed == 7
    again = repromatrix_in(project, "run", "--backend", "local", "--matrix", repository_matrix,
                           "--cell", f"tf{NEWEST_TF}-cpu-onednn1-det0", "--scenario", "seeded_init",
                           "--repeats", "1", "--seed", "8", "--spread-seeds", "0",
                           "--results", str(results))  # fmt: skip
    assert "scenario processes started: 1" in again.stdout  # another seed: measured again, not reused
    assert records.Record.read(paths[0]).seed == 8
