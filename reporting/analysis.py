"""Comparison semantics: verdicts, classes, distances, attribution, first divergence, drift.

Pure logic over loaded records (and their npz files, for distances only), so
it is tested on hand-made records.
"""

from __future__ import annotations

import json
import re
import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np

from repromatrix.matrix import AXIS_LABELS, Cell, value_label, value_order
from repromatrix.reporting.load import Loaded, Published
from repromatrix.scenarios import records

REPORT_SCHEMA = 2
READABLE_SCHEMAS = (1, 2)  # drift baselines: the drift summary kept its form
VARIES = "~"
NO_RESULT = "—"
# "Numerically the same, not bit-identical": classes this close are grouped in the tolerance view.
TOLERANCE_ULP = 16
# Past this many ULP (different signs or magnitudes) a ULP count says nothing; relative error does.
HUGE_ULP = 10_000_000
# Values this small make large ULP counts from tiny differences (1e-7 and 1.3e-7 are 524288 ULP apart).
NEAR_ZERO = 1e-5
# Arrays compared across environments: model1's, except those first divergence reads.
PER_LAYER = re.compile(r"^model1\.layer\.(\d+)\.(.+)$")
PER_EPOCH = re.compile(r"^model1\.epoch\.(\d+)\.weights$")
UNKNOWN_HOST = "unknown-host"
# A published report.json keeps digests, not arrays: what needs arrays says so.
UNAVAILABLE = (
    "arrays unavailable (one side is a published report: digests only)"  # records made before hosts were recorded
)


def is_compared(output: str) -> bool:
    return output.startswith("model1.") and not PER_LAYER.match(output) and not output.startswith("model1.epoch.")


# -- distances ------------------------------------------------------------------


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Largest number of representable floats between matching elements."""
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise TypeError(f"ULP distance needs two float arrays of one dtype, got {a.dtype} and {b.dtype}")
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x: np.ndarray) -> np.ndarray:
        # Map IEEE bit patterns onto a line where adjacent floats are adjacent integers (-0 == +0).
        raw = x.view(bits).astype(object) if bits is np.int64 else x.view(bits).astype(np.int64)
        low = -(2 ** (8 * a.dtype.itemsize - 1))
        return np.where(raw < 0, low - raw, raw)

    if a.size == 0:
        return 0
    return int(np.max(np.abs(ordered(a.ravel()) - ordered(b.ravel()))))


@dataclass(frozen=True)
class Distance:
    max_abs: float | None = None
    max_ulp: int | None = None
    max_rel: float | None = None
    near_zero: bool = False  # the largest ULP gap sits at values below NEAR_ZERO
    note: str = ""
    # (values compared, values in the array) when a record kept only a sample; None: exact
    sampled: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_ulp": self.max_ulp, "max_rel": self.max_rel,
                "near_zero": self.near_zero, "note": self.note, "estimated": self.estimated}  # fmt: skip

    @property
    def estimated(self) -> str:
        """'estimated from 512 of 802816 values' where a record kept a sample; '' when exact."""
        return f"estimated from {self.sampled[0]} of {self.sampled[1]} values" if self.sampled else ""

    @property
    def ulp_meaningful(self) -> bool:
        """Near zero a large count is explained (floats are dense there); elsewhere past HUGE_ULP it is noise."""
        return self.max_ulp is not None and (self.near_zero or self.max_ulp <= HUGE_ULP)

    def brief(self) -> str:
        """'|Δ| ≤ 3e-08, 4 ULP' — relative error instead of a meaningless ULP count."""
        if self.max_abs is None:
            return self.note or "not comparable"
        if self.max_abs == 0 and self.sampled:
            kept, size = self.sampled
            return f"no difference among the {kept} sampled values of {size} (the bits differ elsewhere)"
        if self.max_abs == 0:
            return "equal values, different bits (e.g. -0 and +0)"
        parts = [f"|Δ| {'≥' if self.sampled else '≤'} {self.max_abs:.2g}"]
        if self.ulp_meaningful:
            parts.append(f"{self.max_ulp} ULP" + (" near zero" if self.near_zero else ""))
        elif self.max_rel is not None:
            parts.append(f"relative {self.max_rel:.2g}")
        if self.sampled:
            parts.append(self.estimated)
        return ", ".join(parts)

    def ulp_cell(self) -> str:
        """The ULP column of a table: the count when it means something, else the relative error."""
        if self.max_ulp is None:
            return ""
        if self.ulp_meaningful:
            return f"{self.max_ulp}" + (" *" if self.near_zero else "")
        return f"rel {self.max_rel:.2g}" if self.max_rel is not None else "—"

    def worse(self, other: Distance) -> Distance:
        if other.max_abs is None:
            return self if self.max_abs is not None or self.note else other  # keep why it is not comparable
        if self.max_abs is None or (other.max_abs, other.max_ulp or 0) > (self.max_abs, self.max_ulp or 0):
            return other
        return self


def compare_arrays(a: np.ndarray, b: np.ndarray) -> Distance:
    if a.shape != b.shape:
        return Distance(note=f"shapes differ: {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        return Distance(note=f"dtypes differ: {a.dtype} vs {b.dtype}")
    if a.dtype.kind not in "fiub" or a.size == 0:
        return Distance(max_abs=0.0 if a.size == 0 else None, note="" if a.size == 0 else f"{a.dtype} arrays")
    wide_a, wide_b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    gap = np.abs(wide_a - wide_b)
    scale = np.maximum(np.abs(wide_a), np.abs(wide_b))
    # Relative to the array's largest magnitude (norm-wise): element-wise ratios blow up at values near zero.
    largest = float(scale.max())
    rel = float(gap.max()) / largest if largest > 0 else 0.0
    ulp = ulp_distance(a, b) if a.dtype.kind == "f" else None
    near_zero = False
    if ulp is not None and a.dtype.kind == "f":
        bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
        steps = np.abs(a.ravel().view(bits).astype(np.float64) - b.ravel().view(bits).astype(np.float64))
        worst = int(np.argmax(steps))
        near_zero = bool(scale[worst] < NEAR_ZERO and ulp > TOLERANCE_ULP)
    return Distance(float(gap.max()), ulp, rel, near_zero)


class Arrays:
    """npz files loaded once per report."""

    def __init__(self) -> None:
        self._cache: dict[Path, dict[str, np.ndarray] | records.RecordError] = {}

    def get(self, loaded: Loaded) -> dict[str, np.ndarray]:
        if loaded.arrays_path not in self._cache:
            try:
                self._cache[loaded.arrays_path] = loaded.arrays()
            except records.RecordError as exc:
                self._cache[loaded.arrays_path] = exc
        value = self._cache[loaded.arrays_path]
        if isinstance(value, records.RecordError):
            raise value
        return value

    def distance(self, left: Loaded | None, right: Loaded | None, output: str) -> Distance:
        """Exact where both records kept the array whole; estimated on the shared sample positions otherwise."""
        if left is None or right is None:
            return Distance(note=UNAVAILABLE)
        try:
            a, b = self.get(left)[output], self.get(right)[output]
            kept_a, kept_b = left.record.outputs[output], right.record.outputs[output]
        except (records.RecordError, KeyError) as exc:
            return Distance(note=f"arrays unreadable: {exc}")
        if not (kept_a.sampled or kept_b.sampled):
            return compare_arrays(a, b)
        if kept_a.shape != kept_b.shape:
            return Distance(note=f"shapes differ: {kept_a.shape} vs {kept_b.shape}")
        # Both sides at the same positions: a whole array is read where the other kept its sample.
        a, b = (kept_b.kept_of(a) if not kept_a.sampled else a), (kept_a.kept_of(b) if not kept_b.sampled else b)
        if a.shape != b.shape:
            return Distance(note="samples of different sizes (records made with different SAMPLE_VALUES)")
        return replace(compare_arrays(a, b), sampled=(int(a.size), kept_a.size))


# -- one cell × scenario variant ------------------------------------------------------


@dataclass
class Spread:
    """How an output varied among one variant's repeats."""

    output: str
    distinct: int
    processes: int
    distance: Distance


