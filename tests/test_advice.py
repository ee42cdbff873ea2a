"""What to change (reporting/advice.py) on hand-made records: which measured settings make an axis agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repromatrix.harness import records
from repromatrix.harness.axes import Cell
from repromatrix.harness.hosts import Host
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.reporting import advice, analysis
from repromatrix.reporting.advice import Across, Setting, Verdict
from repromatrix.reporting.load import load

SCENARIO = "cnn_training"
AMD = Host(vendor="amd", model="AMD EPYC", isa=("avx2",), cores=2, id="a" * 12, label="amd-epyc-avx2-2c")
INTEL = Host(vendor="intel", model="Intel Xeon", isa=("avx2", "avx512f"), cores=2, id="b" * 12,
             label="intel-xeon-avx512-2c")  # fmt: skip


def measure(root: Path, cell: Cell, values: dict[str, list[float]], *, seconds: float = 1.0, repeats: int = 2,
            host: Host = AMD, variant: str = "seeded", vary: bool = False) -> None:  # fmt: skip
    """Repeats of one seeded variant in one cell: `values` per output, the same bits in every repeat
    (unless `vary`), each its own process identity, timed `seconds` of scenario time."""
    for repeat in range(repeats):
        arrays = {}
        for name, numbers in values.items():
            array = np.asarray(numbers, dtype=np.float32) + (np.float32(repeat * 1e-3) if vary else 0)
            arrays[f"model1.{name}"] = arrays[f"model2.{name}"] = array
        record = records.Record.ok(
            arrays=arrays, in_process_identical=True, scenario=SCENARIO, variant=variant,
            seed=records.seed_for(variant, 42), repeat=repeat, cell=cell.params(),
            timings={"scenario_s": seconds, "process_wall_s": seconds + 2},
            environment={"ran_on": "cpu"}, reuse_key="k", host=host,
        )  # fmt: skip
        record.write(CellLayout(root / cell.id).record(SCENARIO, variant, repeat), arrays)


def report_variants(*folders: Path) -> list[analysis.Variant]:
    return analysis.variants(load(list(folders)).records)


def cell(**knobs) -> Cell:
    return Cell("2.21.0", "cpu", **knobs)


GOOD = {"predictions": [1.0, 2.0], "weights": [3.0, 4.0]}
OTHER_PREDICTIONS = {"predictions": [1.0, 2.5], "weights": [3.0, 4.0]}
ALL_OTHER = {"predictions": [9.0, 2.5], "weights": [3.5, 4.0]}


@pytest.fixture
def cores(tmp_path) -> Path:
    """Across cores: the defaults differ on 1 core in predictions; oneDNN off fixes it at 1.5× time; op
    determinism fixes it at 3× on all cores and 2× on 1; 1 intra-op thread was measured on all cores only."""
    measure(tmp_path, cell(), GOOD, seconds=2.0)
    measure(tmp_path, cell(cpus=1), OTHER_PREDICTIONS, seconds=4.0)
    measure(tmp_path, cell(onednn=False), GOOD, seconds=3.0)
    measure(tmp_path, cell(onednn=False, cpus=1), GOOD, seconds=6.0)
    measure(tmp_path, cell(op_determinism=True), GOOD, seconds=6.0)
    measure(tmp_path, cell(op_determinism=True, cpus=1), GOOD, seconds=8.0)
    measure(tmp_path, cell(intra_op_threads=1), GOOD, seconds=2.0)
    return tmp_path


def by_label(found: advice.Advice) -> dict[str, advice.Option]:
    return {option.setting.label(): option for option in found.options}


def test_working_settings_are_named_with_their_cost_cheapest_first(cores):
    [found] = advice.advise(report_variants(cores), "cpus")
    assert found.scenario == "cnn_training-seeded" and found.values == ("all cores", "1 core")
    assert {k: found.context[k] for k in ("tf", "device", "recipe")} == {
        "tf": "2.21.0",
        "device": "cpu",
        "recipe": "pip",
    }
    assert [o.setting.label() for o in found.working] == ["oneDNN off", "op determinism on"]
    onednn, determinism = found.working
    assert onednn.cost == {"all cores": 1.5, "1 core": 1.5} and onednn.worst_cost == 1.5
    assert determinism.cost == {"all cores": 3.0, "1 core": 2.0} and determinism.worst_cost == 3.0
    defaults = by_label(found)["the defaults"]
    assert defaults.trials["model1.predictions"].verdict == Verdict.DIFFERS
    assert defaults.trials["model1.weights"].verdict == Verdict.WORKS  # the weights agree even so
    assert defaults.differing == 1
    assert found.line() == ("To make cnn_training-seeded identical on all cores and 1 core (TensorFlow 2.21.0, "
                            "device cpu): oneDNN off (1.50× time); or op determinism on (3.00× time)")  # fmt: skip
    assert onednn.setting.how() == ["TF_ENABLE_ONEDNN_OPTS=0"]
    assert determinism.setting.how() == ["tf.config.experimental.enable_op_determinism()"]


def test_a_setting_measured_at_one_value_only_is_not_tried_never_advice(cores):
    [found] = advice.advise(report_variants(cores), "cpus")
    intra = by_label(found)["intra-op threads 1"]
    assert not intra.tried and not intra.works
    trial = intra.trials["model1.predictions"]
    assert trial.verdict == Verdict.NOT_TRIED and trial.missing == {"1 core": "not run"}
    assert "intra-op threads 1" not in found.line() and intra not in found.working
    assert [o.setting.label() for o in found.not_tried] == ["intra-op threads 1"]
    text = advice.markdown([found])
    assert "not tried (1 core: not run)" in text


def as_json(value: object) -> object:
    """A cell's value as report.json holds it (tuples as lists)."""
    return json.loads(json.dumps(value))


