"""Does it matter, end to end with real TensorFlow: a user's classifier gets decision counts with no extra code."""

from __future__ import annotations

import json

import pytest

from repromatrix.harness import records
from repromatrix.harness.layout import Layout
from tests.conftest import NEWEST_TF, repromatrix_cli

pytestmark = pytest.mark.tf

CLASSIFIER = '''"""A user's model with a classifier head: nothing in it says how to count its decisions."""
import tensorflow as tf

from repromatrix.scenarios import common

VARIANTS = ("seeded",)


def run(variant, seed):
    inputs = common.fixed_data(32, 6, stream=7)
    labels = common.fixed_data(32, stream=8, classes=4)
    outputs = {}
    for name in ("model1", "model2"):
        common.seed_everything(seed)
        model = tf.keras.Sequential([tf.keras.Input(shape=(6,)), tf.keras.layers.Dense(8, activation="relu"),
                                     tf.keras.layers.Dense(4, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(inputs, labels, epochs=2, verbose=0)
        outputs[name] = common.model_outputs(model, inputs)
    return outputs
'''


def test_a_user_classifier_gets_spread_runs_and_predicted_class_counts(tmp_path, tf_python):
    tf_python(NEWEST_TF)  # the cached virtualenv, made before the run times anything
    folder = tmp_path / "my_scenarios"
    folder.mkdir()
    (folder / "my_classifier.py").write_text(CLASSIFIER)
    results, out = tmp_path / "results", tmp_path / "report"
    cell = f"tf{NEWEST_TF}-cpu-onednn1-det0"
    done = repromatrix_cli("matrix", "--scenarios", str(folder), "--scenario", "my_classifier", "--cell", cell,
                           "--repeats", "2", "--spread-seeds", "2", "--backend", "local", "--results", str(results),
                           "--out", str(out), timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    variant_dir = Layout(results).cell(cell).root / "my_classifier-seeded"
    spread = [records.Record.read(variant_dir / f"spread-{seed}.json") for seed in (43, 44)]
    assert all(r.spread and r.is_ok for r in spread) and [r.seed for r in spread] == [43, 44]
    report = json.loads((out / "report.json").read_text())
    [variant] = [v for v in report["variants"] if v["scenario"] == "my_classifier"]
    assert variant["ok_repeats"] == 2 and variant["run_to_run"] == "identical"  # spread runs are not repeats
    [predictions] = [s for s in report["seed_spread"] if s["output"] == "model1.predictions"]
    assert predictions["source"] == "2 other seeds (43, 44)" and predictions["spread"] > 0
    [classes] = predictions["decisions"]
    assert classes["kind"] == "predicted classes" and classes["of"] == 32 and classes["sampled"] is None
    assert "Seed-to-seed spread" in (out / "report.md").read_text()
