"""Fork-server isolation measures what fresh processes measure: real TensorFlow, oldest and newest lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from repromatrix.harness import records
from repromatrix.harness.layout import CellLayout
from tests.conftest import HANGING, NEWEST_TF, RAISING, REPEATS, harness, process_token, processes_with, write_scenario

pytestmark = pytest.mark.tf
BUILT_IN = [("init", "unseeded"), ("seeded_init", "seeded")] + [
    (name, v) for name in ("dropout_training", "cnn_training") for v in ("unseeded", "seeded")
]


def read(out, scenario, variant, repeat) -> records.Record:
    return records.Record.read(CellLayout(out).record(scenario, variant, repeat))


@pytest.fixture(scope="session")
def fork_run(run_all, tf_python, tmp_path_factory):
    """The same harness call as run_all, in fork mode: (version, process-mode folder, fork-mode folder)."""
    version, process_out, _ = run_all
    out = tmp_path_factory.mktemp(f"fork{version}")
    done = harness(tf_python(version), "--repeat", str(REPEATS), "--isolation", "fork", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"scenario processes started: {len(BUILT_IN) * REPEATS}" in done.stdout
    return version, process_out, out


def test_seeded_digests_equal_fresh_processes_bit_for_bit(fork_run):
    _, process_out, fork_out = fork_run
    for scenario, variant in BUILT_IN:
        if variant != "seeded":
            continue
        fresh = read(process_out, scenario, variant, 0)
        for repeat in range(REPEATS):
            forked = read(fork_out, scenario, variant, repeat)
            assert forked.isolation == "fork" and forked.extra["fork_parent"]
            # Every array: predictions, weights, each layer's output, each epoch's weights and loss.
            assert forked.outputs == fresh.outputs, (scenario, repeat)


def test_unseeded_repeats_still_all_differ_and_in_process_checks_agree(fork_run):
    _, process_out, fork_out = fork_run
    for scenario, variant in BUILT_IN:
        forked = [read(fork_out, scenario, variant, r) for r in range(REPEATS)]
        fresh = [read(process_out, scenario, variant, r) for r in range(REPEATS)]
        if variant == "unseeded":
            assert len({r.outputs["model1.predictions"].sha256 for r in forked}) == REPEATS, scenario
        assert {r.in_process_identical for r in forked} == {r.in_process_identical for r in fresh}, scenario


def test_every_repeat_index_has_its_own_parent_shared_by_every_variant(fork_run):
    _, _, fork_out = fork_run
    by_repeat = []
    for repeat in range(REPEATS):
        parents = {read(fork_out, scenario, variant, repeat).extra["fork_parent"] for scenario, variant in BUILT_IN}
        assert len(parents) == 1, parents  # repeat r of every variant forked from parent r
        by_repeat.append(parents.pop())
    assert len(set(by_repeat)) == REPEATS  # and no two repeats of a variant share a parent


HASH_SEEDED = '''"""Output follows the iteration order of a set of strings, i.e. the process's hash seed."""
import numpy as np

VARIANTS = ("unseeded",)
EXPECT = {"unseeded": {"in_process": "identical", "run_to_run": "differs"}}
WORDS = [f"word{i}" for i in range(64)]


def run(variant, seed):
    order = np.array([WORDS.index(word) for word in set(WORDS)], dtype=np.int64)
    return {"model1": {"predictions": order}, "model2": {"predictions": order.copy()}}
'''


@pytest.mark.parametrize("isolation", ["process", "fork"])
def test_a_result_that_follows_the_hash_seed_varies_in_fork_mode_as_in_process_mode(
    isolation, scenarios_copy, tf_python, tmp_path
):
    from tests.conftest import NEWEST_TF

    write_scenario(scenarios_copy, "hash_seeded", HASH_SEEDED)
    done = harness(tf_python(NEWEST_TF), "hash_seeded", "--repeat", "4", "--isolation", isolation,
                   "--out", str(tmp_path), scenarios=scenarios_copy)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    digests = {read(tmp_path, "hash_seeded", "unseeded", r).outputs["model1.predictions"].sha256 for r in range(4)}
    assert len(digests) >= 2  # one parent per repeat: no two repeats share a hash seed


# The shape of a start-up-decided nondeterminism (an alignment- or hash-seed-dependent kernel choice):
# a coin drawn once per interpreter, at import, nudging the output by one ulp.
IMPORT_COIN = '''"""A seeded output nudged by one ulp when a coin drawn at import comes up 1."""
import os