def check_claims(answers: list[dict], *folders: Path) -> int:
    """Every setting report.json's advice calls working, checked against the record files themselves (read
    without the reporter): at every value of the axis, in its context, one digest per output. Returns how
    many claims it checked."""
    on_disk = [records.Record.read(path) for folder in folders for _, path in Layout(folder).record_files()]
    checked = 0
    for answer in answers:
        for setting in (s for s in answer["settings"] if s["works"]):
            wanted = Setting.of(setting["changes"])
            for output in answer["outputs"]:
                digests: dict[str, set[str]] = {}
                for record in on_disk:
                    cell = Cell.from_record(record.cell).params()
                    context = answer["context"].items()
                    elsewhere = any(as_json(cell.get(k, v)) != as_json(v) for k, v in context if k != "host")
                    if not record.is_ok or record.name != answer["scenario"] or Setting.of(cell) != wanted or elsewhere:
                        continue
                    value = record.host_label if answer["across"] == "host" else cell[answer["across"]]
                    digests.setdefault(str(value), set()).add(record.outputs[output].sha256)
                assert len(digests) == len(answer["values"]), (setting["label"], digests)
                assert len(set.union(*digests.values())) == 1, (setting["label"], output, digests)
                checked += 1
    return checked


def test_every_setting_called_working_has_one_digest_in_the_records_at_every_value(cores):
    found = advice.advise(report_variants(cores), "cpus")
    assert [o.setting.label() for o in found[0].working] == ["oneDNN off", "op determinism on"]
    assert check_claims(advice.to_json(found), cores) == 2 * 2


def test_none_of_the_measured_settings_names_the_closest(tmp_path):
    measure(tmp_path, cell(), GOOD)
    measure(tmp_path, cell(cpus=1), ALL_OTHER)
    measure(tmp_path, cell(onednn=False), GOOD)
    measure(tmp_path, cell(onednn=False, cpus=1), OTHER_PREDICTIONS)  # the weights agree, predictions not
    [found] = advice.advise(report_variants(tmp_path), "cpus")
    assert found.working == []
    assert found.closest is not None and found.closest.setting.label() == "oneDNN off"
    assert found.line().endswith("none of the 2 measured settings; closest: oneDNN off (1 of 2 outputs still differ)")
    text = advice.markdown([found])
    assert "None of the measured settings makes every output agree. The closest: oneDNN off." in text
    assert "- model1.weights alone agrees under: oneDNN off" in text


