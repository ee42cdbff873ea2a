"""Hosts against each other, on hand-made records: a label is a host, every pair of hosts, the headline's
line per scenario·output, what a plain run gets, and who computes alike on the probe (#29)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from repromatrix import reporting
from repromatrix.harness import hostprobe, hosts, records
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.reporting import text

EPYC512 = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\nflags\t\t: sse4_1 avx avx2 fma avx512f avx512bw\n"
EPYC2 = "vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\nflags\t\t: sse4_1 avx avx2 fma\n"
XEON = ("vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: sse4_1 avx avx2 fma avx512f avx512bw amx_tile amx_bf16\n")  # fmt: skip
NATIVE, CAPPED = "tf2.21.0-cpu-onednn1-det0", "tf2.21.0-cpu-onednn1-det0-isa-avx2"


def machine(cpuinfo: str, label: str | None = None, **computes: object) -> hosts.Host:
    return replace(hosts.fingerprint(label=label, text=cpuinfo), cores=2, computes=dict(computes))


def probe(matmul: str, conv: str, plain_onednn: bool) -> dict[str, object]:
    kernels = {"matmul": matmul, "conv": conv, "reduction": "r", "exp": "e"}
    return {
        "tf": "2.21.0",
        "plain_run": {
            "onednn": plain_onednn,
            "onednn_isa": None,
            "thread_pools": {"tf_Compute": 3},
            "usable_cores": 2,
        },
        "probe": {"onednn1": kernels, "onednn0": {**kernels, "matmul": "m0"}},
    }


def make(root: Path, host: hosts.Host, cell_id: str, repeat: int, values: list[float]) -> None:
    arrays = {f"{m}.{n}": np.asarray(values, dtype=np.float32) for m in ("model1", "model2")
              for n in ("predictions", "weights")}  # fmt: skip
    cell = {"id": cell_id, "tf": "2.21.0", "device": "cpu", "onednn": "onednn1" in cell_id,
            "cpu_isa": "avx2" if "isa-avx2" in cell_id else "native"}  # fmt: skip
    path = CellLayout(root / cell_id).record("seeded_init", "seeded", repeat)
    records.Record.ok(arrays=arrays, in_process_identical=True, scenario="seeded_init", variant="seeded", seed=42,
                      repeat=repeat, cell=cell, reuse_key="k", host=host,
                      process_id=f"{root.name}-{cell_id}-{repeat}").write(path, arrays)  # fmt: skip


def three_hosts(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """Two AVX-512 hosts of two vendors that compute alike, and an AVX2-only one that does not; all three
    agree once capped at avx2 (the issue's dropout_training table, in small)."""
    avx512 = machine(EPYC512, "amd-epyc-avx512", **probe("M", "C", True))
    intel = machine(XEON, "intel-xeon-amx", **probe("M", "C", True))
    avx2 = machine(EPYC2, "amd-epyc-avx2", **probe("M2", "C2", False))
    folders = [tmp_path / "avx512", tmp_path / "intel", tmp_path / "avx2"]
    for repeat in range(2):
        for folder, host, native in zip(folders, (avx512, intel, avx2), ([1, 2], [1, 2], [1, 3]), strict=True):
            make(folder, host, NATIVE, repeat, native)
            make(folder, host, CAPPED, repeat, [7, 8])
    return folders, ["amd-epyc-avx2", "amd-epyc-avx512", "intel-xeon-amx"]


def test_three_hosts_every_pair_is_attributed_and_the_headline_says_who_agrees_where(tmp_path):
    folders, labels = three_hosts(tmp_path)
    report = reporting.build(folders)
    assert not report.warnings and not report.findings
    rows = [a for a in report.attribution if a.axis == "host" and a.output == "model1.predictions"]
    # Hosts have no order: three hosts, three pairs (the AVX2 host against the Intel one among them).
    assert sorted((a.from_value, a.to_value) for a in rows) == [
        ("amd-epyc-avx2", "amd-epyc-avx512"), ("amd-epyc-avx2", "intel-xeon-amx"),
        ("amd-epyc-avx512", "intel-xeon-amx"),
    ]  # fmt: skip
    differ = {(a.from_value, a.to_value): (a.differ, a.pairs) for a in rows}
    assert differ[("amd-epyc-avx512", "intel-xeon-amx")] == (0, 2)
    assert differ[("amd-epyc-avx2", "intel-xeon-amx")] == (1, 2)
    assert (
        "- seeded_init-seeded predictions: amd-epyc-avx512 = intel-xeon-amx ≠ amd-epyc-avx2 at "
        f"{NATIVE}; all 3 agree at {CAPPED}"
    ) in report.headline
    payload = json.loads(text.json_report(report))
    pairs = payload["host_comparison"]["agreement"][0]["pairs"]
    assert {tuple(p["hosts"]): (p["agree"], p["differ"]) for p in pairs}[("amd-epyc-avx2", "intel-xeon-amx")] == (
        [CAPPED],
        [NATIVE],
    )
    assert sorted(h["label"] for h in payload["hosts"]) == labels


def test_hosts_that_compute_alike_are_grouped_and_the_probe_parts_that_part_them_named(tmp_path):
    folders, _ = three_hosts(tmp_path)
    report = reporting.build(folders)
    assert report.comparison is not None
    (groups,) = report.comparison.computes
    assert groups.groups == [["amd-epyc-avx2"], ["amd-epyc-avx512", "intel-xeon-amx"]]
    (difference,) = groups.differences
    assert difference["hosts"] == ["amd-epyc-avx2", "amd-epyc-avx512"]
    assert set(difference["differ"]) == {"matmul (oneDNN on)", "conv (oneDNN on)", "conv (oneDNN off)"}
    section = "\n".join(report.comparison.lines(report.hosts))
    assert "amd-epyc-avx512 and intel-xeon-amx compute alike on every probe part" in section
    assert "amd-epyc-avx2 computes like amd-epyc-avx512 on matmul (oneDNN off), reduction and exp, not on" in section


def test_the_report_names_the_cell_a_plain_run_matches_or_says_none_does(tmp_path):
    folders, _ = three_hosts(tmp_path)
    report = reporting.build(folders)
    assert report.comparison is not None
    plain = {p.host: p for p in report.comparison.plain}
    assert plain["intel-xeon-amx"].cell == NATIVE  # TF turns oneDNN on there by itself: the baseline
    # On the AVX2 host TF leaves oneDNN off, and the matrix has no onednn0 cell: no cell does.
    assert plain["amd-epyc-avx2"].cell is None and plain["amd-epyc-avx2"].nearest == NATIVE
    section = "\n".join(report.comparison.lines(report.hosts))
    assert "amd-epyc-avx2, TF 2.21.0: oneDNN off with TF_ENABLE_ONEDNN_OPTS unset" in section
    assert "no cell measured here runs these settings" in section
    assert "measure --cell tf2.21.0-cpu-onednn0-det0 to know what a plain run computes" in section
    assert (
        f"intel-xeon-amx, TF 2.21.0: oneDNN on with TF_ENABLE_ONEDNN_OPTS unset, thread pools at TF's "
        f"defaults (tf_Compute 3 threads on 2 cores); a plain run computes what cell {NATIVE} computes" in section
    )


def test_one_machine_under_two_labels_is_two_hosts_that_agree(tmp_path):
    """The issue's three commands: the same machine, --host laptop and --host ci."""
    same = hosts.fingerprint(text=EPYC2)
    for repeat in range(2):
        make(tmp_path / "laptop", same.with_label("laptop"), NATIVE, repeat, [1, 2])
        make(tmp_path / "ci", same.with_label("ci"), NATIVE, repeat, [1, 2])
    report = reporting.build([tmp_path / "laptop", tmp_path / "ci"])
    assert sum(v.ok_repeats for v in report.variants) == 4 and not report.warnings
    rows = [a for a in report.attribution if a.axis == "host"]
    assert rows and all((a.pairs, a.differ) == (1, 0) for a in rows)
    assert "Measured on 2 hosts: ci (" in report.headline[-1] and "; laptop (" in report.headline[-1]
    assert f"- seeded_init-seeded predictions: ci = laptop at every setting measured on both (1 cell: {NATIVE})" in (
        report.headline
    )


def test_one_label_in_two_folders_is_one_host_whose_repeats_pool(tmp_path):
    laptop = hosts.fingerprint(label="laptop", text=EPYC2)
    for repeat in range(2):  # the same repeat numbers, measured twice
        make(tmp_path / "monday", laptop, NATIVE, repeat, [1, 2])
        make(tmp_path / "tuesday", laptop, NATIVE, repeat, [1, 2] if repeat else [1, 2.5])
    report = reporting.build([tmp_path / "monday", tmp_path / "tuesday"])
    (variant,) = report.variants
    assert variant.ok_repeats == 4 and variant.identities == 4 and not report.warnings
    assert variant.run_to_run == "varies"  # judged over all four: tuesday's repeat 0 differs
    assert report.comparison is not None
    (note,) = report.comparison.notes
    assert note.startswith(f"host laptop, cell {NATIVE}: 4 records pooled (2 from ") and "run to run" in note
    assert note in "\n".join(report.comparison.lines(report.hosts))


def test_the_same_folder_twice_is_read_once_and_a_copied_folder_counts_once(tmp_path):
    laptop = hosts.fingerprint(label="laptop", text=EPYC2)
    for repeat in range(2):
        make(tmp_path / "r", laptop, NATIVE, repeat, [1, 2])
    twice = reporting.build([tmp_path / "r", tmp_path / "r", tmp_path / "." / "r"])
    assert [v.ok_repeats for v in twice.variants] == [2] and not twice.warnings
    assert twice.comparison is not None and not twice.comparison.notes
    os.system(f"cp -r {tmp_path / 'r'} {tmp_path / 'copy'}")
    copied = reporting.build([tmp_path / "r", tmp_path / "copy"])
    assert [v.ok_repeats for v in copied.variants] == [2] and not copied.warnings
    assert copied.comparison is not None
    assert [n for n in copied.comparison.notes if "counted once" in n]


def test_one_label_on_two_different_machines_is_kept_apart_with_a_warning(tmp_path):
    make(tmp_path / "a", hosts.fingerprint(label="ci", text=EPYC2), NATIVE, 0, [1, 2])
    make(tmp_path / "b", hosts.fingerprint(label="ci", text=XEON), NATIVE, 0, [1, 2])
    report = reporting.build([tmp_path / "a", tmp_path / "b"])
    assert len({v.cell["host"] for v in report.variants}) == 2
    (warning,) = report.warnings
    assert "the host label ci names 2 machines" in warning and "--host NAME" in warning
    assert report.comparison is not None and not report.comparison.notes  # kept apart: nothing pooled


def test_the_probe_runs_without_the_knobs_once_per_host_and_tf(tmp_path):
    """The harness's probe, through the test worker (no TensorFlow): the plain run has no
    TF_ENABLE_ONEDNN_OPTS, the second process sets the other oneDNN state, the answer is cached."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "tests.fake_worker", "--probe-host"]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_ENABLE_ONEDNN_OPTS": "1"}  # set by the user: removed
    host = hosts.fingerprint(text=EPYC2)
    cell = {"id": NATIVE, "tf": "2.21.0", "device": "cpu"}
    answer = hostprobe.measure(command, env, host, cell, tmp_path, shared=False)
    assert "error" not in answer
    assert answer["plain_run"]["onednn"] is False
    assert set(answer["probe"]) == {"onednn0", "onednn1"}
    assert (tmp_path / hostprobe.CELL_CACHE).is_file()
    # Cached: a command that cannot run is never started.
    assert hostprobe.measure(["/nonexistent"], env, host, cell, tmp_path, shared=False) == answer
    other = hostprobe.measure(["/nonexistent"], env, host, {**cell, "tf": "2.16.2"}, tmp_path / "x", shared=False)
    assert "error" in other  # another TF version is measured, not read from the cache


def test_a_run_under_another_label_into_a_folder_is_refused(tmp_path):
    """One folder, one host: the same machine under a second label goes to a folder of its own."""
    from repromatrix import runner
    from repromatrix.errors import ResultsBusyError
    from tests.fakes import FakeBackend
    from tests.test_runner_logic import CELL, matrix

    runner.run_matrix(FakeBackend(), matrix(), [CELL], runner.RunOptions(tmp_path, host=machine(EPYC2, "laptop")))
    with pytest.raises(ResultsBusyError, match=r"holds records of host laptop, and this run is labelled ci"):
        runner.run_matrix(FakeBackend(), matrix(), [CELL], runner.RunOptions(tmp_path, host=machine(EPYC2, "ci")))
    labels = {records.Record.read(p).host.label for _, p in Layout(tmp_path).record_files()}
    assert labels == {"laptop"}


def test_probes_of_two_versions_are_not_compared():
    from repromatrix.reporting import hosts as compare

    old, new = probe("M", "C", True), probe("M", "C", True)
    old["key"], new["key"] = {"probe_version": 1}, {"probe_version": 2}
    found = compare.compute_groups([{"label": "a", "computes": {"2.21.0": old}},
                                    {"label": "b", "computes": {"2.21.0": new}}])  # fmt: skip
    assert found == []  # one host per version: nothing to group, and no "alike" made up across versions


def test_every_record_of_a_run_carries_what_the_host_computes(tmp_path):
    """Through the runner and the real harness (the test worker in place of TensorFlow): the probe's answer
    lands in every record's host, beside the fingerprint, and is measured once per cell folder."""
    from repromatrix import runner
    from tests.fakes import FakeBackend
    from tests.test_runner_logic import CELL, matrix

    host = hosts.fingerprint(label="laptop", text=EPYC2)
    runner.run_matrix(FakeBackend(), matrix(), [CELL], runner.RunOptions(tmp_path, host=host))
    found = [records.Record.read(p).host for _, p in Layout(tmp_path).record_files()]
    assert found and all(h.id == host.id and h.label == "laptop" for h in found)
    assert all(h.computes["plain_run"]["onednn"] is False for h in found)
    assert all(set(h.computes["probe"]) == {"onednn0", "onednn1"} for h in found)
    assert len(list(tmp_path.glob(f"*/{hostprobe.CELL_CACHE}"))) == 1
    report = reporting.build([tmp_path])
    assert report.comparison is not None and [p.host for p in report.comparison.plain] == ["laptop"]
