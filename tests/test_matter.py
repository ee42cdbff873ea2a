"""Does it matter? Spread runs planned, run, reused and kept apart; verdict words on hand-made records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repromatrix import cleanup, reporting, runner
from repromatrix.harness import catalog, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.forkserver import fork_order
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.matrix import DockerSettings, Matrix
from repromatrix.reporting import matter, text
from repromatrix.reporting.load import load
from tests.fakes import FakeBackend

ON, OFF = "tf2.21.0-cpu-onednn1-det0", "tf2.21.0-cpu-onednn0-det0"
CELLS = {ON: {"onednn": True}, OFF: {"onednn": False}}


def logits(seed: int, rows: int = 64, classes: int = 10) -> np.ndarray:
    """Classifier outputs whose top class leads the runner-up by at least 0.5 in every row."""
    values = np.random.default_rng(seed).normal(size=(rows, classes)).astype(np.float32)
    values[np.arange(rows), np.argmax(values, axis=1)] += 0.5
    return values


def write(root: Path, cell_id: str, predictions: np.ndarray, *, scenario: str = "cnn_like", variant: str = "seeded",
          repeat: int = 0, seed: int | None = 42, spread: bool = False, decision: dict | None = None,
          record_bytes: int = records.DEFAULT_RECORD_BYTES) -> None:  # fmt: skip
    """One record as the worker writes it; a spread run's under its own name."""
    cell = {"id": cell_id, "tf": "2.21.0", "device": "cpu", **CELLS.get(cell_id, {})}
    path = CellLayout(root / cell_id).record(scenario, variant, repeat, seed if spread else None)
    arrays = {f"{model}.predictions": predictions for model in ("model1", "model2")}
    arrays |= {f"{model}.weights": np.arange(4, dtype=np.float32) for model in ("model1", "model2")}
    records.Record.ok(arrays=arrays, in_process_identical=True, record_bytes=record_bytes, scenario=scenario,
                      variant=variant, seed=seed, repeat=repeat, cell=cell, reuse_key="same", spread=spread,
                      decision=decision or {}).write(path, arrays)  # fmt: skip


def two_cells(root: Path, base: np.ndarray, other: np.ndarray, spread_by: np.ndarray | None, **kw) -> None:
    """Two cells differing in oneDNN alone, two repeats each; in each, spread runs of seeds 43 and 44."""
    for cell_id, values in ((ON, base), (OFF, other)):
        for repeat in (0, 1):
            write(root, cell_id, values, repeat=repeat, **kw)
        if spread_by is not None:
            for offset in (1, 2):
                write(root, cell_id, values + offset * spread_by, seed=42 + offset, spread=True, **kw)


def predictions_entry(report: reporting.Report):
    return next(a for a in report.attribution if a.axis == "onednn" and a.output == "model1.predictions")


def test_a_tiny_difference_beside_a_large_spread_reads_bit_level(tmp_path):
    base = logits(1)
    two_cells(tmp_path, base, base + np.float32(2e-6), spread_by=np.full_like(base, 0.2))
    report = reporting.build([tmp_path])
    entry = predictions_entry(report)
    assert entry.differ == 1 and entry.matter is not None
    assert entry.matter.verdict == matter.Verdict.BIT_LEVEL
    assert entry.matter.spread == pytest.approx(0.4, rel=1e-3)  # the farther of the two other seeds
    assert "0 of 64 predicted classes change: bit-level" in entry.matter.text()
    assert "of the seed-to-seed spread (0.4)" in entry.matter.text()
    line = next(line for line in report.headline if line.startswith("- oneDNN"))
    assert "— 0.00051 % of the seed-to-seed spread (0.4); 0 of 64 predicted classes change: bit-level" in line
    assert any(line.startswith("Does it matter: bit-level = |Δ| under 1%") for line in report.headline)
    # The spread runs are not repeats: run to run is judged on the two repeats alone, and identical.
    variant = report.variant(ON, "cnn_like-seeded")
    assert variant is not None and variant.ok_repeats == 2 and variant.run_to_run == "identical"
    assert "2 other seeds (43, 44)" in text.markdown(report)


