"""`repromatrix advise`: the search it plans (pure), and the command on the fake backend (no TensorFlow)."""

from __future__ import annotations

import json

import pytest

from repromatrix import advise, cleanup, cli, matrix
from repromatrix.harness.axes import Cell
from repromatrix.reporting import advice as judge
from repromatrix.reporting.advice import Across, Setting
from tests.conftest import NEWEST_TF, repromatrix_cli
from tests.fakes import FakeBackend
from tests.test_advice import ALL_OTHER, GOOD, OTHER_PREDICTIONS, check_claims, measure, report_variants

AVX2_HOST = {"sse4_1", "avx", "avx2"}
CELLS = [Cell("2.21.0", "cpu"), Cell("2.21.0", "cpu", cpus=1), Cell("2.16.2", "cpu")]


@pytest.fixture(autouse=True)
def _not_stopping():
    cleanup.stopping.clear()
    yield
    cleanup.stopping.clear()


def test_the_search_tries_the_defaults_and_each_setting_alone_at_every_value_first():
    steps = advise.singles(("onednn", "op_determinism", "cpu_isa"), AVX2_HOST)
    assert [s.setting.label() for s in steps] == ["the defaults", "oneDNN off", "op determinism on", "ISA cap avx2",
                                                  "ISA cap avx", "ISA cap sse41"]  # fmt: skip
    search = advise.first_search(CELLS, Across.CPUS, steps, budget=40)
    assert search.values == (0, 1)
    assert search.contexts == ({"tf": "2.21.0", "device": "cpu", "recipe": "pip"},
                               {"tf": "2.16.2", "device": "cpu", "recipe": "pip"})  # fmt: skip
    assert len(search.cells) == 6 * 2 * 2
    first = [p.cell.id for p in search.cells[:4]]
    assert first == ["tf2.21.0-cpu-onednn1-det0", "tf2.21.0-cpu-onednn1-det0-cpus1", "tf2.16.2-cpu-onednn1-det0",
                     "tf2.16.2-cpu-onednn1-det0-cpus1"]  # fmt: skip
    assert search.cells[4].why == "oneDNN off alone" and search.cells[4].cell.onednn is False


def test_the_budget_takes_a_setting_whole_or_leaves_it_out_as_not_tried():
    steps = advise.singles(("onednn", "op_determinism"), AVX2_HOST)
    search = advise.first_search(CELLS[:2], Across.CPUS, steps, budget=5)
    assert [p.why for p in search.cells] == ["the defaults: the baseline every cost is measured against"] * 2 + [
        "oneDNN off alone"
    ] * 2
    assert [s.setting.label() for s in search.left_out] == ["op determinism on"]
    text = advise.describe([search], 5, measured={"tf2.21.0-cpu-onednn1-det0"})
    assert "over the budget (not tried): op determinism on" in text
    assert "tf2.21.0-cpu-onednn1-det0  " in text and "[has records" in text


def test_isa_caps_are_the_ones_this_cpu_runs_newest_first():
    assert advise.isa_caps(AVX2_HOST) == ["avx2", "avx", "sse41"]
    avx512 = AVX2_HOST | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
    assert advise.isa_caps(avx512)[:2] == ["avx512_core_vnni", "avx512_core"]


def test_pairs_are_planned_only_for_what_no_single_setting_fixes_and_best_first(tmp_path):
    def at(**knobs):
        return Cell("2.21.0", "cpu", **knobs)

    # oneDNN off fixes the weights, op determinism the predictions; neither both; the ISA cap nothing.
    measure(tmp_path, at(), GOOD)
    measure(tmp_path, at(cpus=1), ALL_OTHER)
    measure(tmp_path, at(onednn=False), GOOD)
    measure(tmp_path, at(onednn=False, cpus=1), OTHER_PREDICTIONS)
    measure(tmp_path, at(op_determinism=True), GOOD)
    measure(tmp_path, at(op_determinism=True, cpus=1), {"predictions": GOOD["predictions"], "weights": [0.0, 0.0]})
    measure(tmp_path, at(cpu_isa="avx2"), GOOD)
    measure(tmp_path, at(cpu_isa="avx2", cpus=1), ALL_OTHER)
    found = judge.advise(report_variants(tmp_path), "cpus")
    steps = advise.singles(("onednn", "op_determinism", "cpu_isa"), {"avx2"})
    planned = advise.pairs(found, steps)
    assert planned[0].setting.label() == "oneDNN off + op determinism on"
    assert all(s.setting.size == 2 for s in planned)
    assert "for cnn_training-seeded, which no single setting makes agree" in planned[0].why
    # Once a single setting works for every output, no pair is planned for that scenario variant.
    measure(tmp_path, at(intra_op_threads=1), GOOD)
    measure(tmp_path, at(intra_op_threads=1, cpus=1), GOOD)
    fixed = judge.advise(report_variants(tmp_path), "cpus")
    assert advise.pairs(fixed, steps + advise.singles(("intra_op_threads",), set())) == []


