"""Does it matter? Every difference beside the seed-to-seed spread and the decisions it changes.

A difference of bits says nothing about the model until it is set beside what a *different seed* does to
the same model in the same cell (the seed-to-seed spread: the variant's spread runs, `[run] spread_seeds`,
or its scenario's unseeded sibling, whose repeats are each a fresh random draw) and beside the decisions
it changes (the predicted class where an output has a last axis over 1; the sign, and a declared
`DECISION = {"threshold": t}`, where there is one value per input). Each difference then gets a word:

- *bit-level*: |Δ| below BIT_LEVEL of the spread, and no decision changes;
- *material*: |Δ| at MATERIAL of the spread or more, or any decision changes (whatever the size);
- *small*: in between.

Numbers from whole arrays where records kept them whole; from the kept sample (and said so) otherwise.
Pure logic over loaded records and their npz files, tested on hand-made records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from repromatrix.harness import records
from repromatrix.reporting import hostid
from repromatrix.reporting.analysis import Attribution, ClassTable, Finding, Severity, Variant, is_compared
from repromatrix.reporting.distances import UNAVAILABLE, Arrays, Distance
from repromatrix.reporting.load import Loaded

# |Δ| under this share of the seed-to-seed spread (and no decision changed): a rounding curiosity.
BIT_LEVEL = 0.01
# |Δ| at this share of the spread or more (within an order of magnitude of what a new seed does): it matters.
MATERIAL = 0.10
THRESHOLDS_TEXT = (
    f"bit-level = |Δ| under {BIT_LEVEL:.0%} of the seed-to-seed spread and no decision changes; "
    f"material = {MATERIAL:.0%} of it or more, or any decision changes; small = in between"
)


class Verdict(StrEnum):
    BIT_LEVEL = "bit-level"
    SMALL = "small"
    MATERIAL = "material"
    UNJUDGED = "unjudged"  # no spread measured and no decision changed: nothing to set it beside


RANK = {Verdict.UNJUDGED: 0, Verdict.BIT_LEVEL: 1, Verdict.SMALL: 2, Verdict.MATERIAL: 3}


def is_decision_output(output: str) -> bool:
    """What a model decides from: a compared output that is not its weights."""
    return is_compared(output) and "weights" not in output.removeprefix("model1.")


# -- decisions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Decisions:
    """How many of one kind of decision two outputs disagree on."""

    kind: str  # "predicted classes", "signs", "sides of 0.5"
    changed: int
    of: int
    sampled: tuple[int, int] | None = None  # (values read, values in the array) when counted on a kept sample

    def text(self) -> str:
        said = f"{self.changed} of {self.of} {self.kind} change"
        if self.sampled:
            said += f" (counted on the sample: {self.sampled[0]} of {self.sampled[1]} values kept)"
        return said

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "changed": self.changed, "of": self.of,
                "sampled": list(self.sampled) if self.sampled else None}  # fmt: skip


def count_decisions(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...], sampled: tuple[int, int] | None,
                    threshold: float | None) -> tuple[list[Decisions], str]:  # fmt: skip
    """The decisions two versions of one output disagree on, and why some could not be counted.

    `a` and `b` are whole arrays of `shape`, or (`sampled`) the values kept at the same positions.
    """
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub" or a.shape != b.shape or not shape:
        return [], ""
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    found: list[Decisions] = []
    if len(shape) >= 2 and shape[-1] > 1:
        if sampled:
            # A row's argmax needs the whole row; a sample holds scattered values of many rows.
            return [], (f"predicted classes not counted: the record kept a sample ({sampled[0]} of {sampled[1]} "
                        "values; raise [run] record_bytes)")  # fmt: skip
        rows_a, rows_b = wide_a.reshape(-1, shape[-1]), wide_b.reshape(-1, shape[-1])
        changed = int(np.count_nonzero(np.argmax(rows_a, axis=-1) != np.argmax(rows_b, axis=-1)))
        return [Decisions("predicted classes", changed, rows_a.shape[0])], ""
    flat_a, flat_b = wide_a.ravel(), wide_b.ravel()
    found.append(Decisions("signs", int(np.count_nonzero(np.sign(flat_a) != np.sign(flat_b))), flat_a.size, sampled))
    if threshold is not None:
        crossed = int(np.count_nonzero((flat_a >= threshold) != (flat_b >= threshold)))
        found.append(Decisions(f"sides of {threshold:g}", crossed, flat_a.size, sampled))
    return found, ""


# -- the seed-to-seed spread ----------------------------------------------------------


@dataclass(frozen=True)
class SeedSpread:
    """What another seed does to one output of one variant in one cell: the largest |Δ| to the base seed's."""

    cell_id: str
    scenario: str  # the variant's name, scenario-variant
    output: str
    spread: float | None  # None: not measured
    source: str  # "2 other seeds (43, 44)", "the unseeded variant's 3 repeats"
    estimated: str = ""  # "estimated from 512 of 802816 values" when a record kept a sample
    decisions: tuple[Decisions, ...] = ()  # what the other seeds change (the most any one changes)
    note: str = ""  # why it is not measured

    def to_json(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "scenario": self.scenario, "output": self.output, "spread": self.spread,
                "source": self.source, "estimated": self.estimated, "note": self.note,
                "decisions": [d.to_json() for d in self.decisions]}  # fmt: skip


