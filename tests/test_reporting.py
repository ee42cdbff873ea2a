"""The reporter on hand-made records: verdicts, classes, distances, drift, error and skipped displays."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from repromatrix import reporting
from repromatrix.harness import axes, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import CellLayout
from repromatrix.reporting import analysis, distances, text
from repromatrix.reporting.load import load

ONE = np.float32(1.0)


def make(
    root: Path,
    cell_id: str,
    scenario: str,
    variant: str,
    repeat: int,
    predictions: list[float] | None = None,
    *,
    twin: list[float] | None = None,
    status: str = "ok",
    message: str = "",
    ran_on: str = "cpu",
    device: str = "cpu",
    tf: str | None = None,
    cell: dict | None = None,
    extra: dict | None = None,
    expect: dict | None = None,
    fork_parent: str = "",
) -> None:
    """One record and its npz, as the worker writes them (forked from `fork_parent` when one is given)."""
    tf = tf or cell_id.split("-")[0].removeprefix("tf")
    cell = {"id": cell_id, "tf": tf, "device": device, **(cell or {})}
    path = CellLayout(root / cell_id).record(scenario, variant, repeat)
    fields = dict(scenario=scenario, variant=variant, seed=records.seed_for(variant, 42), repeat=repeat, cell=cell,
                  expect=expect or {})  # fmt: skip
    if status != "ok":
        records.Record.failed(status, message, **fields).write(path)
        return
    first = np.asarray(predictions, dtype=np.float32)
    second = np.asarray(twin if twin is not None else predictions, dtype=np.float32)
    arrays = {
        "model1.predictions": first,
        "model1.weights": first * 2,
        "model2.predictions": second,
        "model2.weights": second * 2,
    }
    for name, array in (extra or {}).items():
        arrays[f"model1.{name}"] = arrays[f"model2.{name}"] = np.asarray(array, dtype=np.float32)
    record = records.Record.ok(
        arrays=arrays,
        in_process_identical=bool(np.array_equal(first, second)),
        environment={"ran_on": ran_on},
        reuse_key="same environment",
        **({"isolation": "fork", "extra": {"fork_parent": fork_parent}} if fork_parent else {}),
        **fields,
    )
    record.write(path, arrays)


def seeded(root: Path, cell_id: str, values_per_repeat: list[list[float]], **kw) -> None:
    for repeat, values in enumerate(values_per_repeat):
        make(root, cell_id, "seeded_init", "seeded", repeat, values, **kw)


def by_name(report: reporting.Report) -> dict[tuple[str, str], analysis.Variant]:
    return {(v.cell_id, v.name): v for v in report.variants}


def test_run_to_run_verdicts(tmp_path):
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2], [1, 2]])
    seeded(tmp_path, "tf2.16.2-cpu-onednn0-det0", [[1, 2], [1, 3], [1, 2]])
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[5, 5]])
    found = by_name(reporting.build([tmp_path]))
    assert found[("tf2.16.2-cpu-onednn1-det0", "seeded_init-seeded")].run_to_run == "identical"
    assert found[("tf2.16.2-cpu-onednn1-det0", "seeded_init-seeded")].claim == "held"
    varies = found[("tf2.16.2-cpu-onednn0-det0", "seeded_init-seeded")]
    assert varies.run_to_run == "varies" and varies.claim == "broken"
    assert found[("tf2.21.0-cpu-onednn1-det0", "seeded_init-seeded")].run_to_run == "untested"


def test_in_process_verdicts_and_unseeded_expectations(tmp_path):
    for repeat in range(2):
        make(tmp_path, "tf2.16.2-cpu-onednn1-det0", "init", "unseeded", repeat, [repeat, 1], twin=[9, repeat])
        # Unseeded but identical everywhere: something seeds it, a finding.
        make(tmp_path, "tf2.16.2-cpu-onednn0-det0", "init", "unseeded", repeat, [1, 1])
    found = by_name(reporting.build([tmp_path]))
    good = found[("tf2.16.2-cpu-onednn1-det0", "init-unseeded")]
    assert (good.in_process, good.run_to_run, good.claim) == ("differs", "varies", "held")
    bad = found[("tf2.16.2-cpu-onednn0-det0", "init-unseeded")]
    assert (bad.in_process, bad.run_to_run, bad.claim) == ("identical", "identical", "broken")
    assert any("something seeds it" in reason for reason in bad.claim_reasons)


def test_mixed_in_process_check(tmp_path):
    make(tmp_path, "tf2.16.2-cpu-onednn1-det0", "dropout_training", "seeded", 0, [1, 2])
    make(tmp_path, "tf2.16.2-cpu-onednn1-det0", "dropout_training", "seeded", 1, [1, 2], twin=[1, 3])
    variant = reporting.build([tmp_path]).variants[0]
    assert variant.in_process == "mixed" and variant.claim == "broken"


def test_equivalence_classes_per_output(tmp_path):
    seeded(tmp_path, "tf2.15.1-cpu-onednn1-det0", [[1, 2], [1, 2]])
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2]])
    seeded(tmp_path, "tf2.16.2-cpu-onednn0-det0", [[1, 2.5], [1, 2.5]])
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1, 2], [7, 7]])
    make(tmp_path, "tf2.21.0-cuda-onednn1-det0", "seeded_init", "seeded", 0, status="skipped", message="no GPU")
    report = reporting.build([tmp_path])
    table = next(t for t in report.tables if t.output == "model1.predictions")
    assert table.by_cell == {
        "tf2.15.1-cpu-onednn1-det0": "A",
        "tf2.16.2-cpu-onednn0-det0": "B",
        "tf2.16.2-cpu-onednn1-det0": "A",
        "tf2.21.0-cpu-onednn1-det0": analysis.VARIES,
        "tf2.21.0-cuda-onednn1-det0": analysis.NO_RESULT,
    }
    assert table.classes["A"]["cells"] == ["tf2.15.1-cpu-onednn1-det0", "tf2.16.2-cpu-onednn1-det0"]
    compat = text.compatibility(report, table)
    assert compat.headers == ["TF", "cpu-onednn0-det0", "cpu-onednn1-det0", "cuda-onednn1-det0"]
    assert compat.rows == [["2.15.1", "", "A", ""], ["2.16.2", "B", "A", ""], ["2.21.0", "", "~", "—"]]
    cells, matrix = analysis.agreement(report.group("seeded_init-seeded"))
    a, b = cells.index("tf2.15.1-cpu-onednn1-det0"), cells.index("tf2.16.2-cpu-onednn1-det0")
    c = cells.index("tf2.16.2-cpu-onednn0-det0")
    assert matrix[a][b] == 1.0 and matrix[a][c] == 0.0
    assert matrix[a][cells.index("tf2.21.0-cpu-onednn1-det0")] is None


def test_distances_in_abs_and_ulp(tmp_path):
    next_up = np.nextafter(ONE, np.float32(2))
    two_up = np.nextafter(next_up, np.float32(2))
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1.0, -0.0]])
    seeded(tmp_path, "tf2.16.2-cpu-onednn0-det0", [[float(two_up), 0.0]])
    table = next(t for t in reporting.build([tmp_path]).tables if t.output == "model1.predictions")
    (pair,) = table.pairs
    assert pair.distance.max_ulp == 2
    assert pair.distance.max_abs == pytest.approx(float(two_up) - 1.0)


def test_ulp_distance_across_zero_and_float64():
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    assert distances.ulp_distance(np.array([-tiny]), np.array([tiny])) == 2
    assert distances.ulp_distance(np.array([-0.0], np.float32), np.array([0.0], np.float32)) == 0
    big = np.array([1.0])
    assert distances.ulp_distance(big, np.nextafter(big, 2)) == 1


def test_findings_put_seeded_variation_first(tmp_path):
    make(tmp_path, "tf2.16.2-cpu-onednn1-det0", "init", "unseeded", 0, [1], twin=[1])
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1, 2], [1, 3]])
    seeded(tmp_path, "tf2.21.0-cuda-onednn1-det0", [[1, 2], [1, 2]], device="cuda", ran_on="cpu")
    make(tmp_path, "tf2.99.0-cpu-onednn1-det0", "init", "unseeded", 0, status="error", message="no wheel for 2.99.0")
    found = reporting.build([tmp_path]).findings
    assert [(f.severity, f.cell_id) for f in found] == [
        ("finding", "tf2.21.0-cpu-onednn1-det0"),
        ("finding", "tf2.16.2-cpu-onednn1-det0"),
        ("warning", "tf2.21.0-cuda-onednn1-det0"),
        ("error", "tf2.99.0-cpu-onednn1-det0"),
    ]
    assert "not a GPU result" in found[2].text


def test_error_and_skipped_are_displayed_with_their_reason(tmp_path):
    make(tmp_path, "tf2.21.0-cuda-onednn1-det0", "init", "unseeded", 0, status="skipped", message="no NVIDIA runtime")
    make(tmp_path, "tf2.99.0-cpu-onednn1-det0", "init", "unseeded", 0, status="error", message="no wheel for 2.99.0")
    report = reporting.build([tmp_path])
    rows = {row[0]: row for row in text.run_to_run_rows(report, only_not_held=False)[0]}
    assert rows["tf2.21.0-cuda-onednn1-det0"][2] == "skipped"
    assert rows["tf2.21.0-cuda-onednn1-det0"][-1] == "no NVIDIA runtime"
    assert rows["tf2.99.0-cpu-onednn1-det0"][2] == "error"
    terminal = text.terminal(report)
    assert "no wheel for 2.99.0" in terminal and "no NVIDIA runtime" in terminal
    assert "identical" not in rows["tf2.21.0-cuda-onednn1-det0"][3]


def test_drift_against_a_results_folder_and_a_report_json(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    seeded(before, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2]])
    seeded(before, "tf2.16.2-cpu-onednn0-det0", [[1, 2], [1, 2]])
    seeded(before, "tf2.15.1-cpu-onednn1-det0", [[1, 2], [1, 2]])
    seeded(after, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2]])  # unchanged
    seeded(after, "tf2.16.2-cpu-onednn0-det0", [[1, 4], [1, 4]])  # new bits
    seeded(after, "tf2.21.0-cpu-onednn1-det0", [[1, 2], [3, 2]])  # new cell
    report = reporting.build([after], baseline=before)
    changes = {(d["variant"].split("/")[0], d["change"]) for d in report.drift}
    assert changes == {
        ("tf2.16.2-cpu-onednn0-det0", "bits of model1.predictions"),
        ("tf2.16.2-cpu-onednn0-det0", "bits of model1.weights"),
        ("tf2.21.0-cpu-onednn1-det0", "new"),
        ("tf2.15.1-cpu-onednn1-det0", "gone"),
    }
    # The published report.json works as a baseline too.
    reporting.render_all([before], tmp_path / "published")
    again = reporting.build([after], baseline=tmp_path / "published" / "report.json")
    assert {(d["variant"], d["change"]) for d in again.drift} == {(d["variant"], d["change"]) for d in report.drift}


def test_corrupt_and_foreign_files_are_named_and_skipped(tmp_path):
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2]])
    cell = tmp_path / "tf2.16.2-cpu-onednn1-det0" / "seeded_init-seeded"
    (cell / "7.json").write_text("{ not json")
    (cell / "8.json").write_text(json.dumps({"hello": "world"}))
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1, 2]])
    (tmp_path / "tf2.21.0-cpu-onednn1-det0" / "seeded_init-seeded" / "0.npz").unlink()
    loading = load([tmp_path, tmp_path / "missing"])
    assert len(loading.records) == 2
    joined = "\n".join(loading.warnings)
    assert "7.json: not a readable JSON record" in joined
    assert "8.json: not a repromatrix record" in joined
    assert "0.npz is missing" in joined or ".npz is missing" in joined
    assert "missing: not a folder" in joined
    terminal = text.terminal(reporting.render_all([tmp_path], tmp_path / "report"))
    assert "== Warnings ==" in terminal and (tmp_path / "report" / "report.html").is_file()


def test_markdown_stays_under_the_limit_with_a_pointer(tmp_path):
    for index in range(40):
        seeded(tmp_path, f"tf2.{index}.0-cpu-onednn1-det0", [[index, 1], [index, 1]])
    report = reporting.build([tmp_path])
    full = text.markdown(report)
    short = text.markdown(report, limit=4000)
    assert len(short) < 4500 < len(full)
    assert "Truncated" in short and "report.html" in short


def test_versions_keep_their_trailing_zero(tmp_path):
    seeded(tmp_path, "tf2.10.0-cpu-onednn1-det0", [[1, 2], [1, 2]], tf="2.10")
    report = reporting.build([tmp_path])
    assert "2.10 " in text.terminal(report) and "| 2.10 " in text.markdown(report)


def test_json_and_csv_reports_are_complete(tmp_path):
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2]])
    reporting.render_all([tmp_path], tmp_path / "out")
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    assert payload["report_schema"] == analysis.REPORT_SCHEMA
    assert payload["variants"][0]["run_to_run"] == "identical"
    assert payload["classes"][0]["by_cell"] == {"tf2.16.2-cpu-onednn1-det0": "A"}
    csv_text = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert csv_text[0].startswith("cell,tf,device,recipe,onednn") and ",A,A," in csv_text[1]


def test_a_folder_without_records_is_one_clear_line(tmp_path):
    from tests.conftest import repromatrix_cli

    (tmp_path / "empty").mkdir()
    done = repromatrix_cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: nothing to report from {tmp_path / 'empty'}: no records in them (pass the folder given to --results)"
    ]
    assert not (tmp_path / "out").exists()


# -- explanations: attribution, headline, findings, distances, first divergence, exit code ------------


def cell_of(tf: str, onednn: bool, cpus: int = 0) -> tuple[str, dict]:
    cell_id = f"tf{tf}-cpu-onednn{int(onednn)}-det0" + (f"-cpus{cpus}" if cpus else "")
    return cell_id, {"tf": tf, "onednn": onednn, "cpus": cpus}


def attributed(report, axis: str, output: str = "model1.predictions") -> dict[str, analysis.Attribution]:
    return {a.transition: a for a in report.attribution if a.axis == axis and a.output == output}


def test_attribution_on_a_factorial_matrix_counts_pairs_per_transition(tmp_path):
    # oneDNN flips the bits at every version; 2.15.1→2.16.2 flips them, 2.16.2→2.21.0 does not.
    value = {("2.15.1", True): 1.0, ("2.15.1", False): 1.5, ("2.16.2", True): 2.0, ("2.16.2", False): 2.5,
             ("2.21.0", True): 2.0, ("2.21.0", False): 2.5}  # fmt: skip
    for (tf, onednn), v in value.items():
        cell_id, cell = cell_of(tf, onednn)
        seeded(tmp_path, cell_id, [[v, 1.0], [v, 1.0]], cell=cell, tf=tf)
    report = reporting.build([tmp_path])
    onednn = attributed(report, "onednn")
    assert set(onednn) == {"off→on"}
    assert (onednn["off→on"].pairs, onednn["off→on"].differ, onednn["off→on"].unstable) == (3, 3, 0)
    assert onednn["off→on"].distance.max_abs == pytest.approx(0.5)
    tf = attributed(report, "tf")
    assert set(tf) == {"2.15.1→2.16.2", "2.16.2→2.21.0"}  # adjacent versions only
    assert (tf["2.15.1→2.16.2"].pairs, tf["2.15.1→2.16.2"].differ) == (2, 2)
    assert (tf["2.16.2→2.21.0"].pairs, tf["2.16.2→2.21.0"].differ) == (2, 0)
    entry = next(a for a in json.loads(text.json_report(report))["attribution"] if a["axis"] == "tf")
    assert {"axis", "from", "to", "scenario", "output", "pairs", "differ", "unstable", "max_abs"} <= set(entry)


def test_attribution_on_a_sparse_matrix_and_unstable_pairs(tmp_path):
    # One-at-a-time around tf2.21.0/oneDNN on/all cores: only the cells that change one axis.
    base_id, base = cell_of("2.21.0", True)
    seeded(tmp_path, base_id, [[1.0], [1.0]], cell=base, tf="2.21.0")
    older_id, older = cell_of("2.15.1", True)
    seeded(tmp_path, older_id, [[1.0], [1.0]], cell=older, tf="2.15.1")
    one_core_id, one_core = cell_of("2.21.0", True, cpus=1)
    seeded(tmp_path, one_core_id, [[1.0], [1.25]], cell=one_core, tf="2.21.0")  # varies run to run
    off_id, off = cell_of("2.21.0", False)
    seeded(tmp_path, off_id, [[1.0], [1.0]], cell=off, tf="2.21.0")
    report = reporting.build([tmp_path])
    assert (attributed(report, "tf")["2.15.1→2.21.0"].pairs, attributed(report, "tf")["2.15.1→2.21.0"].differ) == (1, 0)
    cores = attributed(report, "cpus")["all cores→1 core"]
    assert (cores.pairs, cores.unstable) == (0, 1)  # counted apart, not dropped
    assert any("Not comparable (no stable pair of cells): cores" in line for line in report.headline)


def test_headline_says_what_broke_what_changes_the_bits_and_what_did_not(tmp_path):
    for onednn, v in ((True, 1.0), (False, np.nextafter(np.float32(1.0), np.float32(2)))):
        for tf in ("2.16.2", "2.21.0"):
            cell_id, cell = cell_of(tf, onednn)
            seeded(tmp_path, cell_id, [[float(v)], [float(v)]], cell=cell, tf=tf)
    report = reporting.build([tmp_path])
    assert report.headline[0].startswith("Every expectation held: seeded runs were reproducible")
    assert report.headline[1:3] == [
        "What changes the bits, most pairs first:",
        "- oneDNN: 4/4 pairs differ — seeded_init-seeded: predictions 2/2 and weights 2/2 (|Δ| ≤ 2.4e-07, 1 ULP)",
    ]
    assert report.headline[3] == "No effect on any stable result: TensorFlow."


def test_the_headline_names_the_outputs_an_axis_never_changes(tmp_path):
    # oneDNN changes the predictions, never the weights (seeded_init's weights come before any matmul).
    for onednn, bump in ((True, 0.0), (False, 0.5)):
        for tf in ("2.16.2", "2.21.0"):
            cell_id, cell = cell_of(tf, onednn)
            for repeat in range(2):
                path = CellLayout(tmp_path / cell_id).record("seeded_init", "seeded", repeat)
                arrays = {f"{m}.{n}": np.asarray([1.0 + (bump if n == "predictions" else 0.0)], dtype=np.float32)
                          for m in ("model1", "model2") for n in ("predictions", "weights")}  # fmt: skip
                records.Record.ok(arrays=arrays, in_process_identical=True, scenario="seeded_init", variant="seeded",
                                  seed=42, repeat=repeat, cell={"id": cell_id, "tf": tf, "device": "cpu", **cell},
                                  reuse_key="k").write(path, arrays)  # fmt: skip
    report = reporting.build([tmp_path])
    assert report.headline[2] == (
        "- oneDNN: 2/4 pairs differ — seeded_init-seeded: predictions 2/2 (|Δ| ≤ 0.5, 4194304 ULP), "
        "never its weights (0/2)"
    )
    cell_id, cell = cell_of("2.21.0", True)
    seeded(tmp_path, cell_id, [[1.0], [1.0], [1.5]], cell=cell, tf="2.21.0")  # now it varies
    broken = reporting.build([tmp_path])
    assert broken.headline[0] == "1 expectation broke in 1 of 4 cells (seeded_init-seeded): see Findings."
    assert text.terminal(broken).split("== Headline ==")[1].lstrip().startswith("1 expectation broke")


def test_a_seeded_variant_that_varies_says_which_outputs_how_many_results_and_how_far(tmp_path):
    seeded(
        tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1.0, 2.0], [1.0, 2.0], [1.0, 2.5], [1.0, 2.0], [1.0, 2.0], [1.0, 2.5]]
    )
    report = reporting.build([tmp_path])
    [finding] = [f for f in report.findings if f.severity == "finding"]
    assert "expected identical run to run (the default for seeded variants), but varied" in finding.text
    assert "model1.predictions 2 distinct among 6 processes (|Δ| ≤ 0.5" in finding.text
    assert "model1.weights 2 distinct among 6 processes (|Δ| ≤ 1" in finding.text
    compat = text.compatibility(report, next(t for t in report.tables if t.output == "model1.predictions"))
    assert "~ = repeats differ (spread |Δ| ≤ 0.5" in compat.intro  # a ~ cell gets its distance


def test_huge_ulp_counts_show_relative_error_and_near_zero_gaps_are_explained(tmp_path):
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1.0, 1e-7]])
    seeded(tmp_path, "tf2.21.0-cpu-onednn0-det0", [[-1.0, 1e-7]])  # opposite signs: billions of ULP
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1.0, 1.3e-7]])  # 1e-7 vs 1.3e-7: many ULP, tiny |Δ|
    report = reporting.build([tmp_path])
    table = next(t for t in report.tables if t.output == "model1.predictions")
    by_pair = {(p.a, p.b): p.distance for p in table.pairs}
    signs = by_pair[("A", "C")] if table.by_cell["tf2.21.0-cpu-onednn0-det0"] == "C" else by_pair[("A", "B")]
    assert signs.max_ulp > distances.HUGE_ULP and signs.ulp_cell().startswith("rel ")
    assert "relative 2" in signs.brief()
    tiny = next(d for d in by_pair.values() if d.max_abs is not None and d.max_abs < 1e-6)
    assert tiny.near_zero and tiny.ulp_cell().endswith(" *")
    section = text.distance_section(table)
    assert "values of 1e-7 are 524288 ULP apart" in section.intro


def test_tolerance_view_groups_classes_within_a_few_ulp(tmp_path):
    one = np.float32(1.0)
    close = np.nextafter(np.nextafter(one, np.float32(2)), np.float32(2))  # 2 ULP away
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[float(one)]])
    seeded(tmp_path, "tf2.21.0-cpu-onednn0-det0", [[float(close)]])
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1.5]])
    table = next(t for t in reporting.build([tmp_path]).tables if t.output == "model1.predictions")
    on, off = table.by_cell["tf2.21.0-cpu-onednn1-det0"], table.by_cell["tf2.21.0-cpu-onednn0-det0"]
    far = table.by_cell["tf2.16.2-cpu-onednn1-det0"]
    assert sorted(map(sorted, table.tolerance_groups)) == sorted([sorted([on, off]), [far]])
    assert table.tolerance_text() == (
        f"Within {distances.TOLERANCE_ULP} ULP of each other (numerically the same, not bit-identical): "
        f"{min(on, off)}≈{max(on, off)}."
    )


def test_first_divergence_names_the_epoch_and_the_layer(tmp_path):
    same = {"epoch.00.weights": [0.1, 0.2], "layer.00.dense": [1.0], "layer.01.dropout": [1.0]}
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1.0]],
           extra={**same, "epoch.01.weights": [0.3], "epoch.02.weights": [0.4], "layer.02.dense": [2.0]})  # fmt: skip
    seeded(tmp_path, "tf2.21.0-cpu-onednn0-det0", [[1.5]],
           extra={**same, "epoch.01.weights": [0.3], "epoch.02.weights": [0.41], "layer.02.dense": [2.5]})  # fmt: skip
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[2.5]],
           extra={**same, "epoch.00.weights": [0.9, 0.2], "epoch.01.weights": [0.3], "epoch.02.weights": [0.4],
                  "layer.00.dense": [7.0], "layer.02.dense": [2.0]})  # fmt: skip
    report = reporting.build([tmp_path])
    table = next(t for t in report.tables if t.output == "model1.predictions")
    letter = table.by_cell
    pairs = {frozenset((p.a, p.b)): p.divergence for p in table.pairs}
    on_off = pairs[frozenset((letter["tf2.21.0-cpu-onednn1-det0"], letter["tf2.21.0-cpu-onednn0-det0"]))]
    assert (
        on_off
        == "weights equal at initialisation; first difference at epoch 2; in the forward pass from layer 2 `dense`"
    )
    versions = pairs[frozenset((letter["tf2.21.0-cpu-onednn1-det0"], letter["tf2.16.2-cpu-onednn1-det0"]))]
    assert versions == "weights differ at initialisation; in the forward pass from layer 0 `dense`"
    assert all(not t.output.startswith(("model1.layer.", "model1.epoch.")) for t in report.tables)


def test_every_array_model1_returns_gets_a_class_table(tmp_path):
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1.0]], extra={"embeddings": [0.5, 0.25]})
    outputs = {t.output for t in reporting.build([tmp_path]).tables}
    assert outputs == {"model1.predictions", "model1.weights", "model1.embeddings"}


def test_declared_expectations_are_judged_and_the_broken_one_is_named(tmp_path):
    declared = {"in_process": "differs", "run_to_run": "identical"}
    for repeat in range(2):
        make(tmp_path, "tf2.21.0-cpu-onednn1-det0", "mine", "seeded_once", repeat, [1.0], twin=[2.0], expect=declared)
        make(tmp_path, "tf2.21.0-cpu-onednn1-det0", "mine", "seeded_wrong", repeat, [1.0], twin=[2.0],
             expect={"in_process": "identical"})  # fmt: skip
    found = by_name(reporting.build([tmp_path]))
    assert found[("tf2.21.0-cpu-onednn1-det0", "mine-seeded_once")].claim == "held"
    wrong = found[("tf2.21.0-cpu-onednn1-det0", "mine-seeded_wrong")]
    assert wrong.claim == "broken"
    assert wrong.claim_reasons == [
        "expected model1 and model2 identical in-process (declared in EXPECT), but they differ"
    ]


def test_the_run_to_run_table_lists_only_what_did_not_hold(tmp_path):
    seeded(tmp_path, "tf2.21.0-cpu-onednn1-det0", [[1.0], [1.0]])
    seeded(tmp_path, "tf2.21.0-cpu-onednn0-det0", [[1.0], [2.0]])
    report = reporting.build([tmp_path])
    section = next(s for s in text.sections(report, pairwise=False) if s.kind == "run-to-run")
    assert [row[0] for row in section.rows] == ["tf2.21.0-cpu-onednn0-det0"]
    assert section.intro.startswith("1 cell × scenario variants held their expectation")
    assert len(section.collapsed_rows or []) == 2
    titles = [s.title for s in text.sections(report, pairwise=False)]
    assert titles.index("Headline") == 0 and titles.index("Findings") == 1


def test_report_exits_5_when_an_expectation_broke_after_writing_every_file(tmp_path):
    from tests.conftest import repromatrix_cli

    seeded(tmp_path / "r", "tf2.21.0-cpu-onednn0-det0", [[1.0], [2.0]])
    done = repromatrix_cli("report", str(tmp_path / "r"), "--out", str(tmp_path / "out"))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "1 expectation broke (see Findings); every report file is written" in done.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"report.md", "report.html", "report.json", "report.csv"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["expectations_broken"] == 1


def test_run_to_run_is_judged_across_independent_identities_only(tmp_path):
    # Three forks of one parent: identical, but nothing decided at start-up was varied.
    for repeat in range(3):
        make(tmp_path, "tf2.21.0-cpu-onednn1-det0", "seeded_init", "seeded", repeat, [1, 2], fork_parent="p0")
    # Three forks of three parents, and three fresh processes: both judged.
    for repeat in range(3):
        make(tmp_path, "tf2.21.0-cpu-onednn0-det0", "seeded_init", "seeded", repeat, [1, 2], fork_parent=f"p{repeat}")
    seeded(tmp_path, "tf2.16.2-cpu-onednn1-det0", [[1, 2], [1, 2], [1, 2]])
    # Forks of one parent that still differ: a difference needs no second identity.
    for repeat in range(2):
        make(tmp_path, "tf2.16.2-cpu-onednn0-det0", "seeded_init", "seeded", repeat, [1, 2 + repeat],
             fork_parent="q")  # fmt: skip
    # One repeat.
    seeded(tmp_path, "tf2.12.1-cpu-onednn1-det0", [[1, 2]])
    report = reporting.build([tmp_path])
    found = by_name(report)
    one_parent = found[("tf2.21.0-cpu-onednn1-det0", "seeded_init-seeded")]
    assert (one_parent.run_to_run, one_parent.identities, one_parent.identity_text) == (
        "untested",
        1,
        "3 forks of 1 parent",
    )
    assert "one process identity" in one_parent.run_to_run_note
    many = found[("tf2.21.0-cpu-onednn0-det0", "seeded_init-seeded")]
    assert (many.run_to_run, many.identities, many.identity_text) == ("identical", 3, "3 forks of 3 parents")
    fresh = found[("tf2.16.2-cpu-onednn1-det0", "seeded_init-seeded")]
    assert (fresh.run_to_run, fresh.identity_text) == ("identical", "3 processes")
    assert found[("tf2.16.2-cpu-onednn0-det0", "seeded_init-seeded")].run_to_run == "varies"
    single = found[("tf2.12.1-cpu-onednn1-det0", "seeded_init-seeded")]
    assert single.run_to_run == "untested" and "--repeats 2" in single.run_to_run_note
    # The headline never calls the untested ones reproducible.
    assert not any("reproducible run to run in every cell" in line for line in report.headline)
    payload = json.loads(text.json_report(report))
    entry = next(v for v in payload["variants"] if v["cell_id"] == "tf2.21.0-cpu-onednn1-det0")
    assert entry["identities"] == 1 and entry["run_to_run"] == "untested"


def test_distances_say_a_shared_first_divergence_once_and_list_the_farthest_pairs(tmp_path):
    # 14 classes, all differing from initialisation on: 91 pairs, one sentence.
    for index in range(14):
        cell_id = f"tf2.21.0-cpu-onednn1-det0-intra{index + 1}"
        for repeat in range(2):
            make(tmp_path, cell_id, "seeded_init", "seeded", repeat, [1.0 + index], tf="2.21.0",
                 cell={"intra_op_threads": index + 1}, extra={"epoch.00.weights": [float(index)]})  # fmt: skip
    table = next(t for t in reporting.build([tmp_path]).tables if t.output == "model1.predictions")
    section = text.distance_section(table)
    assert section.intro.startswith("Every pair: weights differ at initialisation. The 12 farthest of 66 pairs")
    assert "first divergence" not in section.headers and len(section.rows) == text.DISTANCE_ROWS
    gaps = [float(row[1]) for row in section.rows]
    assert gaps == sorted(gaps, reverse=True)  # farthest first (classes past the 12th are not paired: 66 pairs)


def test_the_published_site_keeps_a_history_and_shows_the_drift(tmp_path):
    from repromatrix.reporting import history

    for repeat in range(2):  # week 1: two cells
        make(tmp_path / "week1", "tf2.21.0-cpu-onednn1-det0", "seeded_init", "seeded", repeat, [1.0])
        make(tmp_path / "week1", "tf2.21.0-cpu-onednn0-det0", "seeded_init", "seeded", repeat, [2.0])
    first = reporting.render_all([tmp_path / "week1"], tmp_path / "site1", keep_history=True)
    assert [e["changed_cells"] for e in first.timeline] == [None]
    # Week 2: a new TF line, and one cell whose bits changed.
    for repeat in range(2):
        make(tmp_path / "week2", "tf2.21.0-cpu-onednn1-det0", "seeded_init", "seeded", repeat, [1.0])
        make(tmp_path / "week2", "tf2.21.0-cpu-onednn0-det0", "seeded_init", "seeded", repeat, [2.5])
        make(tmp_path / "week2", "tf2.22.0-cpu-onednn1-det0", "seeded_init", "seeded", repeat, [1.0], tf="2.22.0")
    second = reporting.render_all([tmp_path / "week2"], tmp_path / "site2", baseline=tmp_path / "site1" / "report.json",
                                  history=tmp_path / "site1" / "history.json", keep_history=True)  # fmt: skip
    site = tmp_path / "site2"
    timeline = json.loads((site / history.FILE).read_text())
    assert len(timeline) == 2 and (timeline[0]["changed_cells"], timeline[1]["changed_cells"]) == (None, 1)
    assert timeline[1]["new_cells"] == 1 and timeline[1]["tf"] == ["2.21.0", "2.22.0"]
    for item in timeline:  # both runs' report.json travel on with the site
        assert json.loads((site / item["report"]).read_text())["report_schema"] == analysis.REPORT_SCHEMA
    page = (site / "report.html").read_text()
    assert "History of published runs" in page and "1 changed, 1 new" in page and "first run" in page
    assert "Drift against" in page and "tf2.21.0-cpu-onednn0-det0/seeded_init-seeded" in page
    assert [row[3] for row in history.rows(second.timeline)] == ["1 changed, 1 new", "first run"]


# Axes whose values are open (any count, any release): values given out of order, and the order expected.
OPEN_AXES = {
    "tf": (["2.12.1", "2.9.3", "2.21.0", "2.16.2"], ["2.9.3", "2.12.1", "2.16.2", "2.21.0"]),
    "intra_op_threads": ([2, 0, 8, 1], [0, 1, 2, 8]),
    "inter_op_threads": ([2, 0, 8, 1], [0, 1, 2, 8]),
    "cpus": ([4, 1, 0, 2], [0, 1, 2, 4]),
    "python": (["3.13", "3.9", "3.11"], ["3.9", "3.11", "3.13"]),
    "packages": (
        [(("numpy", "2.1.3"),), (("numpy", "1.26.4"),), (("numpy", "10.0"),)],
        [(("numpy", "1.26.4"),), (("numpy", "2.1.3"),), (("numpy", "10.0"),)],
    ),
}


@pytest.mark.parametrize("axis", axes.AXES, ids=lambda a: a.name)
def test_attribution_pairs_every_value_of_every_axis_with_its_neighbours_in_the_tables_order(tmp_path, axis):
    # Each value its own bit pattern: every neighbour pair differs, in order (the table's, for a closed axis).
    given, ordered = OPEN_AXES[axis.name] if not axis.values else (list(reversed(axis.values)), list(axis.values))
    for index, value in enumerate(given):
        tf = value if axis.name == "tf" else "2.21.0"
        seeded(tmp_path, f"cell-{axis.name}-{index}", [[float(index)], [float(index)]], cell={axis.name: value}, tf=tf)
    expected = [f"{axis.show(a)}→{axis.show(b)}" for a, b in pairwise(ordered)]
    found = [a.transition for a in reporting.build([tmp_path]).attribution
             if a.axis == axis.name and a.output == "model1.predictions"]  # fmt: skip
    assert found == expected
    if axis.name == "cpu_isa":  # every value matrix.toml accepts, oldest first, no cap last
        assert expected[0] == "sse41→avx" and expected[-1] == "avx512_core_amx→native (no cap)"
    if axis.name == "cpus":
        assert expected[0] == "all cores→1 core"


def test_every_planned_axis_is_known_to_the_harness_and_recorded_by_the_cell():
    """One table: what the planner accepts is what the runner passes, the harness parses and a record names."""
    from repromatrix.harness import exchange
    from repromatrix.harness.__main__ import parse_args, plan_by_hand

    cell = Cell("2.21.0", "cpu", recipe="official", onednn=False, op_determinism=True, intra_op_threads=3,
                inter_op_threads=2, cpus=1, cpu_isa="avx2")  # fmt: skip
    # By hand, the harness's flags build the knobs the runner's plan carries.
    flags = [part for a in axes.AT_RUN_TIME for part in (a.flag, a.to_text(getattr(cell, a.name)))]
    assert plan_by_hand(parse_args([*flags, "seeded_init", "--out", "x"])).knobs == cell.knobs
    assert cell.knobs.given() == {a.name: getattr(cell, a.name) for a in axes.AT_RUN_TIME}
    written = exchange.Plan((), cell=cell.params(), knobs=cell.knobs)
    assert exchange.Plan.from_json(written.to_json()) == written
    assert Cell.from_record(cell.params()) == cell  # a record's cell rebuilds the cell
    assert Cell.from_record({"id": "old", "tf": "2.12.1", "device": "cpu"}) == Cell("2.12.1", "cpu")
    assert cell.id == "tf2.21.0-cpu-official-onednn0-det1-intra3-inter2-cpus1-isa-avx2"
    assert set(cell.params()) == {"id", *axes.NAMES}
