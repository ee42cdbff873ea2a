"""Your training script as it is: a project whose train.py knows nothing of repromatrix, run in every cell.

The project (tests/command_project/) is copied to a folder of its own and run from there, as a user
runs `repromatrix matrix` in theirs: its matrix.toml declares the commands ([run.commands]).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repromatrix.harness import records
from repromatrix.harness.layout import Layout
from tests.conftest import IN_CI, NEWEST_TF

pytestmark = pytest.mark.tf

SOURCE = Path(__file__).parent / "command_project"
CELL = f"tf{NEWEST_TF}-cpu-onednn1-det0"
TRAINING = f"""
[matrix]
tf = ["{NEWEST_TF}"]
device = ["cpu"]

[run]
repeats = 2
timeout = 300

[run.commands.train]
command = ["python", "train.py", "--seed", "{{seed}}", "--out", "{{out}}"]
variants = ["seeded", "unseeded"]
expect = {{ seeded = "identical", unseeded = "differs" }}
"""
TF_SEED_ONLY = """
[run.commands.tf_seed_only]
command = ["python", "train_tf_seed_only.py", "--seed", "{seed}", "--out", "{out}"]
variants = ["seeded"]
"""
BROKEN = f"""
[matrix]
tf = ["{NEWEST_TF}"]
device = ["cpu"]

[run]
repeats = 2
# A hang costs this per repeat (a fork parent's TF import is not counted in it).
timeout = 30

[run.commands.fails]
command = ["python", "broken.py", "fails", "--out", "{{out}}"]
variants = ["unseeded"]
expect = {{ unseeded = "any" }}

[run.commands.writes_nothing]
command = ["python", "broken.py", "writes-nothing", "--out", "{{out}}"]
variants = ["unseeded"]
expect = {{ unseeded = "any" }}

[run.commands.hangs]
command = ["python", "broken.py", "hangs", "--out", "{{out}}"]
variants = ["unseeded"]
expect = {{ unseeded = "any" }}

[run.commands.train]
command = ["python", "train.py", "--seed", "{{seed}}", "--out", "{{out}}", "--epochs", "1"]
variants = ["seeded"]
"""


def project(tmp_path: Path, matrix_toml: str) -> Path:
    """The test project in a folder of its own, readable by a container's unprivileged user."""
    folder = tmp_path / "my_project"
    shutil.copytree(SOURCE, folder, ignore=shutil.ignore_patterns("__pycache__", "matrix.toml"))
    (folder / "matrix.toml").write_text(matrix_toml)
    for path in (tmp_path, folder):
        path.chmod(0o755)
    return folder


def repromatrix_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UV_NATIVE_TLS": "1"}
    return subprocess.run([sys.executable, "-m", "repromatrix", *args], cwd=folder, capture_output=True, text=True,
                          timeout=1800, env=env)  # fmt: skip


def require_engine() -> None:
    from repromatrix.backends.container import DockerEngine

    reason = DockerEngine().reachable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def record(folder: Path, scenario: str, variant: str, repeat: int) -> records.Record:
    return records.Record.read(Layout(folder / "results" / "matrix").cell(CELL).record(scenario, variant, repeat))


def check_training(folder: Path, report: dict) -> None:
    """Seeded reproducible, unseeded varying, variables named by file and layer, first divergence by epoch."""
    variants = {(v["scenario"], v["variant"]): v for v in report["variants"]}
    seeded, unseeded = variants[("train", "seeded")], variants[("train", "unseeded")]
    assert seeded["run_to_run"] == "identical" and seeded["claim"] == "held", seeded
    assert unseeded["run_to_run"] == "varies" and unseeded["claim"] == "held", unseeded
    for variant in (seeded, unseeded):
        assert variant["in_process"] == "does not exist for a command"
    # Every array of every file, named by file and by the layer inside it.
    outputs = set(record(folder, "train", "seeded", 0).outputs)
    for name in ("model.keras:dense/kernel", "model.keras:dense_1/bias", "model.weights.h5:dense/kernel",
                 "preds.npy", "epoch.01:checkpoints/epoch-01.weights.h5:dense/kernel",
                 "epoch.03:checkpoints/epoch-03.weights.h5:dense_1/kernel"):  # fmt: skip
        assert name in outputs, sorted(outputs)
    first = record(folder, "train", "seeded", 0)
    assert first.in_process_identical is None
    assert first.extra["command"]["epochs"] == {f"checkpoints/epoch-0{n}.weights.h5": n for n in (1, 2, 3)}
    assert first.extra["command"]["ran"] == ["python", "train.py", "--seed", "42", "--out", "{out}"]
    assert record(folder, "train", "unseeded", 0).extra["command"]["ran"] == ["python", "train.py", "--out", "{out}"]
    # Unseeded, the initial weights differ: the first checkpoint already parts, and the report says where.
    assert unseeded["first_divergence"].startswith(
        "first difference at epoch 1 (checkpoints/epoch-01.weights.h5), variables `dense/bias`, `dense/kernel`"
    ), unseeded["first_divergence"]


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_an_unmodified_training_script_runs_from_its_folder(tmp_path, backend, tf_python):
    tf_python(NEWEST_TF)
    if backend == "docker":
        require_engine()
    folder = project(tmp_path, TRAINING + (TF_SEED_ONLY if backend == "local" else ""))
    done = repromatrix_in(folder, "matrix", "--backend", backend, "--out", "report")
    report = json.loads((folder / "report" / "report.json").read_text())
    check_training(folder, report)
    if backend == "docker":
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert record(folder, "train", "seeded", 0).environment["image"]["backend"] == "docker"
        return
    # Seeding tf.random.set_seed alone does not seed Keras's initializers: broken, with the weights named.
    assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 expectation broke" in done.stderr
    variants = {(v["scenario"], v["variant"]): v for v in report["variants"]}
    tf_only = variants[("tf_seed_only", "seeded")]
    assert tf_only["run_to_run"] == "varies" and tf_only["claim"] == "broken"
    (reason,) = tf_only["claim_reasons"]
    # The predictions and the layers' weights named first, by file and layer.
    assert reason.startswith("expected identical run to run (declared in EXPECT), but varied: preds.npy 2 distinct")
    assert "; model.keras:dense/bias 2 distinct among 2 processes" in reason, reason