def test_flipped_predicted_classes_are_material_whatever_the_size(tmp_path):
    base = logits(2)
    top = int(np.argmax(base[5]))
    runner_up = int(np.argsort(base[5])[-2])
    base[5, runner_up] = base[5, top] - np.float32(1e-4)  # a near tie in one row...
    flipped = base.copy()
    flipped[5, runner_up] = base[5, top] + np.float32(1e-4)  # ...broken the other way by 2e-4
    two_cells(tmp_path, base, flipped, spread_by=np.full_like(base, 50.0))  # a huge spread: size says bit-level
    report = reporting.build([tmp_path])
    entry = predictions_entry(report)
    assert entry.matter is not None and entry.matter.ratio is not None and entry.matter.ratio < matter.BIT_LEVEL
    assert entry.matter.verdict == matter.Verdict.MATERIAL
    assert "1 of 64 predicted classes change: material" in entry.matter.text()
    [pair] = [p for t in report.tables if t.output == "model1.predictions" for p in t.pairs]
    assert pair.matter is not None and pair.matter.verdict == matter.Verdict.MATERIAL


def test_a_sampled_output_says_its_decisions_were_counted_on_the_sample(tmp_path):
    base = np.linspace(-1, 1, 4000, dtype=np.float32).reshape(-1, 1)  # one value per input, past the sample
    other = -base  # every sign flips
    two_cells(tmp_path, base, other, spread_by=np.full_like(base, 0.5), record_bytes=0, decision={"threshold": 0.5})
    report = reporting.build([tmp_path])
    entry = predictions_entry(report)
    assert entry.matter is not None and entry.matter.verdict == matter.Verdict.MATERIAL
    said = entry.matter.text()
    assert "counted on the sample: 512 of 4000 values kept" in said
    signs = next(d for d in entry.matter.decisions if d.kind == "signs")
    assert signs.sampled == (512, 4000) and 0 < signs.changed <= signs.of == 512
    assert any(d.kind == "sides of 0.5" and d.changed for d in entry.matter.decisions)


def test_a_sampled_classifier_says_its_classes_were_not_counted(tmp_path):
    base = logits(3, rows=200)  # 2000 values: past the 512-value sample
    two_cells(tmp_path, base, base + np.float32(1e-6), spread_by=np.full_like(base, 0.3), record_bytes=0)
    entry = predictions_entry(reporting.build([tmp_path]))
    assert entry.matter is not None and entry.matter.decisions == ()
    assert "predicted classes not counted: the record kept a sample (512 of 2000 values" in entry.matter.note
    assert entry.matter.verdict == matter.Verdict.BIT_LEVEL  # by size alone, and the report says what it lacks


def test_an_unseeded_sibling_stands_in_for_spread_runs_and_says_so(tmp_path):
    base = logits(4)
    two_cells(tmp_path, base, base + np.float32(0.05), spread_by=None)
    for cell_id in (ON, OFF):
        for repeat in (0, 1):
            write(tmp_path, cell_id, logits(100 + repeat), variant="unseeded", repeat=repeat, seed=None)
    report = reporting.build([tmp_path])
    entry = predictions_entry(report)
    assert entry.matter is not None and entry.matter.source == "the unseeded variant's 2 repeats"
    assert entry.matter.verdict in (matter.Verdict.SMALL, matter.Verdict.BIT_LEVEL)
    spread = report.evidence.of(report.variant(ON, "cnn_like-seeded"), "model1.predictions")
    assert spread is not None and spread.spread is not None and spread.spread > 1.0


def test_without_a_spread_a_difference_is_unjudged_unless_a_decision_changes(tmp_path):
    base = logits(5)
    two_cells(tmp_path, base, base + np.float32(1e-6), spread_by=None)
    entry = predictions_entry(reporting.build([tmp_path]))
    assert entry.matter is not None and entry.matter.verdict == matter.Verdict.UNJUDGED
    assert "no seed-to-seed spread measured" in entry.matter.text()


def test_a_seeded_variant_that_varies_run_to_run_says_whether_it_matters(tmp_path):
    base = logits(6)
    write(tmp_path, ON, base, repeat=0)
    write(tmp_path, ON, base + np.float32(1e-6), repeat=1)
    for offset in (1, 2):
        write(tmp_path, ON, base + offset * np.float32(0.3), seed=42 + offset, spread=True)
    report = reporting.build([tmp_path])
    [finding] = [f for f in report.findings if f.severity == "finding"]
    assert "does it matter: " in finding.text and finding.text.endswith("0 of 64 predicted classes change: bit-level")


def test_drift_against_a_results_folder_says_whether_the_change_matters(tmp_path):
    base = logits(7)
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, values in ((before, base), (after, base + np.float32(1e-6))):
        for repeat in (0, 1):
            write(folder, ON, values, repeat=repeat)
        for offset in (1, 2):
            write(folder, ON, values + offset * np.float32(0.2), seed=42 + offset, spread=True)
    report = reporting.build([after], baseline=before)
    [change] = [d for d in report.drift or [] if d["change"] == "bits of model1.predictions"]
    assert change["matter"].endswith("0 of 64 predicted classes change: bit-level")
    assert "does it matter" in text.markdown(report)


