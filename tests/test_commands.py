"""Command scenarios without TensorFlow: matrix.toml's [run.commands], the command line a repeat runs,
the files read back, and what the report says of hand-made command records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from repromatrix import commands, matrix
from repromatrix.errors import ConfigurationError
from repromatrix.harness import catalog, command, records, saved_files
from repromatrix.harness.catalog import ScenarioClash
from repromatrix.reporting import analysis
from repromatrix.reporting import commands as reported
from repromatrix.reporting.distances import Arrays
from repromatrix.reporting.load import Loaded

PROJECT = Path(__file__).parent / "command_project"
TRAIN = '["python", "train.py", "--seed", "{seed}", "--out", "{out}"]'


def write_matrix(folder: Path, commands_toml: str, run: str = "") -> Path:
    path = folder / "matrix.toml"
    path.write_text(f'[matrix]\ntf = ["2.21.0"]\ndevice = ["cpu"]\n\n[run]\n{run}\n{commands_toml}')
    return path


# -- matrix.toml ----------------------------------------------------------------------------------


def test_a_declared_command_is_a_scenario_run_by_default(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    loaded = matrix.load(write_matrix(tmp_path, f"[run.commands.train]\ncommand = {TRAIN}\n"))
    assert loaded.scenarios == ("train",)
    (train,) = loaded.commands
    assert train.command == ("python", "train.py", "--seed", "{seed}", "--out", "{out}")
    assert train.variants == ("seeded", "unseeded")
    assert train.project == tmp_path.resolve()
    # Run to run as the article's claims say, unless declared; in-process never expected of a command.
    assert train.expect == {"seeded": {"run_to_run": "identical", "in_process": "any"},
                            "unseeded": {"run_to_run": "differs", "in_process": "any"}}  # fmt: skip
    assert loaded.projects == (tmp_path.resolve(),)


def test_declared_variants_expectations_and_folder_are_kept(tmp_path):
    (tmp_path / "proj").mkdir()
    toml = (f'[run.commands.train]\ncommand = {TRAIN}\nvariants = ["seeded", "unseeded_data"]\n'
            'expect = { unseeded_data = "any" }\nfolder = "proj"\n')  # fmt: skip
    loaded = matrix.load(write_matrix(tmp_path, toml, run='scenarios = ["train", "init"]'))
    assert loaded.scenarios == ("train", "init")  # [run].scenarios given: it says what runs
    (train,) = loaded.commands
    assert train.expect["unseeded_data"]["run_to_run"] == "any"
    assert train.project == (tmp_path / "proj").resolve()


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ('[run.commands.train]\ncommand = "python train.py"\n', "[run.commands.train].command = 'python train.py'"),
        ('[run.commands.train]\ncommand = ["python", "train.py", "--seed", "{seed}"]\n', "it must pass {out}"),
        ('[run.commands.train]\ncommand = ["python", "t.py", "{seed}", "{out}", "{epochs}"]\n',
         "{epochs} is not a placeholder"),
        ('[run.commands.train]\ncommand = ["python", "t.py", "--out", "{out}"]\n', "does not pass {seed}"),
        (f'[run.commands.train]\ncommand = {TRAIN}\nexpect = {{ seeded = "same" }}\n',
         "[run.commands.train].expect.seeded = 'same' is not valid; allowed: identical, differs, any"),
        (f'[run.commands.train]\ncommand = {TRAIN}\nexpect = {{ other = "any" }}\n', "not a variant of this command"),
        (f'[run.commands.train]\ncommand = {TRAIN}\nvariants = ["Seeded"]\n', "[run.commands.train].variants"),
        (f'[run.commands.train]\ncommand = {TRAIN}\nfolder = "nowhere"\n', "no such folder"),
        (f'[run.commands.train]\ncommand = {TRAIN}\ncwd = "."\n', "allowed keys: command, variants, expect, folder"),
        (f'[run.commands.Train-1]\ncommand = {TRAIN}\n', "a command's name is lower-case"),
        ('[run.commands.train]\nvariants = ["seeded"]\n', "[run.commands.train] has no command"),
    ],
)  # fmt: skip
def test_a_bad_command_is_one_line_naming_the_key(tmp_path, toml, said):
    with pytest.raises(ConfigurationError) as caught:
        matrix.load(write_matrix(tmp_path, toml))
    message = str(caught.value)
    assert said in message and "\n" not in message
    assert message.startswith("matrix.toml: ")


def test_bad_command_exits_2_from_the_command_line(tmp_path, capsys):
    from repromatrix import cli

    path = write_matrix(tmp_path, '[run.commands.train]\ncommand = ["python", "train.py"]\n')
    assert cli.main(["plan", "--matrix", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "it must pass {out}" in err[0]


def test_a_command_may_not_take_a_scenarios_name(tmp_path):
    (tmp_path / "init.py").write_text("")
    loaded = matrix.load(write_matrix(tmp_path, f"[run.commands.init]\ncommand = {TRAIN}\n"))
    with pytest.raises(ScenarioClash, match=r"\[run.commands.init\] has the name of the scenario"):
        commands.add_to(catalog.discover(), loaded.commands)


def test_the_project_is_staged_and_its_files_are_in_the_reuse_key(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    loaded = matrix.load(write_matrix(tmp_path, f"[run.commands.train]\ncommand = {TRAIN}\n"))
    staged = catalog.staged_files([], loaded.projects)
    key = command.project_key(tmp_path)
    assert f"repromatrix/projects/{key}/train.py" in staged and f"repromatrix/projects/{key}/helper.py" in staged
    assert f"repromatrix/projects/{key}/matrix.toml" not in staged  # where to run, not what runs
    (train,) = loaded.commands
    before = catalog.source_digest(train)
    (tmp_path / "matrix.toml").write_text((tmp_path / "matrix.toml").read_text() + "\n# a comment\n")
    assert catalog.source_digest(train) == before
    (tmp_path / "helper.py").write_text("X = 2\n")
    assert catalog.source_digest(train) != before
    (planned, *_) = catalog.plan({"train": train}, ["train"], 2, 42)
    spec = planned.spec("key")
    assert spec.command == train.command and spec.project == key and spec.seed == 42


# -- the command line of a repeat ------------------------------------------------------------------


def test_seeded_and_unseeded_command_lines():
    line = ["python", "train.py", "--seed", "{seed}", "--out", "{out}"]
    assert command.arguments(line, 7, "/o") == ["python", "train.py", "--seed", "7", "--out", "/o"]
    # Unseeded: the pair goes, so the script runs as it does when no seed is given.
    assert command.arguments(line, None, "/o") == ["python", "train.py", "--out", "/o"]
    assert command.arguments(["sh", "run.sh", "--seed={seed}", "{out}"], None, "/o") == ["sh", "run.sh", "/o"]
    assert command.arguments(["sh", "run.sh", "{seed}", "{out}"], None, "/o") == ["sh", "run.sh", "/o"]
    assert command.interpreter(["python3", "x.py"])[0] != "python3"
    assert command.interpreter(["bash", "x.sh"]) == ["bash", "x.sh"]


# -- the files a command wrote ---------------------------------------------------------------------


def test_epoch_series_are_the_names_that_differ_in_one_number():
    names = ["ckpt/epoch-01.weights.h5", "ckpt/epoch-02.weights.h5", "ckpt/epoch-10.weights.h5", "model.keras",
             "w.03-0.52.h5", "w.04-0.61.h5", "run1.npy"]  # fmt: skip
    assert saved_files.epoch_series(names) == {
        "ckpt/epoch-01.weights.h5": 1, "ckpt/epoch-02.weights.h5": 2, "ckpt/epoch-10.weights.h5": 10,
        "w.03-0.52.h5": 3, "w.04-0.61.h5": 4,
    }  # fmt: skip


def test_keras3_variables_take_their_layers_names():
    names = {"dense": ["kernel", "bias"], "batch_normalization": ["gamma", "beta", "moving_mean"]}
    assert saved_files.readable_name("layers/dense/vars/0", names) == "dense/kernel"
    assert saved_files.readable_name("layers/batch_normalization/vars/2", names) == "batch_normalization/moving_mean"
    assert saved_files.readable_name("layers/sequential/layers/dense/vars/1", names) == "sequential/dense/bias"
    assert saved_files.readable_name("optimizer/vars/3", names) == "optimizer/vars/3"
    assert saved_files.readable_name("layers/other/vars/0", names) == "layers/other/vars/0"  # not in the model


def test_files_are_read_by_what_they_are(tmp_path):
    np.save(tmp_path / "preds.npy", np.arange(3.0))
    np.savez(tmp_path / "extra.npz", a=np.ones(2), b=np.zeros(1))
    (tmp_path / "preds.bin").write_bytes(np.arange(3.0).tobytes())
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "train.txt").write_text("loss 0.5\n")
    for epoch in (1, 2):
        np.save(tmp_path / f"step-{epoch}.npy", np.full(2, epoch))
    # A TF checkpoint is its index and shards, one unit (read with TF, which this test does not have).
    (tmp_path / "ck.index").write_bytes(b"x")
    (tmp_path / "ck.data-00000-of-00001").write_bytes(b"y")
    units = {unit.name: unit for unit in saved_files.units_of(tmp_path)}
    assert units["ck"].kind == "checkpoint" and units["ck"].files == ("ck.index", "ck.data-00000-of-00001")
    assert units["preds.bin"].kind == "bytes" and units["extra.npz"].kind == "npz"
    (tmp_path / "ck.index").unlink()
    (tmp_path / "ck.data-00000-of-00001").unlink()
    saved = saved_files.read_folder(tmp_path, np, tf=None)
    assert sorted(saved.arrays) == [
        "bytes:log/train.txt", "bytes:preds.bin", "epoch.01:step-1.npy", "epoch.02:step-2.npy",
        "extra.npz:a", "extra.npz:b", "preds.npy",
    ]  # fmt: skip
    assert saved.epochs == {"step-1.npy": 1, "step-2.npy": 2}
    assert records.is_detail("bytes:log/train.txt") and records.is_detail("epoch.01:step-1.npy")
    assert not records.is_detail("preds.npy")
    np.testing.assert_array_equal(saved.arrays["preds.npy"], np.arange(3.0))


def test_a_file_that_claims_a_format_and_breaks_it_is_compared_by_its_bytes(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY" + b"garbage")
    saved = saved_files.read_folder(tmp_path, np, tf=None)
    assert list(saved.arrays) == ["bytes:bad.npy"]
    assert saved.notes and "bad.npy" in saved.notes[0]


# -- what the report says --------------------------------------------------------------------------


def command_record(repeat: int, arrays: dict[str, np.ndarray], variant: str = "seeded") -> records.Record:
    return records.Record.ok(
        arrays=arrays, in_process_identical=None, scenario="train", variant=variant, repeat=repeat,
        seed=42 if variant == "seeded" else None, cell={"id": "tf2.21.0-cpu", "tf": "2.21.0"},
        expect={"run_to_run": "identical" if variant == "seeded" else "any", "in_process": "any"},
        extra={"command": {"argv": ["python", "train.py"]}},
    )  # fmt: skip


def saved(epoch_kernels: list[float], log: str = "ok") -> dict[str, np.ndarray]:
    arrays = {f"epoch.{n:02d}:ckpt/epoch-{n:02d}.weights.h5:dense/kernel": np.full(3, k, np.float32)
              for n, k in enumerate(epoch_kernels, start=1)}  # fmt: skip
    arrays[f"epoch.{len(epoch_kernels):02d}:ckpt/epoch-{len(epoch_kernels):02d}.weights.h5:dense/bias"] = np.zeros(1)
    arrays["model.keras:dense/kernel"] = np.full(3, epoch_kernels[-1], np.float32)
    arrays["preds.npy"] = np.full(2, epoch_kernels[-1], np.float32)
    arrays["bytes:train.log"] = np.frombuffer(log.encode(), np.uint8)
    return arrays


def variant_of(runs: list[dict[str, np.ndarray]], tmp_path: Path) -> analysis.Variant:
    loaded = []
    for repeat, arrays in enumerate(runs):
        record = command_record(repeat, arrays)
        path = tmp_path / f"{record.variant}-{record.repeat}.json"
        record.write(path, arrays)
        loaded.append(Loaded(record, path, record.cell_id))
    (variant,) = analysis.variants(loaded, Arrays())
    return variant


def test_first_difference_at_the_epoch_the_checkpoints_part():
    left, right = command_record(0, saved([1, 2, 3])), command_record(1, saved([1, 2, 4]))
    said = analysis.first_divergence(left, right)
    assert said.startswith("checkpoints equal up to epoch 2; first difference at epoch 3 "
                           "(ckpt/epoch-03.weights.h5), variable `dense/kernel`")  # fmt: skip
    assert "saved arrays that differ: `preds.npy`, `model.keras:dense/kernel`" in said  # predictions first
    same = analysis.first_divergence(left, command_record(1, saved([1, 2, 3], log="other")))
    assert same == "every epoch's checkpoint equal (3 epochs); also differs: `train.log`"


def test_a_command_has_no_in_process_comparison_and_a_log_never_decides(tmp_path):
    variant = variant_of([saved([1, 2]), saved([1, 2], log="12:01")], tmp_path)
    assert variant.in_process == analysis.InProcess.NOT_FOR_COMMAND
    assert variant.in_process != analysis.InProcess.IDENTICAL
    assert variant.run_to_run == analysis.RunToRun.IDENTICAL  # the log differs; every array is the same
    assert variant.claim == analysis.Claim.HELD
    assert variant.compared_outputs == ["model.keras:dense/kernel", "preds.npy"]


def test_a_seeded_command_that_varies_is_broken_with_its_weights_and_epoch_named(tmp_path):
    variant = variant_of([saved([1, 2]), saved([1, 5])], tmp_path)
    assert variant.run_to_run == analysis.RunToRun.VARIES and variant.claim == analysis.Claim.BROKEN
    (reason,) = variant.claim_reasons
    assert "model.keras:dense/kernel 2 distinct among 2 processes" in reason
    assert "first difference at epoch 2 (ckpt/epoch-02.weights.h5), variable `dense/kernel`" in reason


def test_one_repeat_of_a_command_is_untested_not_held(tmp_path):
    variant = variant_of([saved([1, 2])], tmp_path)
    assert variant.claim == analysis.Claim.UNTESTED


def test_a_commands_class_tables_are_the_telling_outputs():
    assert reported.is_output("model.keras:dense/kernel") and reported.is_output("preds.npy")
    assert not reported.is_output("epoch.01:a.h5:x") and not reported.is_output("bytes:log")
    assert not reported.is_output("model1.weights")


def test_a_failed_command_is_said_in_its_own_words(tmp_path):
    from repromatrix.harness.launch import COMMAND_SAYS, judge_exit

    stderr = f"Traceback ...\nValueError: no data\n{COMMAND_SAYS}the command `python t.py` failed (exit code 3): x\n"
    outcome = judge_exit(3, stderr, tmp_path / "0.json")
    assert outcome.status == records.Status.ERROR
    assert outcome.message == "the command `python t.py` failed (exit code 3): x" and outcome.stderr == stderr
    # A scenario's own failure keeps its words as before.
    assert (
        judge_exit(1, "ValueError: no data\n", tmp_path / "0.json").message == "exited with code 1: ValueError: no data"
    )


SCRIPT = """
import json, os, sys
import numpy as np
out = sys.argv[sys.argv.index("--out") + 1]
print("training", file=sys.stderr)
if "--fail" in sys.argv:
    raise SystemExit("ValueError: no data")
