"""Explained pairs in the report: which pairs `matrix --explain` picks, its budget, and the sections it adds.

Hand-made records (tests/test_matter.py's) and hand-made explain.json files; `explain_pair` (the traced
re-runs, tests/test_explain.py) replaced by a stand-in that says what it was asked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from repromatrix import cli, explain, reporting
from repromatrix.errors import CellsFailedError
from repromatrix.reporting import explained
from tests.test_matter import OFF, ON, logits, two_cells, write

_OP = {
    "index_a": 97, "index_b": 97, "type": "MatMul", "type_b": "MatMul", "name": "", "layer": "sequential/dense_1",
    "phase": "predict", "call": 0, "step": 1, "inputs_matched": True, "attrs_differ": False, "certain": True,
    "why": "its inputs are equal on both sides", "kernel": "Eigen vs oneDNN (eager rewrite)",
    "size": {"max_abs": 1.5e-8, "values_differing": 6, "of": 10, "max_ulps": 8},
}  # fmt: skip
_SIDES = [
    {"cell": OFF, "repeat": 0, "tensorflow": "2.21.0", "keras": "3.12.0", "onednn": "off"},
    {"cell": ON, "repeat": 0, "tensorflow": "2.21.0", "keras": "3.12.0", "onednn": "on"},
]
PAYLOAD = {
    "title": f"cnn_like-seeded: {OFF} vs {ON}",
    "verdict": "kernel numerics",
    "sides": _SIDES,
    "outputs": {"untraced": ["model1.predictions"], "traced": ["model1.predictions"]},
    "weights": None,
    "op": _OP,
    "alignment": {"ops_a": 136, "ops_b": 136, "matched": 136, "exact": True, "unmatched_before_cause": 0},
    "notes": [],
}


def measured(root: Path) -> None:
    """oneDNN off/on flips cnn_like's predicted classes (material); seeded_like varies run to run in ON."""
    base = logits(1)
    two_cells(root, base, base[:, ::-1].copy(), spread_by=np.float32(1e-3) * np.ones_like(base))
    write(root, ON, logits(2), scenario="seeded_like", repeat=0)
    write(root, ON, logits(2) + np.float32(1e-6), scenario="seeded_like", repeat=1)
    write(root, OFF, logits(2) + np.float32(2e-7), scenario="tiny_like", repeat=0)
    write(root, OFF, logits(2) + np.float32(2e-7), scenario="tiny_like", repeat=1)
    write(root, ON, logits(2), scenario="tiny_like", repeat=0)
    write(root, ON, logits(2), scenario="tiny_like", repeat=1)


def test_pairs_are_picked_worst_first_one_per_transition_and_only_where_both_sides_can_run(tmp_path):
    measured(tmp_path)
    report = reporting.build([tmp_path])
    pairs = explained.pick(report, 10)
    # The broken expectation first (one cell, its repeats), then the material flip before the tiny one.
    assert [(p.scenario, p.cells) for p in pairs] == [
        ("seeded_like", (ON,)), ("cnn_like", (OFF, ON)), ("tiny_like", (OFF, ON))]  # fmt: skip
    assert "material" in pairs[1].why and pairs[1].title == f"cnn_like-seeded: {OFF} vs {ON}"
    assert [p.scenario for p in explained.pick(report, 2)] == ["seeded_like", "cnn_like"]
    assert [p.scenario for p in explained.pick(report, 10, runnable={ON})] == ["seeded_like"]


def test_an_explained_pair_is_a_section_of_every_rendering_and_a_missing_one_says_why(tmp_path):
    measured(results := tmp_path / "results")
    out = tmp_path / "report"
    pair = explained.Pair("cnn_like", "seeded", (OFF, ON), "onednn on→off (material)")
    skipped = explained.Pair("tiny_like", "seeded", (OFF, ON), "onednn on→off (small)")
    (out / "explain" / pair.slug).mkdir(parents=True)
    (out / "explain" / pair.slug / "explain.json").write_text(json.dumps(PAYLOAD))
    (out / "explain" / "index.json").write_text(json.dumps({"pairs": [
        pair.to_json(), {**skipped.to_json(), "not_explained": "the budget of 60 s was spent"}]}))  # fmt: skip
    reporting.render_all([results], out)
    md = (out / "report.md").read_text()
    assert f"## Explained: cnn_like-seeded: {OFF} vs {ON}" in md
    assert "MatMul in layer sequential/dense_1, predict" in md and "6 of 10 values differ" in md
    assert "Eigen vs oneDNN" in md and "Picked as onednn on→off (material)" in md
    assert "## Not explained" in md and "the budget of 60 s was spent" in md
    html = (out / "report.html").read_text()
    assert 'id="explained-1"' in html and 'id="not-explained"' in html and "sequential/dense_1" in html
    entries = json.loads((out / "report.json").read_text())["explained"]
    assert [(e.get("verdict"), e["not_explained"]) for e in entries] == [
        ("kernel numerics", ""), (None, "the budget of 60 s was spent")]  # fmt: skip