def test_a_setting_plus_another_is_one_setting():
    assert Setting.of({"onednn": False}).plus(Setting.of({"onednn": False})).size == 1


def test_advise_runs_its_cells_writes_the_advice_and_a_second_run_starts_nothing(tmp_path, monkeypatch, capsys):
    backends: list[FakeBackend] = []

    def fake_backend(args, loaded, cells):
        backends.append(FakeBackend())
        return backends[-1]

    monkeypatch.setattr(cli, "choose_backend", fake_backend)
    results, out = tmp_path / "results", tmp_path / "report"
    argv = ["advise", "--matrix", str(matrix.PACKAGED_MATRIX), "--tf", "2.21.0", "--device", "cpu", "--scenario",
            "seeded_init", "--repeats", "2", "--search", "onednn", "--results", str(results), "--out", str(out),
            "--jobs", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    assert sorted(backends[0].started) == sorted(["seeded_init-seeded #0", "seeded_init-seeded #1"] * 4)
    printed = capsys.readouterr().out
    # The fake worker's seeded bits do not depend on the cell: the defaults already agree.
    assert "seeded_init-seeded is already identical on all cores and 1 core with the defaults" in printed
    report = json.loads((out / "report.json").read_text())
    [answer] = report["advice"]
    assert answer["scenario"] == "seeded_init-seeded" and answer["working"] == ["the defaults", "oneDNN off"]
    assert {s["label"]: s["works"] for s in answer["settings"]} == {"the defaults": True, "oneDNN off": True}
    assert "## What to change" in (out / "advice.md").read_text()
    assert "## What to change" in (out / "report.md").read_text()
    assert cli.main(argv) == 0
    assert backends[1].started == [] and backends[1].prepared == []


def test_advise_across_hosts_over_folders_runs_nothing(tmp_path, monkeypatch, capsys):
    from tests.test_advice import AMD, INTEL

    monkeypatch.setattr(cli, "choose_backend", lambda *a: pytest.fail("nothing may run"))
    amd, intel = tmp_path / "amd", tmp_path / "intel"
    for cell, host_values in ((Cell("2.21.0", "cpu"), (GOOD, ALL_OTHER)),
                              (Cell("2.21.0", "cpu", cpu_isa="avx2"), (GOOD, GOOD))):  # fmt: skip
        measure(amd, cell, host_values[0], host=AMD)
        measure(intel, cell, host_values[1], host=INTEL)
    out = tmp_path / "report"
    assert cli.main(["advise", "--across", "host", str(amd), str(intel), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "identical on amd-epyc-avx2-2c and intel-xeon-avx512-2c" in printed and "ISA cap avx2" in printed
    answers = json.loads((out / "report.json").read_text())["advice"]
    assert answers[0]["working"] == ["ISA cap avx2"]
    assert check_claims(answers, amd, intel) == 2


def test_advise_settings_come_from_matrix_toml_and_are_checked(tmp_path, capsys):
    source = tmp_path / "matrix.toml"
    source.write_text('[matrix]\ntf = ["2.21.0"]\n[advise]\nacross = ["tf", "cpus"]\nscenarios = ["cnn_training"]\n'
                      "budget = 8\n")  # fmt: skip
    loaded = matrix.load(source)
    assert loaded.advise == matrix.AdviseSettings(across=("tf", "cpus"), advise_scenarios=("cnn_training",),
                                                  budget=8)  # fmt: skip
    source.write_text('[advise]\nacross = ["device"]\n')
    with pytest.raises(matrix.ConfigurationError, match=r"\[advise\]\.across = \['device'\] is not valid"):
        matrix.load(source)
    assert cli.main(["advise", "--plan", "--budget", "0"]) == 2
    assert "--budget 0: not valid; at least 1 cell" in capsys.readouterr().err


def test_the_across_axes_are_the_options_and_the_searched_axes_the_controllable_ones():
    from repromatrix import options
    from repromatrix.harness import axes

    assert tuple(Across) == options.ADVISE_ACROSS
    assert set(judge.CONTROLLED) <= {a.name for a in axes.AT_RUN_TIME}
    assert set(advise.ALONE) | {"cpu_isa"} == set(options.ADVISE_SEARCH)


def test_a_report_not_asked_for_advice_has_none(tmp_path):
    from repromatrix import reporting
    from tests.test_advice import cell

    measure(tmp_path / "r", cell(), GOOD)
    measure(tmp_path / "r", cell(cpus=1), OTHER_PREDICTIONS)
    report = reporting.render_all([tmp_path / "r"], tmp_path / "out")
    assert report.advice == [] and json.loads((tmp_path / "out" / "report.json").read_text())["advice"] == []
    assert not (tmp_path / "out" / "advice.md").exists()
    assert "What to change" not in (tmp_path / "out" / "report.md").read_text()
    asked = reporting.render_all([tmp_path / "r"], tmp_path / "asked", across=["cpus"])
    assert "none of the 1 measured settings" in asked.headline[-1]
    assert 'id="advice"' in (tmp_path / "asked" / "report.html").read_text()


def test_across_host_on_one_host_runs_that_hosts_own_search_at_every_core():
    steps = advise.singles(("onednn",), AVX2_HOST)
    search = advise.first_search(CELLS, Across.HOST, steps, budget=40)
    assert search.values == (None,)
    assert [p.cell.id for p in search.cells] == ["tf2.21.0-cpu-onednn1-det0", "tf2.16.2-cpu-onednn1-det0",
                                                 "tf2.21.0-cpu-onednn0-det0", "tf2.16.2-cpu-onednn0-det0"]  # fmt: skip
    assert "(this host's own search)" in advise.describe([search], 40, set())
    across_tf = advise.first_search(CELLS, Across.TF, steps, budget=40)
    assert across_tf.values == ("2.16.2", "2.21.0") and across_tf.contexts == ({"device": "cpu", "recipe": "pip"},)


@pytest.mark.tf
def test_advise_on_real_tensorflow_claims_only_what_its_records_show(tmp_path, tf_python):
    """A real search across cores (the defaults and oneDNN off, seeded_init, 2 repeats): it finishes, says
    something per seeded variant, and every setting it calls working has one digest per output in the records."""
    tf_python(NEWEST_TF)
    path = tmp_path / "matrix.toml"
    path.write_text(f'[matrix]\ntf = ["{NEWEST_TF}"]\ndevice = ["cpu"]\ncpus = [0, 1]\n'
                    '[run]\nscenarios = ["seeded_init"]\nrepeats = 2\n[advise]\nsearch = ["onednn"]\n')  # fmt: skip
    results, out = tmp_path / "results", tmp_path / "report"
    done = repromatrix_cli("advise", "--matrix", str(path), "--backend", "local", "--jobs", "1", "--results",
                           str(results), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [answer] = json.loads((out / "report.json").read_text())["advice"]
    assert answer["scenario"] == "seeded_init-seeded" and answer["values"] == ["all cores", "1 core"]
    assert {s["label"] for s in answer["settings"]} == {"the defaults", "oneDNN off"}
    assert all(s["tried"] for s in answer["settings"])
    check_claims([answer], results)
    assert answer["line"] in done.stdout


def test_advise_exits_5_when_a_seeded_variant_varies_and_still_writes_the_advice(tmp_path, capsys):
    from tests.test_advice import cell

    measure(tmp_path / "r", cell(), GOOD, vary=True)
    measure(tmp_path / "r", cell(cpus=1), GOOD)
    out = tmp_path / "report"
    assert cli.main(["advise", "--across", "cpus", str(tmp_path / "r"), "--out", str(out)]) == 5
    assert "1 expectation broke" in capsys.readouterr().err
    [answer] = json.loads((out / "report.json").read_text())["advice"]
    assert answer["working"] == [] and "varies run to run" in (out / "advice.md").read_text()