@dataclass
class Variant:
    """One cell × scenario variant: its repeats and what they say."""

    cell_id: str
    cell: dict[str, Any]
    scenario: str
    variant: str
    seed: int | None
    records: list[Loaded]
    expectation: dict[str, str]
    declared: dict[str, str]
    status: str = "ok"  # ok, error, skipped
    message: str = ""
    ok_repeats: int = 0
    run_to_run: str = "untested"  # identical, varies, untested (fewer than 2 process identities)
    run_to_run_note: str = ""  # why run to run is untested
    identities: int = 0  # independent process identities among the measured repeats
    identity_text: str = ""  # "3 processes", "3 forks of 3 parents"
    in_process: str = "untested"  # identical, differs, mixed, untested
    ran_on: str = ""  # cpu, gpu, mixed; empty when nothing ran
    isolation: str = ""  # process, fork, mixed
    environments: int = 0  # distinct reuse keys among the measured repeats
    digests: dict[str, str | None] = field(default_factory=dict)  # per output, None when repeats disagree
    spreads: list[Spread] = field(default_factory=list)  # outputs that varied run to run
    claim: str = "untested"  # held, broken, untested
    claim_reasons: list[str] = field(default_factory=list)
    published: str = ""  # the report.json it was read from (digests and verdicts only), or ""

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.variant}"

    @property
    def seeded(self) -> bool:
        return records.is_seeded(self.variant)

    @property
    def ok_records(self) -> list[Loaded]:
        return [r for r in self.records if r.record.is_ok]

    @property
    def representative(self) -> Loaded | None:
        return next(iter(self.ok_records), None)

    @property
    def compared_outputs(self) -> list[str]:
        return [name for name in self.digests if is_compared(name)]


