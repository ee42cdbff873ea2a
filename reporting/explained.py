"""Explained pairs in the report: which pairs `matrix --explain` traces, and a section for each explanation.

`repromatrix explain` writes `explain.json` (what it found, as data); this module renders it — the
`explain.md` beside it and, for every explanation in a report folder's `explain/*/`, a section of the
report. `matrix --explain N` picks the pairs here (`pick`) and writes `explain/index.json`: the pairs it
chose, each explained or not, and why not (the budget spent, a traced run that failed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repromatrix.reporting import analysis
from repromatrix.reporting.text import Section

EXPLAIN_DIR = "explain"  # in a report folder: explain/<pair>/explain.{json,md}, explain/index.json
EXPLAIN_JSON = "explain.json"
EXPLAIN_MD = "explain.md"
INDEX_JSON = "index.json"
# The worst first: what changes decisions, then what is comparable to the seed spread, then the rest.
_VERDICT_ORDER = {"material": 0, "small": 1, "bit-level": 2}
# Axes whose two sides cannot both be re-run on this machine.
_NOT_HERE = frozenset({"host"})


@dataclass(frozen=True)
class Pair:
    """Two sides to explain: two cells (or one cell's repeats 0 and 1) and one scenario·variant."""

    scenario: str
    variant: str
    cells: tuple[str, ...]
    why: str  # how it came to be picked: "tf 2.15.1→2.16.2 (material)", "varies run to run"

    @property
    def title(self) -> str:
        sides = f"{self.cells[0]} vs {self.cells[1]}" if len(self.cells) == 2 else f"{self.cells[0]}, repeat 0 vs 1"
        return f"{self.scenario}-{self.variant}: {sides}"

    @property
    def slug(self) -> str:
        """Its folder under explain/: readable, and one per pair."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.scenario}-{self.variant}--{'--'.join(self.cells)}")

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "variant": self.variant, "cells": list(self.cells), "why": self.why,
                "title": self.title, "folder": self.slug}  # fmt: skip


def pick(report: Any, limit: int, runnable: set[str] | None = None) -> list[Pair]:
    """The `limit` pairs most worth explaining, worst first.

    First the seeded variants that vary run to run (a broken expectation: one cell, repeats 0 and 1),
    then one pair per transition that flips a seeded variant's bits (attribution), ordered by the
    verdict on the worst difference, then its size. Only cells in `runnable` (this plan), and never a
    pair across hosts: both sides must run again here.
    """
    chosen: list[Pair] = []
    seen: set[tuple[str, str, frozenset[str]]] = set()

    def add(pair: Pair) -> None:
        key = (pair.scenario, pair.variant, frozenset(pair.cells))
        if key in seen or (runnable is not None and not set(pair.cells) <= runnable):
            return
        seen.add(key)
        chosen.append(pair)

    for v in report.variants:
        if v.seeded and not v.published and v.run_to_run == analysis.RunToRun.VARIES:
            add(Pair(v.scenario, v.variant, (v.cell_id,), "a seeded variant that varies run to run"))
    rows = [row for row in report.attribution if row.differing and row.expected_stable and row.axis not in _NOT_HERE]
    rows.sort(key=lambda row: (_VERDICT_ORDER.get(row.matter.verdict if row.matter else "", 3),
                               -(row.distance.max_abs or 0.0)))  # fmt: skip
    for row in rows:
        for a, b, _ in row.differing:
            if a.published or b.published:
                continue
            verdict = f" ({row.matter.verdict})" if row.matter else ""
            add(Pair(a.scenario, a.variant, (a.cell_id, b.cell_id), f"{row.axis} {row.transition}{verdict}"))
            break
    return chosen[:limit]


# --- reading what explain wrote ------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One pair in a report folder's explain/: its explanation, or why there is none."""

    title: str
    folder: str  # relative to the report folder
    why: str = ""  # why it was picked (matrix --explain), "" when explained on its own
    payload: dict[str, Any] | None = None  # explain.json
    not_explained: str = ""  # the reason, when payload is None

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "folder": self.folder, "why": self.why, "not_explained": self.not_explained,
                **({"verdict": self.payload.get("verdict")} if self.payload else {})}  # fmt: skip


def read(report_folder: Path) -> list[Entry]:
    """Every explanation under `report_folder`/explain/, in index.json's order, then the others by name."""
    root = report_folder / EXPLAIN_DIR
    if not root.is_dir():
        return []
    entries: list[Entry] = []
    listed: set[str] = set()
    index = root / INDEX_JSON
    planned = json.loads(index.read_text()).get("pairs", []) if index.is_file() else []
    for item in planned:
        folder = str(item.get("folder", ""))
        listed.add(folder)
        payload = _payload(root / folder)
        reason = "" if payload else str(item.get("not_explained") or "its explain.json is missing")
        entries.append(Entry(str(item.get("title", folder)), f"{EXPLAIN_DIR}/{folder}", str(item.get("why", "")),
                             payload, reason))  # fmt: skip
    for path in sorted(root.glob(f"*/{EXPLAIN_JSON}")):
        if path.parent.name not in listed and (payload := _payload(path.parent)):
            entries.append(Entry(str(payload.get("title", path.parent.name)), f"{EXPLAIN_DIR}/{path.parent.name}",
                                 payload=payload))  # fmt: skip
    return entries