if "--nothing" not in sys.argv:
    np.save(os.path.join(out, "preds.npy"), np.arange(3) + int(sys.argv[sys.argv.index("--seed") + 1]))
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump({"knobs": os.environ.get("REPROMATRIX_COMMAND_KNOBS"), "cwd": os.getcwd()}, f)
"""


def command_spec(tmp_path: Path, monkeypatch, *extra: str):
    from repromatrix.harness import exchange
    from repromatrix.harness.axes import Knobs

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    monkeypatch.setattr(command, "project_dir", lambda key: folder)
    argv = ("python", "train.py", "--seed", "{seed}", "--out", "{out}", *extra)
    return exchange.RepeatSpec("train", "seeded", 5, 0, command=argv, project="project-1", knobs=Knobs(onednn=False))


def test_a_command_runs_from_its_folder_with_the_cells_knobs(tmp_path, monkeypatch, capfd):
    import json

    spec = command_spec(tmp_path, monkeypatch)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "out").mkdir()
    ran = command.run(spec, tmp_path / "out", tmp_path / "scratch")
    command.check(spec, ran, tmp_path / "out")
    assert ran.returncode == 0 and "training" in ran.tail
    assert "training" in capfd.readouterr().err  # passed through as it came: a timeout keeps it too
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "preds.npy"), np.arange(3) + 5)
    seen = json.loads((tmp_path / "out" / "env.json").read_text())
    assert json.loads(seen["knobs"]) == {"onednn": False} and seen["cwd"] == str(tmp_path / "project")


@pytest.mark.parametrize(("extra", "said"), [
    ("--fail", "the command `python train.py --seed {seed} --out {out} --fail` failed (exit code 1): "
               "ValueError: no data"),
    ("--nothing", "the command `python train.py --seed {seed} --out {out} --nothing` exited 0 but wrote nothing "
                  "under {out}"),
])  # fmt: skip
def test_a_command_that_fails_or_writes_nothing_says_so(tmp_path, monkeypatch, extra, said):
    spec = command_spec(tmp_path, monkeypatch, extra)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "out").mkdir()
    ran = command.run(spec, tmp_path / "out", tmp_path / "scratch")
    with pytest.raises(command.CommandFailed) as caught:
        command.check(spec, ran, tmp_path / "out")
    assert caught.value.message.startswith(said), caught.value.message


FAKE_TF = """
calls = []