def _summarise(variant: Variant, arrays: Arrays) -> None:
    ok = variant.ok_records
    variant.ok_repeats = len(ok)
    failed = next((r for r in variant.records if not r.record.is_ok), None)
    statuses = {r.record.status for r in variant.records}
    variant.status = "error" if "error" in statuses else ("ok" if ok else "skipped")
    if failed is not None:
        variant.message = failed.record.message or failed.record.status
    if not ok:
        return
    outputs = sorted({name for r in ok for name in r.record.outputs})
    for name in outputs:
        seen: dict[str, Loaded] = {}
        for r in ok:
            output = r.record.outputs.get(name)
            seen.setdefault(output.sha256 if output else "", r)
        variant.digests[name] = next(iter(seen)) if len(seen) == 1 else None
        if len(seen) > 1 and is_compared(name):
            reps = list(seen.values())
            worst = Distance()
            for left, right in combinations(reps[:6], 2):
                worst = worst.worse(arrays.distance(left, right, name))
            variant.spreads.append(Spread(name, len(seen), len(ok), worst))
    variant.identities, variant.identity_text = identities(ok)
    if len(ok) >= 2 and not all(d is not None for d in variant.digests.values()):
        variant.run_to_run = "varies"  # a difference needs no second identity to be real
    elif variant.identities >= 2:
        variant.run_to_run = "identical"
    elif len(ok) >= 2:
        variant.run_to_run_note = (
            f"its {len(ok)} repeats came from one process identity ({variant.identity_text}): nothing decided at "
            "start-up (hash seed, memory layout, import-time state) was varied; rerun with --force"
        )
    else:
        variant.run_to_run_note = "one measured repeat: run to run needs two or more (--repeats 2 or more)"
    checks = {r.record.in_process_identical for r in ok}
    variant.in_process = (
        "mixed" if len(checks) > 1 else {True: "identical", False: "differs"}.get(checks.pop(), "untested")
    )
    devices = {r.record.ran_on for r in ok}
    variant.ran_on = devices.pop() if len(devices) == 1 else "mixed"
    isolations = {r.record.isolation for r in ok}
    variant.isolation = isolations.pop() if len(isolations) == 1 else "mixed"
    variant.environments = len({r.record.reuse_key for r in ok})
    _judge(variant)


def identity(record: records.Record) -> str:
    """The process identity a repeat ran in: everything decided at interpreter start-up (hash seed,
    memory layout, module-level state). A fresh process is its own; a fork shares its parent's."""
    if record.isolation == "fork" and record.extra.get("fork_parent"):
        return f"parent {record.extra['fork_parent']}"
    return f"process {record.process_id or record.repeat}"


def identities(ok: list[Loaded]) -> tuple[int, str]:
    """How many independent identities the repeats span, and in words: "3 processes", "3 forks of 3 parents"."""
    distinct = {identity(r.record) for r in ok}
    forks = sum(r.record.isolation == "fork" for r in ok)
    parents = len({identity(r.record) for r in ok if r.record.isolation == "fork"})
    processes = len(ok) - forks
    parts = []
    if processes:
        parts.append(f"{processes} process{'es' if processes != 1 else ''}")
    if forks:
        parts.append(f"{forks} fork{'s' if forks != 1 else ''} of {parents} parent{'s' if parents != 1 else ''}")
    return len(distinct), " + ".join(parts)


def _source(variant: Variant, key: str) -> str:
    if key in variant.declared:
        return "declared in EXPECT"
    return f"the default for {'seeded' if variant.seeded else 'unseeded'} variants"


def _judge(variant: Variant) -> None:
    """Each variant against its own expectation: declared in the scenario, or the article's claims."""
    reasons = []
    want_r2r, want_ip = variant.expectation.get("run_to_run", "any"), variant.expectation.get("in_process", "any")
    if want_r2r == "identical" and variant.run_to_run == "varies":
        varied = (
            "; ".join(
                f"{s.output} {s.distinct} distinct among {s.processes} processes ({s.distance.brief()})"
                for s in variant.spreads
            )
            or "per-layer or per-epoch arrays"
        )
        reasons.append(f"expected identical run to run ({_source(variant, 'run_to_run')}), but varied: {varied}")
    if want_r2r == "differs" and variant.run_to_run == "identical":
        reasons.append(
            f"expected to differ run to run ({_source(variant, 'run_to_run')}), but all {variant.ok_repeats} "
            "processes gave the very same bits (something seeds it)"
        )
    if want_ip == "identical" and variant.in_process in ("differs", "mixed"):
        reasons.append(
            f"expected model1 and model2 identical in-process ({_source(variant, 'in_process')}), "
            f"but they {'differ' if variant.in_process == 'differs' else 'differ in some processes'}"
        )
    if want_ip == "differs" and variant.in_process in ("identical", "mixed"):
        reasons.append(
            f"expected model1 and model2 to differ in-process ({_source(variant, 'in_process')}), "
            f"but they came out identical{' in some processes' if variant.in_process == 'mixed' else ''}"
        )
    variant.claim_reasons = reasons
    tested = variant.in_process != "untested" or variant.run_to_run != "untested"
    variant.claim = "broken" if reasons else ("held" if tested else "untested")


def host_labels(loaded: list[Loaded], more: Iterable[dict[str, Any]] = ()) -> dict[str, str]:
    """Host id → a label unique among these records and hosts (two machines given one label get their ids)."""
    labels: dict[str, str] = {}
    for item in loaded:
        labels.setdefault(item.record.host_id, item.record.host_label or UNKNOWN_HOST)
    for host in more:
        labels.setdefault(str(host.get("id") or ""), str(host.get("label") or UNKNOWN_HOST))
    clashes = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {hid: f"{label}-{hid[:6]}" if label in clashes else label for hid, label in labels.items()}