def _host(loaded: Loaded) -> str:
    """The host a record belongs to: its label with its fingerprint (a label is a host, reporting/hostid.py)."""
    return "/".join(hostid.key_of(loaded.record.host))


def _key(loaded: Loaded) -> tuple[str, str, str, str]:
    return (_host(loaded), loaded.cell_id, loaded.record.scenario, loaded.record.variant)


def _others(variant: Variant, spread_runs: dict[tuple[str, str, str, str], list[Loaded]],
            siblings: dict[tuple[str, str, str], list[Variant]]) -> tuple[list[Loaded], str]:  # fmt: skip
    """The outputs of other seeds beside the variant's own, and where they came from."""
    base = variant.representative
    if base is None:
        return [], ""
    if not variant.seeded:  # each unseeded repeat is its own random draw
        own = [r for r in variant.ok_records if r is not base]
        return own, f"its own {len(variant.ok_records)} unseeded repeats" if own else ""
    runs = [r for r in spread_runs.get(_key(base), []) if r.record.is_ok]
    if runs:
        seeds = ", ".join(str(r.record.seed) for r in runs)
        return runs, f"{len(runs)} other seed{'s' if len(runs) != 1 else ''} ({seeds})"
    for sibling in siblings.get((_host(base), base.cell_id, variant.scenario), []):
        if not sibling.seeded and sibling.ok_records:
            return sibling.ok_records, f"the {sibling.variant} variant's {sibling.ok_repeats} repeats"
    return [], ""


@dataclass
class Evidence:
    """Every variant's seed-to-seed spread, per compared output; the arrays are read once."""

    arrays: Arrays
    spreads: dict[tuple[str, str], dict[str, SeedSpread]] = field(default_factory=dict)  # (cell id, name) → output

    def of(self, variant: Variant | None, output: str) -> SeedSpread | None:
        if variant is None:
            return None
        return self.spreads.get((variant.cell_id, variant.name), {}).get(output)


def threshold_of(loaded: Loaded | None) -> float | None:
    return loaded.record.decision.get("threshold") if loaded is not None else None