def test_a_setting_that_varies_run_to_run_or_has_one_identity_does_not_work(tmp_path):
    measure(tmp_path, cell(), GOOD, vary=True)
    measure(tmp_path, cell(cpus=1), GOOD)
    measure(tmp_path, cell(onednn=False), GOOD, repeats=1)
    measure(tmp_path, cell(onednn=False, cpus=1), GOOD, repeats=1)
    [found] = advice.advise(report_variants(tmp_path), "cpus")
    options = by_label(found)
    assert options["the defaults"].trials["model1.predictions"].verdict == Verdict.VARIES
    assert options["oneDNN off"].trials["model1.predictions"].verdict == Verdict.UNTESTED
    assert found.working == []


def test_across_two_hosts_the_isa_cap_is_what_makes_them_agree(tmp_path):
    amd, intel = tmp_path / "amd", tmp_path / "intel"
    measure(amd, cell(), GOOD, host=AMD, seconds=2.0)
    measure(intel, cell(), ALL_OTHER, host=INTEL, seconds=1.0)
    measure(amd, cell(onednn=False), GOOD, host=AMD)
    measure(intel, cell(onednn=False), OTHER_PREDICTIONS, host=INTEL)
    measure(amd, cell(cpu_isa="avx2"), GOOD, host=AMD, seconds=2.0)
    measure(intel, cell(cpu_isa="avx2"), GOOD, host=INTEL, seconds=1.5)
    measure(intel, cell(cpu_isa="avx"), GOOD, host=INTEL)  # only one host: not tried
    [found] = advice.advise(report_variants(amd, intel), Across.HOST)
    assert found.values == ("amd-epyc-avx2-2c", "intel-xeon-avx512-2c")
    assert [o.setting.label() for o in found.working] == ["ISA cap avx2"]
    [cap] = found.working
    assert cap.setting.how() == ["ONEDNN_MAX_CPU_ISA=AVX2"]
    assert cap.cost == {"amd-epyc-avx2-2c": 1.0, "intel-xeon-avx512-2c": 1.5}
    assert by_label(found)["ISA cap avx"].trials["model1.weights"].missing == {"amd-epyc-avx2-2c": "not run"}
    assert "ISA cap avx2 (1.50× time)" in found.line()
    assert "host" not in found.context


def test_one_value_of_the_axis_is_nothing_to_agree_across(tmp_path):
    measure(tmp_path, cell(), GOOD)
    [found] = advice.advise(report_variants(tmp_path), "host")
    assert found.line().endswith("only amd-epyc-avx2-2c measured, nothing to agree across")
    assert advice.headline([found]) == ["Nothing to agree across for 1 scenario variant × context measured at one "
                                        "value only (amd-epyc-avx2-2c): TensorFlow 2.21.0, device cpu"]  # fmt: skip
    assert "### " not in advice.markdown([found])  # no table for it
    assert found.working == [] and found.to_json()["askable"] is False


def test_unseeded_variants_get_no_advice_and_scenarios_narrow_it(cores):
    measure(cores, cell(), GOOD, variant="unseeded", vary=True)
    assert [a.scenario for a in advice.advise(report_variants(cores), "cpus")] == ["cnn_training-seeded"]
    assert advice.advise(report_variants(cores), "cpus", scenarios=["init"]) == []
    assert len(advice.advise(report_variants(cores), "cpus", scenarios=["cnn_training"])) == 1


def test_settings_are_named_by_what_they_change_and_combine():
    both = Setting.of({"onednn": False}).plus(Setting.of({"cpu_isa": "avx2"}))
    assert both.label() == "oneDNN off + ISA cap avx2"
    assert both.how() == ["TF_ENABLE_ONEDNN_OPTS=0", "ONEDNN_MAX_CPU_ISA=AVX2"]
    assert Setting.of(Cell("2.21.0", "cpu", cpus=1).params()).is_default  # cores are not a setting
    threads = Setting.of({"intra_op_threads": 1, "inter_op_threads": 1})
    assert threads.how() == ["tf.config.threading.set_intra_op_parallelism_threads(1)",
                             "tf.config.threading.set_inter_op_parallelism_threads(1)"]  # fmt: skip
    assert both.values["onednn"] is False and both.values["op_determinism"] is False


def test_the_defaults_already_agreeing_is_said_so(tmp_path):
    measure(tmp_path, cell(), GOOD)
    measure(tmp_path, cell(cpus=1), GOOD)
    [found] = advice.advise(report_variants(tmp_path), "cpus")
    assert found.line() == "cnn_training-seeded is already identical on all cores and 1 core with the defaults"