class _Threading:
    def set_intra_op_parallelism_threads(self, n): calls.append(("intra", n))
    def set_inter_op_parallelism_threads(self, n): calls.append(("inter", n))
    def get_intra_op_parallelism_threads(self): return 3
    def get_inter_op_parallelism_threads(self): return 0


class _Experimental:
    def enable_op_determinism(self): calls.append(("op_determinism", True))


class config:
    threading = _Threading()
    experimental = _Experimental()
"""


def test_the_cells_tf_calls_are_made_in_the_commands_own_python(tmp_path):
    """The knobs that are TF calls are made as soon as the script's `import tensorflow` has run (here a
    stand-in TensorFlow that records the calls), and what TF then says is written for the record."""
    import json
    import os
    import subprocess
    import sys

    from repromatrix.backends import code_root
    from repromatrix.harness import command_site

    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import {command_site.__name__}\n")
    seen = tmp_path / "seen.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(code_root()), str(tmp_path)]),
           command_site.KNOBS_ENV: json.dumps({"op_determinism": True, "intra_op_threads": 3}),
           command_site.SEEN_ENV: str(seen)}  # fmt: skip
    script = "import tensorflow as tf; print(tf.calls)"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[('op_determinism', True), ('intra', 3)]"
    (said,) = [json.loads(line) for line in seen.read_text().splitlines()]
    assert said["intra_op_threads"] == 3