def test_an_explanation_written_on_its_own_into_the_report_folder_is_shown_too(tmp_path):
    measured(results := tmp_path / "results")
    out = tmp_path / "report"
    (out / "explain" / "by-hand").mkdir(parents=True)
    (out / "explain" / "by-hand" / "explain.json").write_text(json.dumps(PAYLOAD))
    (out / "explain" / "not-one").mkdir()  # a folder without explain.json is no explanation
    report = reporting.render_all([results], out)
    assert [e.folder for e in report.explained] == ["explain/by-hand"]
    assert explained.markdown(PAYLOAD).startswith(f"## Explained: {PAYLOAD['title']}\n")


def test_explain_after_the_matrix_stops_starting_pairs_when_the_budget_is_spent(tmp_path, monkeypatch):
    measured(results := tmp_path / "results")
    clock = [1000.0]
    asked: list[tuple[str, str, Path]] = []

    def traced(args, out, runs):  # stands in for the two traced re-runs: 100 s each
        asked.append((args.cells, args.scenarios[0], runs))
        clock[0] += 100.0
        out.mkdir(parents=True)
        (out / "explain.json").write_text(json.dumps(PAYLOAD))
        return PAYLOAD

    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(explain, "explain_pair", traced)
    args = cli.parser().parse_args(["matrix", "--results", str(results), "--explain", "3", "--explain-budget", "150"])
    # Pair 1 starts at 0 s; pair 2 would end past 150 s (100 spent + the last one's 100): neither it nor 3 starts.
    explain.after_matrix(args, tmp_path / "report")
    assert [(cells, scenario) for cells, scenario, _ in asked] == [(ON, "seeded_like")]
    assert asked[0][2] == results / ".explain" / explained.Pair("seeded_like", "seeded", (ON,), "").slug
    index = json.loads((tmp_path / "report" / "explain" / "index.json").read_text())["pairs"]
    assert [bool(p.get("not_explained")) for p in index] == [False, True, True]
    assert "budget of 150 s was spent" in index[1]["not_explained"]
    # The traced re-runs live in a dot-folder of the results, which the matrix's report never reads.
    assert {v.cell_id for v in reporting.build([results]).variants} == {ON, OFF}


def test_a_pair_whose_re_run_fails_is_said_so_and_the_next_pair_is_still_explained(tmp_path, monkeypatch):
    measured(results := tmp_path / "results")
    calls: list[str] = []

    def traced(args, out, runs):
        calls.append(args.scenarios[0])
        if len(calls) == 1:
            raise CellsFailedError("1 of 1 cells had errors (x); see the lines above")
        out.mkdir(parents=True)
        (out / "explain.json").write_text(json.dumps(PAYLOAD))
        return PAYLOAD

    monkeypatch.setattr(explain, "explain_pair", traced)
    args = cli.parser().parse_args(["matrix", "--results", str(results), "--explain", "2"])
    explain.after_matrix(args, tmp_path / "report")
    index = json.loads((tmp_path / "report" / "explain" / "index.json").read_text())["pairs"]
    assert calls == ["seeded_like", "cnn_like"]
    assert index[0]["not_explained"].startswith("a re-run failed: 1 of 1 cells had errors")
    assert "not_explained" not in index[1]


def test_a_negative_explain_count_is_exit_2_before_anything_runs(tmp_path, capsys):
    code = cli.main(["matrix", "--backend", "local", "--results", str(tmp_path / "r"), "--explain", "-1"])
    assert code == 2 and "--explain" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