def test_a_report_json_carries_the_spread_and_the_thresholds(tmp_path):
    base = logits(8)
    two_cells(tmp_path, base, base + np.float32(2e-6), spread_by=np.full_like(base, 0.2))
    payload = json.loads(text.json_report(reporting.build([tmp_path])))
    assert payload["matter_thresholds"]["bit_level"] == matter.BIT_LEVEL
    entry = next(a for a in payload["attribution"] if a["axis"] == "onednn" and a["output"] == "model1.predictions")
    assert entry["matter"]["verdict"] == "bit-level" and entry["matter"]["decisions"][0]["of"] == 64
    assert {s["source"] for s in payload["seed_spread"]} == {"2 other seeds (43, 44)"}


# -- planning, running, reusing -------------------------------------------------------


def test_spread_runs_are_planned_for_seeded_variants_naming_the_sibling_that_stands_in():
    found = catalog.discover()
    planned = catalog.plan(found, ["seeded_init", "dropout_training"], 3, 42, spread_seeds=2)
    spread = [(r.name, r.variant, r.seed, r.index, r.sibling) for r in planned if r.spread]
    assert spread == [("seeded_init", "seeded", 43, 0, ""), ("seeded_init", "seeded", 44, 0, ""),
                      ("dropout_training", "seeded", 43, 0, "unseeded"),
                      ("dropout_training", "seeded", 44, 0, "unseeded")]  # fmt: skip
    everywhere = catalog.plan(found, ["dropout_training"], 3, 42, spread_seeds=1, spread_siblings=False)
    assert [(r.variant, r.seed, r.sibling) for r in everywhere if r.spread] == [("seeded", 43, "")]
    assert not any(r.spread for r in catalog.plan(found, ["seeded_init"], 3, 42, spread_seeds=0))
    # Alone, the seeded variant has no sibling in the plan: its spread runs always run.
    alone = catalog.plan(found, ["dropout_training"], 2, 42, "seeded", spread_seeds=2)
    assert [(r.seed, r.sibling) for r in alone if r.spread] == [(43, ""), (44, "")]
    # The unseeded sibling runs first in its repeat index (fork order), so the harness can ask it.
    specs = fork_order([r.spec(None) for r in planned])
    labels = [s.label for s in specs if s.scenario == "dropout_training" and s.repeat == 0]
    assert labels.index("dropout_training-unseeded #0") < labels.index("dropout_training-seeded seed 43")


def test_a_user_scenario_declares_its_decision_threshold(tmp_path):
    (tmp_path / "my_head.py").write_text('VARIANTS = ("seeded",)\nDECISION = {"threshold": 0.5}\n'
                                         "def run(variant, seed):\n    return {}\n")  # fmt: skip
    (tmp_path / "bad_head.py").write_text('VARIANTS = ("seeded",)\nDECISION = {"cutoff": "x"}\n'
                                          "def run(variant, seed):\n    return {}\n")  # fmt: skip
    found = catalog.discover(tmp_path)
    assert found["my_head"].decision == {"threshold": 0.5}
    assert "DECISION must be a literal dict" in (found["bad_head"].problem or "")
    [spec] = [r.spec(None) for r in catalog.plan(found, ["my_head"], 1, 42)]
    assert spec.decision == {"threshold": 0.5} and spec.record_fields()["decision"] == {"threshold": 0.5}


def test_a_record_without_spread_or_decision_keeps_its_old_form():
    plain = records.Record.ok(arrays={"model1.predictions": np.ones(2), "model2.predictions": np.ones(2)},
                              in_process_identical=True, scenario="s", variant="seeded", repeat=0)  # fmt: skip
    assert "spread" not in plain.to_json() and "decision" not in plain.to_json()
    marked = records.Record.from_json({**plain.to_json(), "spread": True, "decision": {"threshold": 0.5}})
    assert marked.spread and marked.decision == {"threshold": 0.5} and marked.extra == {}
    with pytest.raises(records.RecordError, match="spread must be true or false"):
        records.Record.from_json({**plain.to_json(), "spread": "yes"})


@pytest.fixture
def _not_stopping():
    cleanup.stopping.clear()
    yield
    cleanup.stopping.clear()