def evidence(all_variants: list[Variant], spread_runs: Iterable[Loaded], arrays: Arrays) -> Evidence:
    """The spread of every measured variant (published ones carry no arrays: none)."""
    runs: dict[tuple[str, str, str, str], list[Loaded]] = {}
    for loaded in spread_runs:
        runs.setdefault(_key(loaded), []).append(loaded)
    siblings: dict[tuple[str, str, str], list[Variant]] = {}
    for v in all_variants:
        if v.representative is not None:
            siblings.setdefault((_host(v.representative), v.representative.cell_id, v.scenario), []).append(v)
    found = Evidence(arrays)
    for v in all_variants:
        base = v.representative
        if base is None or v.published:
            continue
        others, source = _others(v, runs, siblings)
        per_output: dict[str, SeedSpread] = {}
        for output in v.compared_outputs:
            if not others:
                how = (
                    "no spread run measured ([run] spread_seeds) and no measured unseeded sibling here"
                    if v.seeded
                    else "one repeat"
                )
                per_output[output] = SeedSpread(v.cell_id, v.name, output, None, "", note=f"not measured: {how}")
                continue
            worst = Distance()
            most: dict[str, Decisions] = {}
            for other in others:
                worst = worst.worse(arrays.distance(base, other, output))
                if is_decision_output(output):
                    for d in _decisions(arrays, base, other, output)[0]:
                        if d.kind not in most or d.changed > most[d.kind].changed:
                            most[d.kind] = d
            per_output[output] = SeedSpread(v.cell_id, v.name, output, worst.max_abs, source, worst.estimated,
                                            tuple(most.values()), worst.note)  # fmt: skip
        found.spreads[(v.cell_id, v.name)] = per_output
    return found


def _decisions(arrays: Arrays, left: Loaded | None, right: Loaded | None, output: str) -> tuple[list[Decisions], str]:
    """The decisions two records' versions of an output disagree on (on their shared sample when sampled)."""
    if left is None or right is None:
        return [], ""
    try:
        a, b = arrays.get(left)[output], arrays.get(right)[output]
        kept_a, kept_b = left.record.outputs[output], right.record.outputs[output]
    except (records.RecordError, KeyError):
        return [], ""
    if kept_a.shape != kept_b.shape:
        return [], ""
    sampled = None
    if kept_a.sampled or kept_b.sampled:
        a = a if kept_a.sampled else kept_b.kept_of(a)
        b = b if kept_b.sampled else kept_a.kept_of(b)
        sampled = (int(np.asarray(a).size), kept_a.size)
    return count_decisions(np.asarray(a), np.asarray(b), kept_a.shape, sampled, threshold_of(left))


# -- one difference -------------------------------------------------------------------


@dataclass(frozen=True)
class Matter:
    """One difference (or the worst of several) against the seed-to-seed spread and the decisions it changes."""

    verdict: Verdict
    max_abs: float | None
    spread: float | None
    decisions: tuple[Decisions, ...] = ()
    source: str = ""  # where the spread came from
    note: str = ""  # why it is unjudged, or what was estimated
    pairs: int = 1  # differences it stands for (the worst of them is shown)

    @property
    def ratio(self) -> float | None:
        if self.max_abs is None or self.spread is None:
            return None
        if self.spread == 0:
            return float("inf") if self.max_abs > 0 else 0.0
        return self.max_abs / self.spread

    def share(self) -> str:
        """'0.1 % of the seed-to-seed spread (0.21)'."""
        if self.spread is None:
            return "no seed-to-seed spread measured" + (f" ({self.note})" if self.note else "")
        if self.spread == 0:
            return "other seeds gave the very same values (spread 0)"
        ratio = self.ratio or 0.0
        if ratio >= 1:
            return f"{ratio:.2g}× the seed-to-seed spread ({self.spread:.2g})"
        return f"{ratio * 100:.2g} % of the seed-to-seed spread ({self.spread:.2g})"

    def text(self) -> str:
        """'0.1 % of the seed-to-seed spread (0.21); 0 of 64 predicted classes change: bit-level'."""
        parts = [self.share(), *(d.text() for d in self.decisions)]
        return "; ".join(parts) + f": {self.verdict}"

    def to_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {"verdict": self.verdict, "max_abs": self.max_abs, "spread": self.spread,
                "ratio": None if ratio is None or ratio == float("inf") else ratio, "source": self.source,
                "note": self.note, "pairs": self.pairs, "decisions": [d.to_json() for d in self.decisions],
                "text": self.text()}  # fmt: skip


def judge(max_abs: float | None, spread: float | None, decisions: Iterable[Decisions] = ()) -> Verdict:
    """The word for one difference: decisions first (any change is material), then its size beside the spread."""
    if any(d.changed for d in decisions):
        return Verdict.MATERIAL
    if max_abs is None or spread is None:
        return Verdict.UNJUDGED
    if spread == 0:
        return Verdict.MATERIAL if max_abs > 0 else Verdict.BIT_LEVEL
    ratio = max_abs / spread
    return Verdict.BIT_LEVEL if ratio < BIT_LEVEL else Verdict.MATERIAL if ratio >= MATERIAL else Verdict.SMALL


