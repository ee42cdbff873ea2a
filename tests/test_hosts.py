"""Real machines as an axis, on hand-made records: merging hosts, attribution, labels, refusal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from repromatrix import reporting, runner
from repromatrix.errors import ResultsBusyError
from repromatrix.harness import hosts, records
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.reporting import text
from tests.fakes import FakeBackend
from tests.test_runner_logic import CELL, matrix

EPYC = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: sse4_1 avx avx2 avx512f avx512bw\n"
XEON = ("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: sse4_1 avx avx2 avx512f avx512bw amx_tile amx_bf16\n")  # fmt: skip


def host(text_: str, label: str | None = None) -> hosts.Host:
    return hosts.fingerprint(label=label, text=text_)


def make(root: Path, machine: hosts.Host, cell_id: str, repeat: int, values: list[float]) -> None:
    arrays = {f"{m}.{n}": np.asarray(values, dtype=np.float32) for m in ("model1", "model2")
              for n in ("predictions", "weights")}  # fmt: skip
    cell = {"id": cell_id, "tf": "2.21.0", "device": "cpu", "onednn": "onednn1" in cell_id}
    path = CellLayout(root / cell_id).record("seeded_init", "seeded", repeat)
    records.Record.ok(arrays=arrays, in_process_identical=True, scenario="seeded_init", variant="seeded", seed=42,
                      repeat=repeat, cell=cell, reuse_key="k", host=machine).write(path, arrays)  # fmt: skip


def test_derived_labels_name_vendor_family_isa_and_cores():
    assert hosts.derived_label(replace(host(EPYC), cores=2)) == "amd-epyc-avx512-2c"
    assert hosts.derived_label(replace(host(XEON), cores=2)) == "intel-xeon-avx512-amx-2c"
    assert host(EPYC, "laptop").label == "laptop"
    assert host(EPYC).id != host(XEON).id and host(EPYC).id == host(EPYC, "other name").id
    assert hosts.check_label("ci-ubuntu-24.04") is None and hosts.check_label("my laptop") is not None


def test_two_hosts_merge_without_losing_a_record_and_host_is_an_axis(tmp_path):
    amd, intel = host(EPYC), host(XEON)
    for repeat in range(3):  # the same cells, the same repeat numbers, two machines
        make(tmp_path / "a", amd, "tf2.21.0-cpu-onednn1-det0", repeat, [1, 2])
        make(tmp_path / "b", intel, "tf2.21.0-cpu-onednn1-det0", repeat, [1, 3])
        make(tmp_path / "a", amd, "tf2.21.0-cpu-onednn0-det0", repeat, [5, 5])
        make(tmp_path / "b", intel, "tf2.21.0-cpu-onednn0-det0", repeat, [5, 5])
    report = reporting.build([tmp_path / "a", tmp_path / "b"])
    assert sum(v.ok_repeats for v in report.variants) == 12  # none dropped in the merge
    # Run to run within one host: each host is reproducible, although the hosts differ.
    assert {v.run_to_run for v in report.variants} == {"identical"} and not report.findings
    assert {v.cell_id for v in report.variants} == {
        f"tf2.21.0-cpu-onednn{n}-det0@{label}" for n in (0, 1) for label in (amd.label, intel.label)
    }
    by_host = [a for a in report.attribution if a.axis == "host" and a.output == "model1.predictions"]
    assert [(a.from_value, a.to_value, a.differ, a.pairs) for a in by_host] == [(amd.label, intel.label, 1, 2)]
    assert any(line.startswith(f"- host {amd.label}→{intel.label}: 2/4 pairs differ") for line in report.headline)
    assert "Measured on 2 hosts" in report.headline[-1] and "intel-xeon-avx512-amx" in report.headline[-1]
    payload = json.loads(text.json_report(report))
    assert sorted(h["label"] for h in payload["hosts"]) == sorted([amd.label, intel.label])


def test_one_label_for_two_machines_gets_their_ids(tmp_path):
    make(tmp_path / "a", host(EPYC, "ci"), "tf2.21.0-cpu-onednn1-det0", 0, [1, 2])
    make(tmp_path / "b", host(XEON, "ci"), "tf2.21.0-cpu-onednn1-det0", 0, [1, 2])
    labels = {v.cell["host"] for v in reporting.build([tmp_path / "a", tmp_path / "b"]).variants}
    assert len(labels) == 2 and all(label.startswith("ci-") for label in labels)


def test_one_host_is_named_in_the_headline_and_the_drift_says_when_the_baseline_came_from_another(tmp_path):
    for repeat in range(2):
        make(tmp_path / "a", host(EPYC), "tf2.21.0-cpu-onednn1-det0", repeat, [1, 2])
        make(tmp_path / "b", host(XEON), "tf2.21.0-cpu-onednn1-det0", repeat, [1, 2])
    report = reporting.build([tmp_path / "a"], baseline=tmp_path / "b")
    assert report.headline[-1].startswith("Measured on one host: amd-epyc-avx512-")
    assert any("was measured on another host (intel-xeon" in w for w in report.warnings)


def test_a_run_into_another_hosts_folder_is_refused(tmp_path):
    runner.run_matrix(FakeBackend(), matrix(), [CELL], runner.RunOptions(tmp_path, host=host(EPYC)))
    before = {p: p.read_bytes() for _, p in Layout(tmp_path).record_files()}
    with pytest.raises(ResultsBusyError, match=r"holds records measured on host amd-epyc.*this is host intel-xeon"):
        runner.run_matrix(FakeBackend(), matrix(), [CELL], runner.RunOptions(tmp_path, host=host(XEON)))
    assert {p: p.read_bytes() for _, p in Layout(tmp_path).record_files()} == before
    statuses = {records.Record.read(p).host.label for _, p in Layout(tmp_path).record_files()}
    assert statuses == {host(EPYC).label}


def test_a_published_report_json_stands_beside_results_folders(tmp_path):
    for repeat in range(2):
        make(tmp_path / "a", host(EPYC), "tf2.21.0-cpu-onednn1-det0", repeat, [1, 2])
        make(tmp_path / "a", host(EPYC), "tf2.21.0-cpu-onednn0-det0", repeat, [5, 5])
        make(tmp_path / "b", host(XEON), "tf2.21.0-cpu-onednn1-det0", repeat, [1, 3])
        make(tmp_path / "b", host(XEON), "tf2.21.0-cpu-onednn0-det0", repeat, [5, 5])
    reporting.render_all([tmp_path / "a"], tmp_path / "published")
    published = tmp_path / "published" / "report.json"
    report = reporting.build([tmp_path / "b", published])
    # Its digests are enough for classes and attribution; distances need arrays it does not have.
    assert {v.cell.get("host") for v in report.variants} == {host(EPYC).label, host(XEON).label}
    flips = [a for a in report.attribution if a.axis == "host" and a.output == "model1.predictions"]
    assert [(a.differ, a.pairs) for a in flips] == [(1, 2)]
    assert "arrays unavailable" in flips[0].distance.brief()
    assert report.headline[-1] == (
        f"Against the published report {published}: 2 of 4 shared digests equal, 2 differ "
        "(cell × scenario variant × compared output present on both sides)."
    )
    assert "from the published report" in report.headline[-2]