import numpy as np

VARIANTS = ("seeded", "seeded_too")
_COIN = os.urandom(1)[0] & 1


def run(variant, seed):
    value = np.float32(0.5) + np.float32(seed % 7)
    if _COIN:
        value = np.nextafter(value, np.float32(np.inf))
    out = np.full((4,), value, dtype=np.float32)
    return {"model1": {"predictions": out}, "model2": {"predictions": out.copy()}}
'''
COIN_MATRIX = f"""
[matrix]
tf = ["{NEWEST_TF}"]
[run]
scenarios = ["import_coin"]
scenario_paths = ["coin_scenarios"]
repeats = 20
isolation = "fork"
"""


def test_a_coin_drawn_at_import_is_flagged_as_seeded_but_varies_in_fork_mode(tf_python, tmp_path):
    """20 repeats, each its own parent: a miss needs all 20 coins equal (2 in 2**20; with 8 it was
    2 in 256, and CI once drew it)."""
    tf_python(NEWEST_TF)
    (tmp_path / "coin_scenarios").mkdir()
    (tmp_path / "coin_scenarios" / "import_coin.py").write_text(IMPORT_COIN)
    (tmp_path / "matrix.toml").write_text(COIN_MATRIX)
    done = subprocess.run([sys.executable, "-m", "repromatrix", "matrix", "--backend", "local"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "matrix" / "report.json").read_text())
    broken = [f for f in report["findings"] if f["severity"] == "finding"]
    assert {f["scenario"] for f in broken} == {"import_coin-seeded", "import_coin-seeded_too"}
    assert all("expected identical run to run" in f["text"] for f in broken)
    for variant in report["variants"]:
        assert variant["identities"] == 20 and variant["identity_text"] == "20 forks of 20 parents"
    # Repeat r of both variants came from parent r, so the two variants drew the same coins.
    results = tmp_path / "results" / "matrix"
    for repeat in range(8):
        pair = [records.Record.read(next(results.glob(f"*/import_coin-{v}/{repeat}.json"))) for v in VARIANTS_OF_COIN]
        assert pair[0].extra["fork_parent"] == pair[1].extra["fork_parent"]
        assert pair[0].outputs == pair[1].outputs


VARIANTS_OF_COIN = ("seeded", "seeded_too")


DIES = '''"""Killed by a signal."""
import os
import signal

VARIANTS = ("seeded",)


def run(variant, seed):
    os.kill(os.getpid(), signal.SIGSEGV)
'''


def test_a_child_that_raises_hangs_or_dies_fails_alone_and_leaves_no_process(scenarios_copy, tf_python, tmp_path):
    from tests.conftest import NEWEST_TF

    for name, body in (("child_raises", RAISING), ("child_hangs", HANGING), ("child_dies", DIES)):
        write_scenario(scenarios_copy, name, body)
    token = process_token()
    done = harness(
        tf_python(NEWEST_TF), "child_raises", "child_hangs", "child_dies", "seeded_init",
        "--repeat", "2", "--timeout", "20", "--isolation", "fork", "--out", str(tmp_path), scenarios=scenarios_copy,
        env=token,
    )  # fmt: skip
    assert done.returncode == 1
    raised = read(tmp_path, "child_raises", "seeded", 0)
    assert raised.status == "error" and "RuntimeError: boom from a user scenario" in raised.message
    assert "Traceback" in raised.stderr_tail
    hung = read(tmp_path, "child_hangs", "seeded", 1)
    assert hung.status == "error" and "timed out after 20 s" in hung.message
    died = read(tmp_path, "child_dies", "seeded", 0)
    assert died.status == "error" and "killed by SIGSEGV" in died.message
    for repeat in range(2):  # the parents survived every child: the scenario after them still ran
        assert read(tmp_path, "seeded_init", "seeded", repeat).status == "ok"
    assert processes_with(token) == []  # no scenario process or fork parent of this test outlived it
    assert not (tmp_path / ".attempts").exists()