def _smaller(*spreads: SeedSpread | None) -> SeedSpread | None:
    """The tighter of two cells' spreads: a difference is bit-level only if it is tiny beside both."""
    measured = [s for s in spreads if s is not None and s.spread is not None]
    return min(measured, key=lambda s: s.spread or 0.0) if measured else next((s for s in spreads if s), None)


def between(found: Evidence, left: Variant | None, right: Variant | None, output: str,
            distance: Distance | None = None) -> Matter:  # fmt: skip
    """One difference between two variants' results (two cells, or one published side)."""
    a, b = (left.representative if left else None), (right.representative if right else None)
    distance = distance or found.arrays.distance(a, b, output)
    spread = _smaller(found.of(left, output), found.of(right, output))
    decisions, why = _decisions(found.arrays, a, b, output) if is_decision_output(output) else ([], "")
    if a is None or b is None:
        why = UNAVAILABLE
    notes = [n for n in (distance.estimated, why, spread.note if spread and spread.spread is None else "") if n]
    value = spread.spread if spread else None
    return Matter(judge(distance.max_abs, value, decisions), distance.max_abs, value, tuple(decisions),
                  spread.source if spread else "", "; ".join(notes))  # fmt: skip


def worst(matters: list[Matter]) -> Matter | None:
    """Several differences in one: the worst word, the largest share, the most decisions of each kind."""
    if not matters:
        return None
    top = max(matters, key=lambda m: (RANK[m.verdict], m.ratio if m.ratio is not None else -1.0))
    most: dict[str, Decisions] = {}
    for m in matters:
        for d in m.decisions:
            if d.kind not in most or d.changed > most[d.kind].changed:
                most[d.kind] = d
    return Matter(top.verdict, top.max_abs, top.spread, tuple(most.values()), top.source, top.note, len(matters))


# -- where the report shows differences -----------------------------------------------


def annotate_attribution(attributed: list[Attribution], found: Evidence) -> None:
    """Each axis transition's differing pairs, judged: `entry.matter` is the worst of them."""
    for entry in attributed:
        entry.matter = worst([between(found, left, right, entry.output, d) for left, right, d in entry.differing])


def annotate_classes(tables: list[ClassTable], all_variants: list[Variant], found: Evidence) -> None:
    """Each pair of classes, judged between the cells whose representatives the distance was read from."""
    by_cell = {(v.cell_id, v.name): v for v in all_variants}
    for table in tables:
        for pair in table.pairs:
            left, right = (_holder(by_cell, table, letter) for letter in (pair.a, pair.b))
            pair.matter = between(found, left, right, table.output, pair.distance)


def _holder(by_cell: dict[tuple[str, str], Variant], table: ClassTable, letter: str) -> Variant | None:
    """The cell whose record stands for a class (the one its distances were read from)."""
    chosen = table.classes[letter]["representative"]
    held = [by_cell[(c, table.scenario)] for c in table.classes[letter]["cells"] if (c, table.scenario) in by_cell]
    return next((v for v in held if v.representative is chosen), held[0] if held else None)


def run_to_run(found: Evidence, variant: Variant) -> Matter | None:
    """A variant that varied run to run: its repeats' worst difference beside its seed spread."""
    base = variant.representative
    if base is None or not variant.spreads:
        return None
    judged = []
    for spread in variant.spreads:
        for other in variant.ok_records[1:]:
            if other.record.outputs.get(spread.output) != base.record.outputs.get(spread.output):
                distance = found.arrays.distance(base, other, spread.output)
                decisions, _ = _decisions(found.arrays, base, other, spread.output) \
                    if is_decision_output(spread.output) else ([], "")  # fmt: skip
                seed = found.of(variant, spread.output)
                value = seed.spread if seed else None
                judged.append(Matter(judge(distance.max_abs, value, decisions), distance.max_abs, value,
                                     tuple(decisions), seed.source if seed else "", distance.estimated))  # fmt: skip
    return worst(judged)