def test_a_command_that_fails_writes_nothing_or_hangs_is_an_error_per_repeat(tmp_path, tf_python):
    tf_python(NEWEST_TF)
    folder = project(tmp_path, BROKEN)
    done = repromatrix_in(folder, "matrix", "--backend", "local", "--out", "report")
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]  # some cells' repeats in error
    for repeat in (0, 1):
        fails = record(folder, "fails", "unseeded", repeat)
        assert fails.status == records.Status.ERROR
        said = (
            "the command `python broken.py fails --out {out}` failed (exit code 1): FileNotFoundError: /data/train.csv"
        )
        assert fails.message == said, fails.message
        assert "loading data from /data/train.csv" in fails.stderr_tail
        nothing = record(folder, "writes_nothing", "unseeded", repeat)
        assert nothing.status == records.Status.ERROR
        assert nothing.message.startswith("the command `python broken.py writes-nothing --out {out}` exited 0 but "
                                          "wrote nothing under {out}"), nothing.message  # fmt: skip
        hangs = record(folder, "hangs", "unseeded", repeat)
        assert hangs.status == records.Status.ERROR and hangs.message.startswith("timed out after 30 s"), hangs.message
        assert "waiting for a lock that never comes" in hangs.stderr_tail
    # The other command in the same cell finished, and is measured.
    assert record(folder, "train", "seeded", 0).is_ok and record(folder, "train", "seeded", 1).is_ok
    # Nothing the hanging command started is left running.
    assert "broken.py hangs" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


FORMATS = """
import json, os, sys
import numpy as np
import tensorflow as tf
from repromatrix.harness import saved_files

out = sys.argv[1]
model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(3), tf.keras.layers.Dense(1)])
model.compile("adam", "mse")
model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=1, verbose=0)
model.save(os.path.join(out, "model.keras"))
checkpoint = tf.train.Checkpoint(step=tf.Variable(7, dtype=tf.int64), w=tf.Variable([1.5, 2.5]))
checkpoint.write(os.path.join(out, "ck", "ckpt"))
module = tf.Module()
module.v = tf.Variable([[1.0, 2.0]])
tf.saved_model.save(module, os.path.join(out, "saved"))
np.savez(os.path.join(out, "arrays.npz"), x=np.arange(2))
saved = saved_files.read_folder(__import__("pathlib").Path(out), np, tf)
print(json.dumps({"names": sorted(saved.arrays), "files": saved.units}))
"""


def test_every_format_is_read_by_file_and_path_inside_it(tmp_path, tf_python):
    from repromatrix.backends import code_root

    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(code_root()), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([tf_python(NEWEST_TF), "-c", FORMATS, str(out)], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    names = set(found["names"])
    assert {"model.keras:dense/kernel", "model.keras:dense_1/bias", "model.keras:optimizer/vars/0"} <= names
    assert {"ck/ckpt:step/.ATTRIBUTES/VARIABLE_VALUE", "ck/ckpt:w/.ATTRIBUTES/VARIABLE_VALUE"} <= names
    assert "saved/variables/variables:v/.ATTRIBUTES/VARIABLE_VALUE" in names  # a SavedModel's variables
    assert "bytes:saved/saved_model.pb" in names and "arrays.npz:x" in names
    assert found["files"]["ck/ckpt"] == "checkpoint" and found["files"]["model.keras"] == "keras"