def _payload(folder: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads((folder / EXPLAIN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


# --- rendering -----------------------------------------------------------------------------------
def describe_size(size: dict[str, Any]) -> str:
    if "max_abs" in size:
        ulps = f", {size['max_ulps']} ulp" if "max_ulps" in size else ""
        return f"{size['values_differing']} of {size['of']} values differ, by at most {size['max_abs']:.3g}{ulps}"
    parts = []
    if "max_abs_first_values" in size:
        parts.append(f"first values differ by up to {size['max_abs_first_values']:.3g}")
    if "sum_delta" in size:
        parts.append(f"sums differ by {size['sum_delta']:.3g}")
    return "; ".join(parts) or "digests differ"


def facts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """What an explanation says, as (what, answer) lines: explain.md's list and the report's table alike."""
    lines = [("verdict", str(payload.get("verdict", "?")))]
    for n, side in enumerate(payload.get("sides", [])):
        environment = f"TF {side.get('tensorflow')}, Keras {side.get('keras')}, oneDNN {side.get('onednn')}"
        lines.append((f"side {'AB'[n]}", f"{side.get('cell')} repeat {side.get('repeat')} ({environment})"))
    outputs = payload.get("outputs") or {}
    if outputs:
        lines += [("outputs that differ, untraced", ", ".join(outputs.get("untraced", [])) or "none"),
                  ("outputs that differ, traced", ", ".join(outputs.get("traced", [])) or "none")]  # fmt: skip
    weights = payload.get("weights")
    if weights is None:
        lines.append(("weights", "equal at every snapshot (initialisation, every training step, before predict)"))
    else:
        where = "at initialisation" if weights.get("at_initialisation") else "after a training step"
        names = str(weights.get("name_a")) + (
            f" / {weights.get('name_b')}" if weights.get("name_b") != weights.get("name_a") else ""
        )
        sampled = weights.get("max_abs_sampled")
        size = f"; sampled values differ by up to {sampled:.3g}" if sampled else ""
        lines.append(("weights first differ", f"{where} ({weights.get('snapshot')}): variable "
                      f"{weights.get('variable')} {names}, shape {list(weights.get('shape', []))}; sums differ by "
                      f"{weights.get('sum_delta', 0.0):.3g}{size}"))  # fmt: skip
    op = payload.get("op")
    if op is None:
        lines.append(("ops", "every traced op's output is equal on both sides"))
    else:
        names = op["type"] if op["type"] == op.get("type_b") else f"{op['type']} / {op.get('type_b')}"
        step = f"step {op.get('step')}" if op.get("call", -1) >= 0 else "before any fit or predict"
        certainty = "" if op.get("certain") else " (uncertain)"
        lines += [
            (f"first op that differs{certainty}",
             names + (f" {op['name']}" if op.get("name") else "")
             + f" in layer {op.get('layer') or '?'}, {op.get('phase')}, call {op.get('call')}, {step} "
             f"(op {op.get('index_a')} of side A)"),
            ("why", str(op.get("why", ""))),
            ("size", describe_size(op.get("size") or {})),
        ]  # fmt: skip
        if op.get("kernel"):
            lines.append(("kernel", str(op["kernel"])))
    al = payload.get("alignment") or {}
    if al:
        lines.append(("alignment", f"{al.get('matched')} of {al.get('ops_a')} (A) / {al.get('ops_b')} (B) ops matched"
                      + (", the same ops in the same order" if al.get("exact") else
                         f"; {al.get('unmatched_before_cause', 0)} unmatched before the difference")))  # fmt: skip
    lines += [("note", str(note)) for note in payload.get("notes", [])]
    return lines


def markdown(payload: dict[str, Any]) -> str:
    """explain.md: the title and the facts as a list."""
    title = payload.get("title", "")
    lines = [f"## Explained: {title}", ""]
    lines += [f"- **{what}**: {answer}" for what, answer in facts(payload)]
    return "\n".join(lines) + "\n"


def sections(entries: list[Entry]) -> list[Section]:
    """A section per explained pair; the pairs chosen but not explained in one table after them."""
    result = []
    explained = [(entry, entry.payload) for entry in entries if entry.payload is not None]
    for n, (entry, payload) in enumerate(explained, start=1):
        intro = f"Traced by repromatrix explain; its files are in {entry.folder}/" + (
            f". Picked as {entry.why}." if entry.why else "."
        )
        rows = [[what, answer] for what, answer in facts(payload)]
        result.append(Section(f"Explained: {entry.title}", ["what", "answer"], rows, intro=intro,
                              kind=f"explained-{n}"))  # fmt: skip
    missing = [[e.title, e.why, e.not_explained] for e in entries if e.payload is None]
    if missing:
        result.append(Section("Not explained", ["pair", "picked as", "why not"], missing, kind="not-explained",
                              intro="Chosen by --explain but without an explanation."))  # fmt: skip
    return result