def annotate_findings(findings: list[Finding], all_variants: list[Variant], found: Evidence) -> list[Finding]:
    """A seeded variant that varies run to run: is what varies bit-level or material? Said in its finding."""
    by_cell = {(v.cell_id, v.name): v for v in all_variants}
    annotated = []
    for finding in findings:
        variant = by_cell.get((finding.cell_id, finding.scenario))
        matter = run_to_run(found, variant) if variant is not None else None
        if finding.severity == Severity.FINDING and matter is not None and "run to run" in finding.text:
            finding = Finding(finding.severity, finding.cell_id, finding.scenario,
                              f"{finding.text} — does it matter: {matter.text()}")  # fmt: skip
        annotated.append(finding)
    return annotated


def annotate_drift(changes: list[dict[str, str]], all_variants: list[Variant], found: Evidence,
                   baseline: Path) -> None:  # fmt: skip
    """A drift entry whose bits changed, judged against this run's spread (a results-folder baseline only:
    a published report.json keeps digests, not arrays)."""
    bits = [c for c in changes if c["change"].startswith("bits of ")]
    if not bits:
        return
    before: dict[str, Variant] = {}
    if baseline.is_dir():
        from repromatrix.reporting.analysis import variants
        from repromatrix.reporting.load import load

        before = {f"{v.cell_id}/{v.name}": v for v in variants(load([baseline]).records, found.arrays)}
    now = {f"{v.cell_id}/{v.name}": v for v in all_variants}
    for change in bits:
        output = change["change"].removeprefix("bits of ")
        old, new = before.get(change["variant"]), now.get(change["variant"])
        if old is None:
            spread = found.of(new, output)
            change["matter"] = f"{UNAVAILABLE}; spread here {spread.spread:.2g}" if spread and spread.spread \
                else UNAVAILABLE  # fmt: skip
            continue
        change["matter"] = between(found, new, old, output).text()


def thresholds_line(attributed: list[Attribution]) -> list[str]:
    """The thresholds, said once under the headline's per-axis lines, with where the spreads came from."""
    judged = [e.matter for e in attributed if e.matter is not None and e.matter.verdict != Verdict.UNJUDGED]
    if not judged:
        return []
    sources = sorted({m.source.split(" (")[0] for m in judged if m.source})
    said = f" Spread from {'; '.join(sources)} in the same cell." if sources else ""
    return [f"Does it matter: {THRESHOLDS_TEXT} (docs/reading-the-report.md).{said}"]


def clause(entries: list[Attribution]) -> str:
    """The headline's word on the outputs a transition changed: 'predictions: 0.1 % of the ...: bit-level'."""
    judged = [e for e in entries if e.matter is not None and e.matter.verdict != Verdict.UNJUDGED]
    if len(judged) == 1 and judged[0].matter is not None:
        return judged[0].matter.text()
    return "; ".join(f"{e.output.removeprefix('model1.')}: {e.matter.text()}" for e in judged if e.matter is not None)


SPREAD_HEADERS = ["cell", "scenario", "output", "seed-to-seed spread", "from", "decisions other seeds change"]


def spread_rows(found: Evidence) -> list[list[str]]:
    rows = []
    for per_output in found.spreads.values():
        for s in per_output.values():
            if records.is_seeded(s.scenario.rsplit("-", 1)[-1]):  # unseeded variants' own spread is run to run
                value = "—" if s.spread is None else f"{s.spread:.3g}" + (f" ({s.estimated})" if s.estimated else "")
                decided = "; ".join(d.text() for d in s.decisions)
                rows.append([s.cell_id, s.scenario, s.output.removeprefix("model1."), value, s.source or s.note,
                             decided])  # fmt: skip
    return rows


SPREAD_INTRO = (
    "What another seed does to the same model in the same cell: the largest |Δ| between the base seed's output "
    "and each other seed's (spread runs, `[run] spread_seeds`, never part of any verdict), or the scenario's "
    f"unseeded variant's repeats where it has one. Every difference in this report is set beside it: {THRESHOLDS_TEXT}."
)