@pytest.mark.usefixtures("_not_stopping")
def test_spread_runs_are_recorded_apart_and_reused_like_any_repeat(tmp_path):
    cell = Cell("2.21.0", "cpu")
    plan = Matrix(cells=(cell,), scenarios=("seeded_init",), repeats=2, seed=42, timeout=60.0,
                  docker=DockerSettings(), source=Path("matrix.toml"), spread_seeds=2)  # fmt: skip
    first = FakeBackend()
    [outcome] = runner.run_matrix(first, plan, [cell], runner.RunOptions(tmp_path))
    assert sorted(first.started) == ["seeded_init-seeded #0", "seeded_init-seeded #1", "seeded_init-seeded seed 43",
                                     "seeded_init-seeded seed 44"]  # fmt: skip
    assert outcome.counts == {"ok": 4}
    folder = Layout(tmp_path).cell(cell.id).root / "seeded_init-seeded"
    assert sorted(p.name for p in folder.glob("*.json")) == ["0.json", "1.json", "spread-43.json", "spread-44.json"]
    spread = records.Record.read(folder / "spread-43.json")
    assert spread.spread and spread.seed == 43 and spread.repeat == 0
    loading = load([tmp_path])
    assert [r.record.seed for r in loading.records] == [42, 42] and [r.record.seed for r in loading.spread] == [43, 44]
    again = FakeBackend()
    [reused] = runner.run_matrix(again, plan, [cell], runner.RunOptions(tmp_path))
    assert reused.state == "up to date" and again.started == []
    # Another count of seeds reruns only what is new, and the report reads only the planned ones.
    more = FakeBackend()
    runner.run_matrix(more, Matrix(**{**plan.__dict__, "spread_seeds": 3}), [cell], runner.RunOptions(tmp_path))
    assert more.started == ["seeded_init-seeded seed 45"]
    fewer = Matrix(**{**plan.__dict__, "spread_seeds": 1})
    runner.run_matrix(FakeBackend(), fewer, [cell], runner.RunOptions(tmp_path))
    assert [r.record.seed for r in load([tmp_path]).spread] == [43]
    report = reporting.build([tmp_path])
    assert report.evidence is not None
    seed_spread = report.evidence.of(report.variant(cell.id, "seeded_init-seeded"), "model1.predictions")
    assert seed_spread is not None and seed_spread.source == "1 other seed (43)" and (seed_spread.spread or 0) > 0


@pytest.mark.usefixtures("_not_stopping")
def test_the_unseeded_sibling_stands_in_where_measured_and_spread_runs_run_where_tf_refused_it(tmp_path):
    cell = Cell("2.21.0", "cpu")
    plan = Matrix(cells=(cell,), scenarios=("dropout_training",), repeats=2, seed=42, timeout=60.0,
                  docker=DockerSettings(), source=Path("matrix.toml"), spread_seeds=2)  # fmt: skip
    here = FakeBackend()
    runner.run_matrix(here, plan, [cell], runner.RunOptions(tmp_path / "measured"))
    assert not any("seed 4" in label for label in here.started)
    folder = Layout(tmp_path / "measured").cell(cell.id).root / "dropout_training-seeded"
    stood_in = records.Record.read(folder / "spread-43.json")
    assert stood_in.status == "skipped" and "the unseeded variant's repeats measure" in stood_in.message
    again = FakeBackend()
    [reused] = runner.run_matrix(again, plan, [cell], runner.RunOptions(tmp_path / "measured"))
    assert reused.state == "up to date" and again.started == []
    refused = {f"dropout_training-unseeded #{i}" for i in (0, 1)}  # op determinism: TF asks for a seed
    there = FakeBackend(refused_repeats=refused)
    runner.run_matrix(there, plan, [cell], runner.RunOptions(tmp_path / "refused"))
    assert {"dropout_training-seeded seed 43", "dropout_training-seeded seed 44"} <= set(there.started)
    report = reporting.build([tmp_path / "refused"])
    assert report.evidence is not None
    spread = report.evidence.of(report.variant(cell.id, "dropout_training-seeded"), "model1.predictions")
    assert spread is not None and spread.source == "2 other seeds (43, 44)"


def test_the_verdict_thresholds_and_their_words():
    assert matter.judge(0.009, 1.0) == matter.Verdict.BIT_LEVEL
    assert matter.judge(0.01, 1.0) == matter.Verdict.SMALL
    assert matter.judge(0.1, 1.0) == matter.Verdict.MATERIAL
    assert matter.judge(1e-9, 1.0, [matter.Decisions("signs", 1, 10)]) == matter.Verdict.MATERIAL
    assert matter.judge(1e-9, None) == matter.Verdict.UNJUDGED
    assert matter.judge(1e-9, 0.0) == matter.Verdict.MATERIAL  # other seeds did not move it at all
    assert matter.Matter(matter.Verdict.SMALL, 0.05, 1.0).share() == "5 % of the seed-to-seed spread (1)"
    assert matter.Matter(matter.Verdict.MATERIAL, 1.1, 0.5).share() == "2.2× the seed-to-seed spread (0.5)"
