"""`repromatrix explain`: lining two traces up and naming the first op whose output differs while its inputs matched.

Fast tests on hand-made streams for the alignment; one real-TensorFlow test with a planted one-ulp
change in one op of a small model, on one side only.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from repromatrix.explain import (
    OpEvent,
    Snapshot,
    Trace,
    Variable,
    Verdict,
    align,
    explain,
    first_weight_difference,
)
from repromatrix.harness.trace import Phase, trace_dir
from repromatrix.reporting.explained import describe_size
from tests.conftest import NEWEST_TF

REPO = Path(__file__).resolve().parent.parent


Small = tuple[float, ...] | None


def op(index: int, kind: str, ins: tuple[str, ...], outs: tuple[str, ...], scope: str = "dense",
       phase: str = Phase.FORWARD, step: int = 1, attrs: str = "x", small: Small = None) -> OpEvent:  # fmt: skip
    return OpEvent(index, kind, "", scope, phase, 0, step, attrs, ins, outs, dtypes=("float32",) * len(outs),
                   small=(small,) * len(outs) if small is not None else ())  # fmt: skip


def snap(step: int, *digests: str, kind: str = "fit") -> Snapshot:
    variables = tuple(Variable(i, f"dense/v{i}", (2,), d, (float(i), 1.0), 1.0) for i, d in enumerate(digests))
    return Snapshot(0, kind, 0, step, 0, variables)


def trace(ops: list[OpEvent], snaps: list[Snapshot] | None = None) -> Trace:
    return Trace(tuple(ops), tuple(snaps or []))


# side A and B agree on x → h, then MatMul gives another output from the same inputs; the rest follows from it.
SAME_START = [op(0, "ReadVariableOp", ("state:k",), ("k",)), op(1, "Identity", ("x",), ("x1",))]


def test_the_first_op_whose_output_differs_while_its_inputs_match_is_named():
    a = trace([*SAME_START, op(2, "MatMul", ("x1", "k"), ("m1",), small=(1.0, 2.0)),
               op(3, "Relu", ("m1",), ("r1",)), op(4, "MatMul", ("r1", "k"), ("o1",))])  # fmt: skip
    b = trace([*SAME_START, op(2, "MatMul", ("x1", "k"), ("m2",), small=(1.0, 2.0000002)),
               op(3, "Relu", ("m2",), ("r2",)), op(4, "MatMul", ("r2", "k"), ("o2",))])  # fmt: skip
    found = explain(a, b)
    assert found.verdict == Verdict.NUMERICS
    assert found.op is not None
    assert (found.op.type, found.op.index_a, found.op.inputs_matched, found.op.certain) == ("MatMul", 2, True, True)
    assert found.op.size["values_differing"] == 1
    assert found.op.size["max_ulps"] == 1  # 2.0000002 is the float32 after 2.0
    assert "1 of 2 values differ" in describe_size(found.op.size)
    assert found.alignment.exact


def test_an_op_one_side_alone_runs_is_skipped_over_and_counted():
    # Side B runs an extra Cast (oneDNN rewrites ops, say): the streams still line up around it.
    a = trace([*SAME_START, op(2, "MatMul", ("x1", "k"), ("m",)), op(3, "Relu", ("m",), ("r1",))])
    b = trace([*SAME_START, op(2, "Cast", ("x1",), ("c",)), op(3, "MatMul", ("x1", "k"), ("m",)),
               op(4, "Relu", ("m",), ("r2",))])  # fmt: skip
    pairs = align(a.ops, b.ops)
    assert pairs == [(0, 0), (1, 1), (2, 3), (3, 4)]
    found = explain(a, b)
    assert found.op is not None and found.op.type == "Relu" and found.op.index_b == 4
    assert found.op.inputs_matched and found.op.certain  # equal inputs prove the pairing
    assert not found.alignment.exact and found.alignment.unmatched_before_cause == 1


def test_a_differing_input_made_by_an_op_only_one_side_runs_names_that_op():
    a = trace([*SAME_START, op(2, "NextAfter", ("x1",), ("bumped",)), op(3, "Relu", ("bumped",), ("r1",))])
    b = trace([*SAME_START, op(2, "Relu", ("x1",), ("r2",))])
    found = explain(a, b)
    assert found.op is not None and found.op.type == "Relu" and not found.op.inputs_matched
    assert "NextAfter" in found.op.why and not found.op.certain


def test_a_differing_input_no_traced_op_made_is_said_to_come_from_outside():
    a = trace([op(0, "MatMul", ("batch-a", "k"), ("m1",))])
    b = trace([op(0, "MatMul", ("batch-b", "k"), ("m2",))])
    found = explain(a, b)
    assert found.verdict == Verdict.OUTSIDE
    assert found.op is not None and "outside the traced ops" in found.op.why


def test_differing_attributes_with_equal_inputs_are_a_changed_random_stream():
    a = trace([op(0, "RandomUniform", ("shape",), ("u1",), attrs="seed=1")])
    b = trace([op(0, "RandomUniform", ("shape",), ("u2",), attrs="seed=2")])
    assert explain(a, b).verdict == Verdict.RANDOM_ATTRIBUTES


def test_weights_different_at_initialisation_are_a_changed_random_stream_not_numerics():
    ops = [op(0, "MatMul", ("x", "k"), ("m",))]
    a = trace(ops, [snap(0, "w0", "b0"), snap(1, "w1", "b1")])
    b = trace([op(0, "MatMul", ("x", "k2"), ("m2",))], [snap(0, "w0x", "b0"), snap(1, "w1x", "b1")])
    found = explain(a, b)
    assert found.verdict == Verdict.INITIALISATION
    assert found.weights is not None and found.weights.at_initialisation and found.weights.variable == 0


def test_the_first_training_step_and_variable_that_differ_are_named():
    a = [snap(0, "w0", "b0"), snap(1, "w1", "b1"), snap(2, "w2", "b2")]
    b = [snap(0, "w0", "b0"), snap(1, "w1", "b1"), snap(2, "w2", "b2x")]
    found, notes = first_weight_difference(trace([], a), trace([], b))
    assert found is not None and not notes
    assert (found.step, found.variable, found.at_initialisation) == (2, 1, False)
    assert found.snapshot == "model 1, fit: after training step 2"


def test_weights_read_before_predict_without_a_fit_count_as_initialisation():
    found, _ = first_weight_difference(trace([], [snap(0, "w", kind="predict")]),
                                       trace([], [snap(0, "v", kind="predict")]))  # fmt: skip
    assert found is not None and found.at_initialisation


def test_identical_traces_are_no_difference():
    ops = [*SAME_START, op(2, "MatMul", ("x1", "k"), ("m",))]
    found = explain(trace(ops, [snap(0, "w")]), trace(ops, [snap(0, "w")]))
    assert (found.verdict, found.op, found.weights) == (Verdict.SAME, None, None)


def test_a_trace_folder_reads_back(tmp_path):
    folder = trace_dir(tmp_path / "0.json")
    folder.mkdir()
    line = {"i": 0, "type": "MatMul", "scope": "dense", "phase": "forward", "call": 0, "step": 1, "attrs": "a",
            "in": ["x", "k"], "out": ["m"], "dtype": ["float32"], "small": [[1.0]]}  # fmt: skip
    (folder / "ops.jsonl").write_text(json.dumps(line) + "\n")
    (folder / "weights.jsonl").write_text(json.dumps({"call": 0, "kind": "fit", "step": 0, "vars": [
        {"index": 0, "name": "dense/kernel", "shape": [2, 1], "digest": "d"}]}) + "\n")  # fmt: skip
    read = Trace.read(folder)
    assert read.ops[0].key == ("MatMul", "dense", "forward", 0, 1)
    assert read.snapshots[0].variables[0].name == "dense/kernel"
    assert folder.name == "0.trace"


# --- real TensorFlow: a planted one-ulp change in one op, on one side only --------------------------------------
PLANTED = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from repromatrix.harness.trace import Tracer

    def bump(x):
        """Its input, or on the planted side its first value one ulp up: inputs that match, an output that does not."""
        out = np.array(x, copy=True)
        if os.environ.get("PLANT_ULP") == "1":
            out.flat[0] = np.nextafter(out.flat[0], np.float32(np.inf))
        return out

    class Planted(tf.keras.layers.Layer):
        def call(self, x):
            # py_function, not numpy_function: eagerly, numpy_function calls Python without running any op.
            bumped = tf.reshape(tf.py_function(lambda v: bump(v.numpy()), [x], tf.float32), tf.shape(x))
            return x + tf.stop_gradient(bumped - x)  # the bumped values forward, the identity's gradient back

    class Net(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.first = tf.keras.layers.Dense(4)  # no relu: a zero would bump to a denormal, flushed
            self.planted = Planted(name="planted")
            self.last = tf.keras.layers.Dense(1)

        def call(self, x):
            return self.last(self.planted(self.first(x)))

    tf.keras.utils.set_random_seed(7)  # Python, NumPy and TF: Keras 3 draws unseeded initializers from Python
    x = np.random.default_rng(1).random((8, 3), dtype=np.float32)
    y = np.random.default_rng(2).random((8, 1), dtype=np.float32)
    with Tracer(tf, np, Path(sys.argv[1])):
        model = Net()  # built by its first training step, so the first difference is in it
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
''')


@pytest.mark.tf
def test_a_planted_one_ulp_change_in_one_op_is_named_and_no_earlier_one(tf_python, tmp_path):
    python = tf_python(NEWEST_TF)
    script = tmp_path / "planted.py"
    script.write_text(PLANTED)
    folders = []
    for side, plant in (("a", "0"), ("b", "1")):
        folder = tmp_path / side
        env = {**os.environ, "PLANT_ULP": plant, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        done = subprocess.run([python, str(script), str(folder)], env=env, capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        folders.append(folder)
    a, b = Trace.read(folders[0]), Trace.read(folders[1])
    found = explain(a, b)
    assert found.verdict == Verdict.NUMERICS, found
    assert found.op is not None
    assert found.op.type in ("EagerPyFunc", "PyFunc", "PyFuncStateless"), found.op
    assert "planted" in found.op.layer
    assert (found.op.phase, found.op.step, found.op.inputs_matched, found.op.certain) == (Phase.FORWARD, 1, True, True)
    assert (found.op.size.get("max_ulps"), found.op.size.get("values_differing")) == (1, 1), found.op.size
    # No earlier op differs: every op before it has the same output on both sides.
    assert found.alignment.exact
    before = [(x.outputs, y.outputs) for x, y in zip(a.ops, b.ops, strict=True) if x.index < found.op.index_a]
    assert before and all(x == y for x, y in before)
    # The weights are equal at initialisation (a one-ulp activation may or may not survive the update's rounding).
    assert found.weights is None or not found.weights.at_initialisation


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--cells", "a,b,c", "--scenario", "init", "--variant", "unseeded"], "give two different cell ids"),
        (["--cells", "tf2.21.0-cpu-onednn1-det0", "--variant", "unseeded"], "exactly one --scenario"),
        (["--cells", "nope,tf2.21.0-cpu-onednn1-det0", "--scenario", "init", "--variant", "unseeded"],
         "nope: not in the matrix"),
        (["--cells", "tf2.21.0-cpu-onednn1-det0", "--scenario", "init", "--variant", "seeded"], "init has unseeded"),
    ],
)  # fmt: skip
def test_bad_explain_arguments_are_one_line_and_exit_2(argv, says, tmp_path, capsys):
    from repromatrix import cli

    code = cli.main(["explain", *argv, "--backend", "local", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.tf
def test_explain_two_repeats_of_unseeded_init_through_the_backend(tf_python, tmp_path):
    """The whole command: both sides rerun in their cell, traced; written as explain.md and explain.json."""
    from tests.conftest import repromatrix_cli

    tf_python(NEWEST_TF)
    out = tmp_path / "explain"
    done = repromatrix_cli("explain", "--cells", f"tf{NEWEST_TF}-cpu-onednn1-det0", "--scenario", "init",
                           "--variant", "unseeded", "--backend", "local", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    written = json.loads((out / "explain.json").read_text())
    # Unseeded, two processes draw other initial weights: the random stream, not numerics.
    assert written["verdict"] == str(Verdict.INITIALISATION)
    assert written["weights"]["at_initialisation"] and written["weights"]["variable"] == 0
    assert [side["repeat"] for side in written["sides"]] == [0, 1]
    assert "model1.predictions" in written["outputs"]["traced"]
    assert (out / "explain.md").read_text().startswith("## Explained: init-unseeded")
    assert trace_dir(Path(written["sides"][0]["record"])).is_dir()