def hosts_of(loaded: list[Loaded]) -> list[dict[str, Any]]:
    """Every host among the records, with its unique label and how many records it made."""
    labels = host_labels(loaded)
    found: dict[str, dict[str, Any]] = {}
    for item in loaded:
        entry = found.setdefault(item.record.host_id, {**item.record.host, "label": labels[item.record.host_id],
                                                       "records": 0})  # fmt: skip
        entry["records"] += 1
    return sorted(found.values(), key=lambda h: h["label"])


def variants(loaded: list[Loaded], arrays: Arrays | None = None, published: Iterable[Published] = ()) -> list[Variant]:
    """One Variant per host × cell × scenario variant. With several hosts, a cell id names its host
    (`tf2.21.0-cpu-onednn1-det0@laptop`) and host is an axis: run to run is judged within one host.
    Published reports add their variants as they judged them."""
    arrays = arrays or Arrays()
    published = list(published)
    labels = host_labels(loaded, [h for p in published for h in p.hosts])
    # A published report beside records is another side to compare, even from the same machine.
    several = len(labels) > 1 or bool(published and loaded)
    grouped: dict[tuple[str, str, str, str], list[Loaded]] = defaultdict(list)
    for item in loaded:
        grouped[(item.cell_id, item.record.host_id, item.record.scenario, item.record.variant)].append(item)
    found = []
    for (cell_id, host_id, scenario, variant_name), group in sorted(grouped.items()):
        group.sort(key=lambda r: r.record.repeat)
        first = group[0]
        cell = {**Cell.defaults(), **first.record.cell} if first.record.cell else {"id": cell_id}
        if several:
            cell = {**cell, "host": labels[host_id], "id": f"{cell_id}@{labels[host_id]}"}
            cell_id = cell["id"]
        variant = Variant(
            cell_id,
            cell,
            scenario,
            variant_name,
            first.record.seed,
            group,
            first.expectation,
            dict(first.record.expect),
        )
        _summarise(variant, arrays)
        found.append(variant)
    measured_hosts = {item.record.host_id for item in loaded}
    for source in published:
        found += published_variants(source, published_label(source, labels, measured_hosts), several or bool(loaded))
    return found


# -- findings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    severity: str  # finding (an expectation broken), warning, error
    cell_id: str
    scenario: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity, "cell_id": self.cell_id, "scenario": self.scenario, "text": self.text}


def findings(all_variants: list[Variant]) -> list[Finding]:
    """Everything a reader must not miss, seeded-but-varies first."""
    found = []
    for v in all_variants:
        for reason in v.claim_reasons:
            found.append(Finding("finding", v.cell_id, v.name, reason))
        if v.cell.get("device") == "cuda" and v.ran_on and v.ran_on != "gpu":
            found.append(
                Finding("warning", v.cell_id, v.name, f"requested CUDA but ran on {v.ran_on}: not a GPU result")
            )
        if v.environments > 1:
            text = (
                f"its repeats were measured in {v.environments} different environments or scenario versions; "
                "rerun the cell with --force to measure it in one"
            )
            found.append(Finding("warning", v.cell_id, v.name, text))
        if v.status == "error":
            found.append(Finding("error", v.cell_id, v.name, v.message))
    rank = {"finding": 0, "warning": 1, "error": 2}
    return sorted(found, key=lambda f: (rank[f.severity], "-unseeded" in f.scenario, f.cell_id, f.scenario))


# -- classes ------------------------------------------------------------------------


def _letters(index: int) -> str:
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        name = letters[remainder] + name
    return name


@dataclass
class ClassPair:
    a: str
    b: str
    distance: Distance
    divergence: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, **self.distance.to_json(), "first_divergence": self.divergence}


@dataclass
class ClassTable:
    """Cells grouped by the exact bits of one output of one scenario variant."""

    scenario: str  # the scenario variant's name
    output: str
    seeded: bool
    by_cell: dict[str, str]  # cell id → class letter, VARIES or NO_RESULT
    classes: dict[str, dict[str, Any]]  # letter → {"sha256", "cells", "representative"}
    pairs: list[ClassPair] = field(default_factory=list)
    tolerance_groups: list[list[str]] = field(default_factory=list)  # classes within TOLERANCE_ULP of each other

    def tolerance_text(self) -> str:
        groups = [g for g in self.tolerance_groups if len(g) > 1]
        if not groups or len(self.classes) < 2:
            return ""
        joined = "; ".join("≈".join(g) for g in groups)
        return f"Within {TOLERANCE_ULP} ULP of each other (numerically the same, not bit-identical): {joined}."


