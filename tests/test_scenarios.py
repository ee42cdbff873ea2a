"""The three scenarios with real TensorFlow, oldest (Keras 2) and newest (Keras 3) supported versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repromatrix.harness import records
from repromatrix.harness.catalog import discover
from repromatrix.harness.layout import CellLayout
from tests.conftest import HANGING, NEWEST_TF, OLDEST_TF, RAISING, REPEATS, harness, harness_plan, write_scenario

pytestmark = pytest.mark.tf


BUILT_IN = [("init", "unseeded"), ("seeded_init", "seeded")] + [
    (name, v) for name in ("dropout_training", "cnn_training") for v in ("unseeded", "seeded")
]


def read_all(out: Path, scenario: str, variant: str) -> list[records.Record]:
    return [records.Record.read(CellLayout(out).record(scenario, variant, i)) for i in range(REPEATS)]


def predictions(made: list[records.Record]) -> set[str]:
    return {r.outputs["model1.predictions"].sha256 for r in made}


def test_every_repeat_is_a_fresh_process_with_a_valid_record(run_all):
    version, out, done = run_all
    assert "scenario processes started: 18" in done.stdout
    ids = set()
    for scenario, variant in BUILT_IN:
        for record in read_all(out, scenario, variant):
            assert record.status == "ok"
            assert record.environment["tensorflow"] == version
            names = set(record.outputs)
            for model in ("model1", "model2"):
                assert {f"{model}.predictions", f"{model}.weights"} <= names
                assert any(name.startswith(f"{model}.layer.00.") for name in names)
            if scenario in ("dropout_training", "cnn_training"):
                last = {"dropout_training": 5, "cnn_training": 2}[scenario]  # the epochs each trains
                assert {"model1.epoch.00.weights", f"model1.epoch.{last:02d}.weights",
                        f"model1.epoch.{last:02d}.loss"} <= names  # fmt: skip
                assert "model1.layer.01.dropout" in names or scenario == "cnn_training"
            assert record.tf_import_s > 0
            ids.add(record.process_id)
    assert len(ids) == len(BUILT_IN) * REPEATS


def test_seeded_variants_are_identical_across_processes(run_all):
    _, out, _ = run_all
    for scenario in ("seeded_init", "dropout_training", "cnn_training"):
        made = read_all(out, scenario, "seeded")
        for output in ("model1.predictions", "model1.weights", "model2.predictions"):
            assert len({r.outputs[output].sha256 for r in made}) == 1, (scenario, output)


def test_unseeded_variants_differ_in_every_process(run_all):
    _, out, _ = run_all
    for scenario in ("init", "dropout_training", "cnn_training"):
        assert len(predictions(read_all(out, scenario, "unseeded"))) == REPEATS, scenario


def test_in_process_check_matches_the_article(run_all):
    _, out, _ = run_all
    expected = {
        ("init", "unseeded"): False,
        ("seeded_init", "seeded"): True,
        ("dropout_training", "unseeded"): False,
        ("dropout_training", "seeded"): True,
        ("cnn_training", "unseeded"): False,
        ("cnn_training", "seeded"): True,
    }
    for (scenario, variant), identical in expected.items():
        assert {r.in_process_identical for r in read_all(out, scenario, variant)} == {identical}


def test_keras_major_version_is_fingerprinted(run_all):
    version, out, _ = run_all
    environment = read_all(out, "init", "unseeded")[0].environment
    assert environment["keras"].split(".")[0] == ("2" if version == OLDEST_TF else "3")
    assert environment["packages"]["count"] > 10
    assert environment["cpu"]["machine"]
    assert environment["ran_on"] == "cpu"


@pytest.mark.parametrize("version", [OLDEST_TF, NEWEST_TF])
def test_onednn_setting_is_recorded_as_in_force(version, tf_python, tmp_path):
    for state, expected in (("off", False), ("on", True)):
        out = tmp_path / state
        done = harness(tf_python(version), "seeded_init", "--repeat", "1", "--onednn", state, "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        knobs = records.Record.read(CellLayout(out).record("seeded_init", "seeded", 0)).knobs
        assert knobs["onednn"] is expected
        assert knobs["TF_ENABLE_ONEDNN_OPTS"] == ("1" if expected else "0")


def test_seed_zero_is_a_seed(tf_python, tmp_path):
    done = harness(tf_python(NEWEST_TF), "seeded_init", "--repeat", "2", "--seed", "0", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    made = [records.Record.read(CellLayout(tmp_path).record("seeded_init", "seeded", i)) for i in range(2)]
    assert {r.seed for r in made} == {0}
    assert len(predictions(made)) == 1


@pytest.mark.parametrize("name", ["init", "seeded_init", "dropout_training", "cnn_training"])
def test_scenario_runs_standalone_and_prints_the_article_lines(name, tf_python):
    script = Path("scenarios") / f"{name}.py"
    done = subprocess.run(
        [tf_python(NEWEST_TF), str(script)], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "First Model Output:" in done.stdout and "Second Model Output:" in done.stdout
    verdicts = [line.split(":")[-1].strip() for line in done.stdout.splitlines() if "identical?" in line]
    expected = {"init": ["False"], "seeded_init": ["True"], "dropout_training": ["False", "True"],
                "cnn_training": ["False", "True"]}[name]  # fmt: skip
    assert verdicts == expected


# -- bad input: each gives an error record and one clear line; the other repeats still run ---------------


NO_RUN = '''"""Forgot run()."""
VARIANTS = ("seeded",)
'''
USER_SCENARIO = '''"""A user scenario: a wider model, seeded, as in docs/scenarios.md."""
from repromatrix.scenarios import common

VARIANTS = ("seeded",)


def run(variant, seed):
    import tensorflow as tf

    inputs = common.fixed_data(8, 2)
    outputs = {}
    for name in ("model1", "model2"):
        common.seed_everything(seed)
        model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(32), tf.keras.layers.Dense(1)])
        outputs[name] = common.model_outputs(model, inputs)
    return outputs
'''


def test_unknown_scenario_gives_an_error_record_and_exit_code(tmp_path):
    done = harness(sys.executable, "no_such_scenario", "--repeat", "2", "--out", str(tmp_path))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "unknown scenario (available: cnn_training, dropout_training" in errors[0]
    for repeat in range(2):
        record = records.Record.read(CellLayout(tmp_path).record("no_such_scenario", "unknown", repeat))
        assert record.status == "error" and "unknown scenario" in record.message


def test_raising_and_hanging_scenarios_fail_alone(scenarios_copy, tf_python, tmp_path):
    write_scenario(scenarios_copy, "user_raises", RAISING)
    write_scenario(scenarios_copy, "user_hangs", HANGING)
    write_scenario(scenarios_copy, "user_no_run", NO_RUN)
    out = tmp_path / "out"
    done = harness(
        tf_python(NEWEST_TF),
        "user_raises", "user_hangs", "user_no_run", "seeded_init",
        "--repeat", "1", "--timeout", "25", "--out", str(out),
        scenarios=scenarios_copy,
    )  # fmt: skip
    assert done.returncode == 1
    raised = records.Record.read(CellLayout(out).record("user_raises", "seeded", 0))
    assert raised.status == "error"
    assert "RuntimeError: boom from a user scenario" in raised.message
    assert "Traceback" in raised.stderr_tail
    hung = records.Record.read(CellLayout(out).record("user_hangs", "seeded", 0))
    assert hung.status == "error" and "timed out after 25 s" in hung.message
    broken = records.Record.read(CellLayout(out).record("user_no_run", "seeded", 0))
    assert broken.status == "error" and "run(variant, seed)" in broken.message
    # The well-behaved scenario after them still ran.
    assert records.Record.read(CellLayout(out).record("seeded_init", "seeded", 0)).status == "ok"
    assert len([line for line in done.stderr.splitlines() if line.startswith("error:")]) == 3


def test_user_scenario_is_discovered_and_run_like_the_built_ins(scenarios_copy, tf_python, tmp_path):
    write_scenario(scenarios_copy, "wide_seeded", USER_SCENARIO)
    found = discover(scenarios_copy)
    assert found["wide_seeded"].variants == ("seeded",) and found["wide_seeded"].problem is None
    done = harness(tf_python(NEWEST_TF), "--repeat", "1", "--out", str(tmp_path), scenarios=scenarios_copy)
    assert done.returncode == 0, done.stderr[-2000:]
    record = records.Record.read(CellLayout(tmp_path).record("wide_seeded", "seeded", 0))
    assert record.in_process_identical is True
    assert record.outputs["model1.weights"].shape == (2 * 32 + 32 + 32 + 1,)


# What a record says is in force for each run-time axis at the value the test gives it. One entry per
# axis of the table: a new axis fails this test until it says how its effect is seen.
IN_FORCE = {
    "onednn": (False, lambda k: k["onednn"] is False and k["TF_ENABLE_ONEDNN_OPTS"] == "0"),
    "op_determinism": (True, lambda k: k["op_determinism"] is True),
    "intra_op_threads": (3, lambda k: k["intra_op_threads"] == 3),
    "inter_op_threads": (2, lambda k: k["inter_op_threads"] == 2),
    "cpus": (1, lambda k: k["usable_cores"] == 1),
    "cpu_isa": ("avx2", lambda k: k["ONEDNN_MAX_CPU_ISA"] == "AVX2"),
}


def test_every_axis_the_planner_accepts_is_applied_in_the_cell_and_recorded(tf_python, tmp_path):
    from repromatrix.harness import axes
    from repromatrix.harness.axes import Cell

    assert set(IN_FORCE) == {a.name for a in axes.AT_RUN_TIME}
    cell = Cell(NEWEST_TF, "cpu", **{name: value for name, (value, _) in IN_FORCE.items()})
    done = harness_plan(tf_python(NEWEST_TF), cell, tmp_path, "seeded_init")  # as the runner starts it
    assert done.returncode == 0, done.stderr[-2000:]
    record = records.Record.read(CellLayout(tmp_path).record("seeded_init", "seeded", 0))
    for name, (value, seen) in IN_FORCE.items():
        assert record.knobs["requested"][name] == value, name
        assert seen(record.knobs), (name, record.knobs)
    assert Cell.from_record(record.cell) == cell  # the environment axes too: the record names the whole cell