def class_tables(all_variants: list[Variant]) -> list[ClassTable]:
    by_scenario: dict[str, list[Variant]] = defaultdict(list)
    for v in all_variants:
        by_scenario[v.name].append(v)
    tables = []
    for scenario, group in sorted(by_scenario.items(), key=lambda kv: (not kv[1][0].seeded, kv[0])):
        outputs = sorted({o for v in group for o in v.compared_outputs}, key=output_order)
        for output in outputs:
            by_cell: dict[str, str] = {}
            classes: dict[str, dict[str, Any]] = {}
            letter_of: dict[str, str] = {}
            for v in group:
                if not v.ok_repeats or output not in v.digests:
                    by_cell[v.cell_id] = NO_RESULT
                    continue
                digest = v.digests[output]
                if digest is None:
                    by_cell[v.cell_id] = VARIES
                    continue
                if digest not in letter_of:
                    letter_of[digest] = _letters(len(letter_of))
                    classes[letter_of[digest]] = {"sha256": digest, "cells": [], "representative": v.representative}
                classes[letter_of[digest]]["cells"].append(v.cell_id)
                # Prefer a measured representative (with arrays) over a published one (digests only).
                classes[letter_of[digest]]["representative"] = (
                    classes[letter_of[digest]]["representative"] or v.representative
                )
                by_cell[v.cell_id] = letter_of[digest]
            tables.append(ClassTable(scenario, output, group[0].seeded, by_cell, classes))
    return tables


def output_order(output: str) -> tuple[int, str]:
    return ({"model1.predictions": 0, "model1.weights": 1}.get(output, 2), output)


def first_divergence(left: records.Record, right: records.Record) -> str:
    """Where two results part: the first epoch whose weights differ, the first layer whose output does."""
    parts = []
    epochs = sorted((int(m.group(1)), name) for name in left.outputs if (m := PER_EPOCH.match(name)))
    differing = [n for n, name in epochs if name in right.outputs and left.outputs[name] != right.outputs[name]]
    if epochs:
        if not differing:
            parts.append("weights equal after every epoch")
        elif differing[0] == 0:
            parts.append("weights differ at initialisation")
        else:
            parts.append(f"weights equal at initialisation; first difference at epoch {differing[0]}")
    layers = sorted((int(m.group(1)), m.group(2), name) for name in left.outputs if (m := PER_LAYER.match(name)))
    for index, layer, name in layers:
        if name in right.outputs and left.outputs[name] != right.outputs[name]:
            parts.append(f"in the forward pass from layer {index} `{layer}`")
            break
    else:
        if layers:
            parts.append("every layer's output equal")
    return "; ".join(parts)


def add_distances(tables: list[ClassTable], arrays: Arrays, limit: int = 12) -> None:
    """Distance and first divergence between each pair of classes (the first `limit` of a table)."""
    for table in tables:
        letters = list(table.classes)[:limit]
        for x, y in combinations(letters, 2):
            left, right = table.classes[x]["representative"], table.classes[y]["representative"]
            divergence = first_divergence(left.record, right.record) if left and right else ""
            table.pairs.append(ClassPair(x, y, arrays.distance(left, right, table.output), divergence))
        table.tolerance_groups = _tolerance_groups(letters, table.pairs)


def _tolerance_groups(letters: list[str], pairs: list[ClassPair]) -> list[list[str]]:
    parent = {letter: letter for letter in letters}

    def root(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for pair in pairs:
        ulp = pair.distance.max_ulp
        if ulp is not None and ulp <= TOLERANCE_ULP:
            parent[root(pair.b)] = root(pair.a)
    groups: dict[str, list[str]] = defaultdict(list)
    for letter in letters:
        groups[root(letter)].append(letter)
    return list(groups.values())


# -- attribution ----------------------------------------------------------------------


def _axis_value_key(axis: str, value: Any) -> tuple[int, Any]:
    return value_order(axis, value)


def _show(axis: str, value: Any) -> str:
    return value_label(axis, value)


@dataclass
class Attribution:
    """One axis × value transition × scenario variant × output: how often that change alone flips the bits."""

    axis: str
    from_value: Any
    to_value: Any
    scenario: str
    output: str
    pairs: int = 0  # both cells stable
    differ: int = 0
    unstable: int = 0  # one side varies run to run, or has no result
    distance: Distance = field(default_factory=Distance)
    # False for variants meant to vary (unseeded): their pairs can never be stable, which says nothing.
    expected_stable: bool = True

    @property
    def transition(self) -> str:
        return f"{_show(self.axis, self.from_value)}→{_show(self.axis, self.to_value)}"

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "from": self.from_value, "to": self.to_value, "scenario": self.scenario,
                "output": self.output, "pairs": self.pairs, "differ": self.differ, "unstable": self.unstable,
                "max_abs": self.distance.max_abs, "max_ulp": self.distance.max_ulp,
                "max_rel": self.distance.max_rel, "expected_stable": self.expected_stable}  # fmt: skip


def _axes(group: list[Variant]) -> list[str]:
    keys: set[str] = set()
    for v in group:
        keys |= {k for k in v.cell if k != "id"}
    return sorted(k for k in keys if len({json.dumps(v.cell.get(k), sort_keys=True) for v in group}) > 1)


def attribution(all_variants: list[Variant], arrays: Arrays) -> list[Attribution]:
    """For each axis, the pairs of cells that differ in it alone, per scenario variant and output.

    Ordered axes (versions, counts, instruction sets) pair each cell with the next value present
    among the cells that share every other axis, so `2.15.1→2.16.2` and `2.16.2→2.21.0` are
    separate transitions on a factorial and on a sparse (one-at-a-time) matrix alike.
    """
    by_scenario: dict[str, list[Variant]] = defaultdict(list)
    for v in all_variants:
        by_scenario[v.name].append(v)
    found: dict[tuple[str, str, str, str, str], Attribution] = {}
    for scenario, group in sorted(by_scenario.items()):
        outputs = sorted({o for v in group for o in v.compared_outputs}, key=output_order)
        for axis in _axes(group):
            rest: dict[str, list[Variant]] = defaultdict(list)
            for v in group:
                others = {k: val for k, val in v.cell.items() if k not in ("id", axis)}
                rest[json.dumps(others, sort_keys=True, default=str)].append(v)
            for members in rest.values():
                members.sort(key=lambda v: _axis_value_key(axis, v.cell.get(axis)))
                for left, right in pairwise(members):
                    for output in outputs:
                        _count_pair(found, axis, scenario, output, left, right, arrays)
    return sorted(found.values(), key=lambda a: (a.axis, _axis_value_key(a.axis, a.from_value), a.scenario,
                                                 output_order(a.output)))  # fmt: skip


def _count_pair(found: dict, axis: str, scenario: str, output: str, left: Variant, right: Variant,
                arrays: Arrays) -> None:  # fmt: skip
    a, b = left.cell.get(axis), right.cell.get(axis)
    key = (axis, json.dumps(a), json.dumps(b), scenario, output)
    expected_stable = left.expectation.get("run_to_run") == "identical"
    entry = found.setdefault(key, Attribution(axis, a, b, scenario, output, expected_stable=expected_stable))
    da, db = left.digests.get(output), right.digests.get(output)
    if not left.ok_repeats or not right.ok_repeats or da is None or db is None:
        entry.unstable += 1
        return
    entry.pairs += 1
    if da != db:
        entry.differ += 1
        entry.distance = entry.distance.worse(arrays.distance(left.representative, right.representative, output))


# -- headline -------------------------------------------------------------------------


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def headline(all_variants: list[Variant], found: list[Finding], attributed: list[Attribution],
             hosts: list[dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """A few plain sentences, generated from the findings and the attribution."""
    lines = []
    measured = [v for v in all_variants if v.ok_repeats]
    cells = len({v.cell_id for v in measured})
    broken = [f for f in found if f.severity == "finding"]
    seeded = [v for v in measured if v.seeded and v.run_to_run != "untested"]
    # A seeded variant whose run to run could not be judged (one repeat, or one process identity)
    # must not be counted as reproducible.
    untested = [v for v in measured if v.expectation.get("run_to_run") == "identical" and v.run_to_run == "untested"]
    if broken:
        where = sorted({f.cell_id for f in broken})
        what = sorted({f.scenario for f in broken})
        lines.append(
            f"{len(broken)} expectation{'s' if len(broken) != 1 else ''} broke in {len(where)} of {cells} cells "
            f"({_join(what)}): see Findings."
        )
    elif seeded and untested:
        lines.append(
            f"Every expectation tested held, but run to run was not tested for {len(untested)} seeded "
            f"variant{'s' if len(untested) != 1 else ''} ({untested[0].run_to_run_note}): see the run-to-run table."
        )
    elif seeded:
        lines.append(
            f"Every expectation held: seeded runs were reproducible run to run in every cell ({_cells(measured)}), "
            "and unseeded runs varied as expected."
        )
    elif measured and untested:
        lines.append(
            f"Run to run was not tested in the {cells} cells measured ({untested[0].run_to_run_note}); "
            "only the in-process checks were judged."
        )
    elif measured:
        lines.append(f"Every expectation held in the {cells} cells measured.")
    else:
        lines.append("Nothing was measured: every cell was skipped or failed (see the run-to-run table).")

    stable = [entry for entry in attributed if entry.expected_stable]
    binary = {axis: _is_binary(attributed, axis) for axis in {a.axis for a in attributed}}
    by_transition: dict[tuple[str, str], list[Attribution]] = defaultdict(list)
    for entry in stable:
        by_transition[(entry.axis, entry.transition)].append(entry)
    effects: dict[tuple[str, str], list[Attribution]] = defaultdict(list)
    none: dict[str, list[Attribution]] = defaultdict(list)
    for entry in stable:
        if entry.differ:
            effects[(entry.axis, entry.transition)].append(entry)
        elif entry.pairs:
            none[entry.axis].append(entry)
    clauses = []
    for (axis, transition), _ in sorted(effects.items(), key=lambda kv: -sum(e.differ for e in kv[1])):
        label = AXIS_LABELS.get(axis, axis)
        if not binary[axis]:
            label += f" {transition}"
        compared = by_transition[(axis, transition)]
        differ, pairs = sum(e.differ for e in compared), sum(e.pairs for e in compared)
        clauses.append(f"{label}: {differ}/{pairs} pairs differ — {_per_output(compared)}")
    if clauses:
        lines.append("What changes the bits, most pairs first:")
        lines += [f"- {clause}" for clause in clauses]
    elif attributed:
        lines.append("No single axis changed the bits of any stable result.")
    quiet = []
    for axis, entries in sorted(none.items()):
        label = AXIS_LABELS.get(axis, axis)
        if not any(key[0] == axis for key in effects):
            quiet.append(label)
        elif not binary[axis]:
            # An ordered axis that changes the bits somewhere: its transitions that changed nothing are news too.
            quiet += sorted({f"{label} {e.transition}" for e in entries if (axis, e.transition) not in effects})
    if quiet:
        lines.append(f"No effect on any stable result: {_join(quiet)}.")
    unstable_only = sorted(
        AXIS_LABELS.get(a.axis, a.axis)
        for a in attributed
        if a.unstable and a.expected_stable and not any(b.pairs for b in attributed if b.axis == a.axis)
    )
    if unstable_only:
        lines.append(f"Not comparable (no stable pair of cells): {_join(sorted(set(unstable_only)))}.")
    failed = sorted({v.cell_id for v in all_variants if v.status == "error"})
    skipped = sorted({v.cell_id for v in all_variants if v.status == "skipped"} - set(failed))
    if failed or skipped:
        parts = []
        if failed:
            parts.append(f"{len(failed)} cell{'s' if len(failed) != 1 else ''} had errors")
        if skipped:
            parts.append(f"{len(skipped)} cell{'s' if len(skipped) != 1 else ''} skipped some or all scenario variants")
        lines.append(_join(parts) + "; the run-to-run table says why.")
    if hosts_line(hosts or []):
        lines.append(hosts_line(hosts or []))
    return lines


def _cells(measured: list[Variant]) -> str:
    """'14 cells', or '14 cells, and 14 of the published report' when a report.json is an input."""
    here = len({v.cell_id for v in measured if not v.published})
    published = len({v.cell_id for v in measured if v.published})
    text = f"{here} cell{'s' if here != 1 else ''}"
    return text + (f", and {published} of the published report" if published else "")


def _per_output(compared: list[Attribution]) -> str:
    """Per scenario, the outputs a transition changes and those it never changes:
    'seeded_init-seeded: predictions 7/7 (|Δ| ≤ 2.4e-07, 8 ULP), never its weights (0/7)'."""
    parts = []
    for scenario in sorted({e.scenario for e in compared}):
        entries = sorted(
            (e for e in compared if e.scenario == scenario and e.pairs), key=lambda e: output_order(e.output)
        )
        changed = [e for e in entries if e.differ]
        if not changed:
            continue
        worst = Distance()
        for e in changed:
            worst = worst.worse(e.distance)
        said = _join([f"{e.output.removeprefix('model1.')} {e.differ}/{e.pairs}" for e in changed])
        text = f"{scenario}: {said} ({worst.brief()})"
        never = [e for e in entries if not e.differ]
        if never:
            text += f", never its {_join([e.output.removeprefix('model1.') for e in never])} (0/{never[0].pairs})"
        parts.append(text)
    return "; ".join(parts)


def _is_binary(attributed: list[Attribution], axis: str) -> bool:
    values = {json.dumps(v) for a in attributed if a.axis == axis for v in (a.from_value, a.to_value)}
    return len(values) <= 2 and axis not in ("tf", "host")


# -- pairwise and drift ---------------------------------------------------------------


# A pairwise table of more cells than this is unreadable and grows with the square of the cells:
# past it the class tables (which say the same, per output) stand alone.
PAIRWISE_LIMIT = 40


def agreement(group: list[Variant]) -> tuple[list[str], list[list[float | None]]]:
    """Share of compared outputs two cells agree on bit for bit (None: one has no stable result).

    Cells that measured nothing (skipped, failed) are left out; past PAIRWISE_LIMIT cells, nothing.
    """
    group = [v for v in group if v.ok_repeats]
    if len(group) > PAIRWISE_LIMIT:
        return [], []
    cells = [v.cell_id for v in group]
    compared = {v.cell_id: set(v.compared_outputs) for v in group}
    matrix: list[list[float | None]] = []
    for left in group:
        row: list[float | None] = []
        for right in group:
            names = sorted(compared[left.cell_id] & compared[right.cell_id])
            if not names or any(left.digests[n] is None or right.digests[n] is None for n in names):
                row.append(None)
            else:
                row.append(sum(left.digests[n] == right.digests[n] for n in names) / len(names))
        matrix.append(row)
    return cells, matrix


def published_label(published: Published, labels: dict[str, str], measured_hosts: set[str]) -> str:
    """The host label a published report's variants stand under; `…-published` when its host is also
    one measured here, so "does this machine still reproduce its own published table" is a host pair."""
    host_id = str((published.hosts[0] if len(published.hosts) == 1 else {}).get("id") or "")
    label = labels.get(host_id, UNKNOWN_HOST)
    return f"{label}-published" if host_id in measured_hosts else label


def published_variants(published: Published, label: str, several: bool) -> list[Variant]:
    """The variants of a published report.json, as the report judged them: digests, verdicts and
    expectations, no records (so no arrays: distances against them are unavailable)."""
    found = []
    for raw in published.variants:
        cell = dict(raw.get("cell") or {"id": raw["cell_id"]})
        cell_id = str(raw["cell_id"])
        if several and "host" not in cell:
            cell = {**cell, "host": label}
            cell_id = cell["id"] = f"{cell_id}@{label}"
        found.append(Variant(
            cell_id, cell, str(raw["scenario"]), str(raw["variant"]), raw.get("seed"), [],
            dict(raw.get("expected") or {}), dict(raw.get("declared") or {}),
            status=str(raw.get("status") or "ok"), message=str(raw.get("message") or ""),
            ok_repeats=int(raw.get("ok_repeats") or 0), run_to_run=str(raw.get("run_to_run") or "untested"),
            run_to_run_note=str(raw.get("run_to_run_note") or ""), identities=int(raw.get("identities") or 0),
            identity_text=str(raw.get("identity_text") or ""), in_process=str(raw.get("in_process") or "untested"),
            ran_on=str(raw.get("ran_on") or ""), isolation=str(raw.get("isolation") or ""),
            digests=dict(raw.get("digests") or {}), claim=str(raw.get("claim") or "untested"),
            claim_reasons=list(raw.get("claim_reasons") or []), published=str(published.path),
        ))  # fmt: skip
    return found


def against_published(all_variants: list[Variant]) -> list[str]:
    """Per published input: of the digests it shares with what was measured here, how many are equal."""
    lines = []
    measured = {(v.cell_id.split("@")[0], v.name): v for v in all_variants if not v.published and v.ok_repeats}
    for source in sorted({v.published for v in all_variants if v.published}):
        equal = differ = 0
        for v in all_variants:
            mine = measured.get((v.cell_id.split("@")[0], v.name))
            if v.published != source or mine is None:
                continue
            for output, digest in v.digests.items():
                if is_compared(output) and digest and mine.digests.get(output):
                    equal += mine.digests[output] == digest
                    differ += mine.digests[output] != digest
        lines.append(
            f"Against the published report {source}: {equal} of {equal + differ} shared digests equal, {differ} differ "
            "(cell × scenario variant × compared output present on both sides)."
        )
    return lines


def hosts_line(hosts: list[dict[str, Any]]) -> str:
    """The headline's word on where it was measured (a published report's host is marked as such)."""
    from repromatrix.scenarios.hosts import describe

    if not hosts or (len(hosts) == 1 and not hosts[0].get("id")):
        return ""  # records made before hosts were recorded say nothing about theirs

    def named(host: dict[str, Any]) -> str:
        return describe(host) + (" — from the published report" if host.get("published") else "")

    if len(hosts) == 1:
        return f"Measured on one host: {named(hosts[0])}."
    return (
        f"Measured on {len(hosts)} hosts: {'; '.join(named(h) for h in hosts)}. Host is an axis: run to run is "
        "judged within each host, and pairs of cells that differ in host alone are attributed to it."
    )


def summary_for_drift(all_variants: Iterable[Variant]) -> dict[str, dict[str, Any]]:
    return {
        f"{v.cell_id}/{v.name}": {
            "status": v.status,
            "run_to_run": v.run_to_run,
            "digests": {name: digest for name, digest in v.digests.items() if is_compared(name)},
        }
        for v in all_variants
    }


def baseline_hosts(path: Path) -> list[dict[str, Any]]:
    """The hosts a baseline (report.json or results folder) was measured on; [] when it does not say."""
    if path.is_file():
        try:
            return list(json.loads(path.read_text()).get("hosts") or [])
        except (OSError, ValueError, AttributeError):
            return []
    from repromatrix.reporting.load import load

    return hosts_of(load([path]).records)


def load_baseline(path: Path) -> dict[str, dict[str, Any]]:
    """A report.json (its "drift_summary") or a results folder."""
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("report_schema") not in READABLE_SCHEMAS:
                raise ValueError(f"report_schema {data.get('report_schema')!r}, expected one of {READABLE_SCHEMAS}")
            return dict(data["drift_summary"])
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"baseline {path}: not a repromatrix report.json ({exc})") from None
    from repromatrix.reporting.load import load

    loading = load([path])
    if not loading.records:
        raise ValueError(f"baseline {path}: no records found")
    return summary_for_drift(variants(loading.records))


def drift(current: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Which cell × scenario variants changed verdict or bits since the baseline."""
    changes = []
    for key in sorted(set(current) | set(baseline)):
        now, before = current.get(key), baseline.get(key)
        if before is None:
            changes.append({"variant": key, "change": "new", "before": "", "after": now["run_to_run"]})
        elif now is None:
            changes.append({"variant": key, "change": "gone", "before": before["run_to_run"], "after": ""})
        else:
            if now["status"] != before["status"]:
                changes.append({"variant": key, "change": "status", "before": before["status"], "after": now["status"]})
            if now["run_to_run"] != before["run_to_run"]:
                changes.append(
                    {"variant": key, "change": "verdict", "before": before["run_to_run"], "after": now["run_to_run"]}
                )
            for output in sorted(set(now["digests"]) & set(before["digests"])):
                a, b = before["digests"][output], now["digests"][output]
                if a and b and a != b:
                    changes.append({"variant": key, "change": f"bits of {output}", "before": a[:12], "after": b[:12]})
    return changes
