"""Comparison semantics: verdicts, classes, attribution, first divergence (the numbers; `distances` measures
arrays, `headline` puts it in words, `drift` compares with a baseline).

Pure logic over loaded records (and their npz files, for distances only), so
it is tested on hand-made records.
"""

from __future__ import annotations

import json
import re
import string
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import combinations, pairwise
from typing import TYPE_CHECKING, Any

from repromatrix.harness import axes, records
from repromatrix.harness.records import Status
from repromatrix.reporting import commands, hostid
from repromatrix.reporting.distances import TOLERANCE_ULP, Arrays, Distance
from repromatrix.reporting.load import Loaded, Published

if TYPE_CHECKING:
    from repromatrix.reporting.matter import Matter


class RunToRun(StrEnum):
    """Within a cell: did every measured repeat give the very same bits?"""

    IDENTICAL = "identical"
    VARIES = "varies"
    UNTESTED = "untested"  # fewer than two process identities


class InProcess(StrEnum):
    """The article's own check: were model1 and model2 identical within one process?"""

    IDENTICAL = "identical"
    DIFFERS = "differs"
    MIXED = "mixed"  # identical in some processes, not in others
    UNTESTED = "untested"
    NOT_FOR_COMMAND = "does not exist for a command"  # a command has no model1 and model2 (reporting/commands.py)


class Claim(StrEnum):
    """A variant against its expectation."""

    HELD = "held"
    BROKEN = "broken"
    UNTESTED = "untested"


class Severity(StrEnum):
    FINDING = "finding"  # an expectation broke
    WARNING = "warning"
    ERROR = "error"


REPORT_SCHEMA = 2
VARIES = "~"
NO_RESULT = "—"
# Arrays compared across environments: model1's, except those first divergence reads.
PER_LAYER = re.compile(r"^model1\.layer\.(\d+)\.(.+)$")
PER_EPOCH = re.compile(r"^model1\.epoch\.(\d+)\.weights$")
UNKNOWN_HOST = hostid.UNKNOWN_HOST


def is_compared(output: str) -> bool:
    if commands.is_output(output):  # an array of a file a command saved
        return True
    return output.startswith("model1.") and not PER_LAYER.match(output) and not output.startswith("model1.epoch.")


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
    status: Status = Status.OK
    message: str = ""
    ok_repeats: int = 0
    run_to_run: RunToRun = RunToRun.UNTESTED
    run_to_run_note: str = ""  # why run to run is untested
    identities: int = 0  # independent process identities among the measured repeats
    identity_text: str = ""  # "3 processes", "3 forks of 3 parents"
    in_process: InProcess = InProcess.UNTESTED
    ran_on: str = ""  # cpu, gpu, mixed; empty when nothing ran
    isolation: str = ""  # process, fork, mixed
    environments: int = 0  # distinct reuse keys among the measured repeats
    digests: dict[str, str | None] = field(default_factory=dict)  # per output, None when repeats disagree
    spreads: list[Spread] = field(default_factory=list)  # outputs that varied run to run
    claim: Claim = Claim.UNTESTED
    claim_reasons: list[str] = field(default_factory=list)
    published: str = ""  # the report.json it was read from (digests and verdicts only), or ""
    divergence: str = ""  # a command's: where its first two differing repeats part (reporting/commands.py)

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
    variant.status = Status.ERROR if Status.ERROR in statuses else (Status.OK if ok else Status.SKIPPED)
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
    # A file without arrays (a log, say) is "also differs", never what makes a command vary.
    decisive = [d for name, d in variant.digests.items() if not commands.is_bytes(name)]
    if len(ok) >= 2 and not all(d is not None for d in decisive):
        variant.run_to_run = RunToRun.VARIES  # a difference needs no second identity to be real
    elif variant.identities >= 2:
        variant.run_to_run = RunToRun.IDENTICAL
    elif len(ok) >= 2:
        variant.run_to_run_note = (
            f"its {len(ok)} repeats came from one process identity ({variant.identity_text}): nothing decided at "
            "start-up (hash seed, memory layout, import-time state) was varied; rerun with --force"
        )
    else:
        variant.run_to_run_note = "one measured repeat: run to run needs two or more (--repeats 2 or more)"
    checks = {r.record.in_process_identical for r in ok}
    if len(checks) > 1:
        variant.in_process = InProcess.MIXED
    else:
        only = checks.pop()
        variant.in_process = InProcess.UNTESTED if only is None else InProcess.IDENTICAL if only else InProcess.DIFFERS
    if all(commands.is_command(r.record) for r in ok):
        variant.in_process = InProcess.NOT_FOR_COMMAND
        variant.divergence = commands.run_to_run_divergence([r.record for r in ok])
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
    if want_r2r == "identical" and variant.run_to_run == RunToRun.VARIES:
        spreads = [f"{s.output} {s.distinct} distinct among {s.processes} processes ({s.distance.brief()})"
                   for s in variant.spreads]  # fmt: skip
        command = variant.in_process == InProcess.NOT_FOR_COMMAND
        varied = (commands.varied(spreads) if command else "; ".join(spreads)) or "per-layer or per-epoch arrays"
        varied += f"; {variant.divergence}" if variant.divergence else ""
        reasons.append(f"expected identical run to run ({_source(variant, 'run_to_run')}), but varied: {varied}")
    if want_r2r == "differs" and variant.run_to_run == RunToRun.IDENTICAL:
        reasons.append(
            f"expected to differ run to run ({_source(variant, 'run_to_run')}), but all {variant.ok_repeats} "
            "processes gave the very same bits (something seeds it)"
        )
    if want_ip == "identical" and variant.in_process in (InProcess.DIFFERS, InProcess.MIXED):
        reasons.append(
            f"expected model1 and model2 identical in-process ({_source(variant, 'in_process')}), "
            f"but they {'differ' if variant.in_process == InProcess.DIFFERS else 'differ in some processes'}"
        )
    if want_ip == "differs" and variant.in_process in (InProcess.IDENTICAL, InProcess.MIXED):
        reasons.append(
            f"expected model1 and model2 to differ in-process ({_source(variant, 'in_process')}), "
            f"but they came out identical{' in some processes' if variant.in_process == InProcess.MIXED else ''}"
        )
    variant.claim_reasons = reasons
    tested = (variant.in_process not in (InProcess.UNTESTED, InProcess.NOT_FOR_COMMAND)
              or variant.run_to_run != RunToRun.UNTESTED)  # fmt: skip
    variant.claim = Claim.BROKEN if reasons else (Claim.HELD if tested else Claim.UNTESTED)


def host_labels(loaded: list[Loaded], more: Iterable[dict[str, Any]] = ()) -> dict[hostid.HostKey, str]:
    """Host key → the label the report shows (reporting/hostid.py: a label is a host; one label given to
    machines with different fingerprints gets their ids)."""
    keys = [hostid.key_of(item.record.host) for item in loaded] + [hostid.key_of_json(h) for h in more]
    return hostid.unique_labels(keys)


def hosts_of(loaded: list[Loaded]) -> list[dict[str, Any]]:
    """Every host among the records, with its label, how many records it made, from which folders, and
    what it computes under each TF version its records ran (`computes`, keyed by TF version)."""
    labels = host_labels(loaded)
    found: dict[hostid.HostKey, dict[str, Any]] = {}
    for item in loaded:
        key = hostid.key_of(item.record.host)
        raw = item.record.host.to_json()
        computes = raw.pop("computes", None)
        entry = found.setdefault(key, {**raw, "label": labels[key], "records": 0, "folders": [], "computes": {}})
        entry["records"] += 1
        if item.folder not in entry["folders"]:
            entry["folders"].append(item.folder)
        if computes and not computes.get("error"):
            tf = str(computes.get("tf") or item.record.cell.get("tf") or "?")
            before = entry["computes"].get(tf)
            if before is None or _probe_version(computes) > _probe_version(before):  # the newest probe speaks
                entry["computes"][tf] = computes
    for entry in found.values():
        if not entry["computes"]:
            del entry["computes"]
    return sorted(found.values(), key=lambda h: h["label"])


def _probe_version(computes: dict[str, Any]) -> int:
    return int((computes.get("key") or {}).get("probe_version") or 0)


def variants(loaded: list[Loaded], arrays: Arrays | None = None, published: Iterable[Published] = ()) -> list[Variant]:
    """One Variant per host × cell × scenario variant. With several hosts, a cell id names its host
    (`tf2.21.0-cpu-onednn1-det0@laptop`) and host is an axis: run to run is judged within one host.
    Published reports add their variants as they judged them."""
    arrays = arrays or Arrays()
    published = list(published)
    labels = host_labels(loaded, [h for p in published for h in p.hosts])
    # A published report beside records is another side to compare, even from the same machine.
    several = len(labels) > 1 or bool(published and loaded)
    grouped: dict[tuple[str, hostid.HostKey, str, str], list[Loaded]] = defaultdict(list)
    for item in loaded:
        grouped[(item.cell_id, hostid.key_of(item.record.host), item.record.scenario, item.record.variant)].append(item)
    found = []
    for (cell_id, host_key, scenario, variant_name), group in sorted(grouped.items()):
        group.sort(key=lambda r: (r.record.repeat, str(r.path)))
        first = group[0]
        cell = {**axes.defaults(), **first.record.cell} if first.record.cell else {"id": cell_id}
        if several:
            cell = {**cell, "host": labels[host_key], "id": f"{cell_id}@{labels[host_key]}"}
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
    measured_hosts = {hostid.key_of(item.record.host) for item in loaded}
    for source in published:
        found += published_variants(source, published_label(source, labels, measured_hosts), several or bool(loaded))
    return found


# -- findings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    severity: Severity
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
            found.append(Finding(Severity.FINDING, v.cell_id, v.name, reason))
        if v.cell.get("device") == "cuda" and v.ran_on and v.ran_on != "gpu":
            found.append(
                Finding(Severity.WARNING, v.cell_id, v.name, f"requested CUDA but ran on {v.ran_on}: not a GPU result")
            )
        if v.environments > 1:
            text = (
                f"its repeats were measured in {v.environments} different environments or scenario versions; "
                "rerun the cell with --force to measure it in one"
            )
            found.append(Finding(Severity.WARNING, v.cell_id, v.name, text))
        if v.status == Status.ERROR:
            found.append(Finding(Severity.ERROR, v.cell_id, v.name, v.message))
    rank = {severity: i for i, severity in enumerate(Severity)}
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
    matter: Matter | None = None  # beside the seed-to-seed spread (reporting/matter.py)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, **self.distance.to_json(), "first_divergence": self.divergence,
                **({"matter": self.matter.to_json()} if self.matter else {})}  # fmt: skip


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
        outputs = commands.table_outputs(group, outputs)  # a command's files hold many arrays: the telling ones
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
    if commands.is_command(left) and commands.is_command(right):
        return commands.first_divergence(left, right)
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
    # The pairs whose bits differ, for reporting/matter.py; and its word on the worst of them.
    differing: list[tuple[Variant, Variant, Distance]] = field(default_factory=list, repr=False)
    matter: Matter | None = None

    @property
    def transition(self) -> str:
        return f"{axes.axis(self.axis).show(self.from_value)}→{axes.axis(self.axis).show(self.to_value)}"

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "from": self.from_value, "to": self.to_value, "scenario": self.scenario,
                "output": self.output, "pairs": self.pairs, "differ": self.differ, "unstable": self.unstable,
                "max_abs": self.distance.max_abs, "max_ulp": self.distance.max_ulp,
                "max_rel": self.distance.max_rel, "expected_stable": self.expected_stable,
                **({"matter": self.matter.to_json()} if self.matter else {})}  # fmt: skip


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
                members.sort(key=lambda v: axes.axis(axis).order(v.cell.get(axis)))
                # Hosts have no order: every pair of them (three hosts, three pairs); ordered axes pair neighbours.
                for left, right in combinations(members, 2) if axis == axes.HOST.name else pairwise(members):
                    for output in outputs:
                        _count_pair(found, axis, scenario, output, left, right, arrays)
    return sorted(found.values(), key=lambda a: (a.axis, axes.axis(a.axis).order(a.from_value), a.scenario,
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
        distance = arrays.distance(left.representative, right.representative, output)
        entry.distance = entry.distance.worse(distance)
        entry.differing.append((left, right, distance))


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


def published_label(published: Published, labels: dict[hostid.HostKey, str],
                    measured_hosts: set[hostid.HostKey]) -> str:  # fmt: skip
    """The host label a published report's variants stand under; `…-published` when its host (label and
    fingerprint) is also one measured here, so "does this machine still reproduce its own published table"
    is a host pair."""
    raw = published.hosts[0] if len(published.hosts) == 1 else {}
    key = hostid.key_of_json(raw)
    label = labels.get(key, UNKNOWN_HOST) if raw else UNKNOWN_HOST
    return f"{label}-published" if key in measured_hosts else label


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
            status=Status(raw.get("status") or Status.OK), message=str(raw.get("message") or ""),
            ok_repeats=int(raw.get("ok_repeats") or 0),
            run_to_run=RunToRun(raw.get("run_to_run") or RunToRun.UNTESTED),
            run_to_run_note=str(raw.get("run_to_run_note") or ""), identities=int(raw.get("identities") or 0),
            identity_text=str(raw.get("identity_text") or ""),
            in_process=InProcess(raw.get("in_process") or InProcess.UNTESTED),
            ran_on=str(raw.get("ran_on") or ""), isolation=str(raw.get("isolation") or ""),
            digests=dict(raw.get("digests") or {}), claim=Claim(raw.get("claim") or Claim.UNTESTED),
            claim_reasons=list(raw.get("claim_reasons") or []), published=str(published.path),
        ))  # fmt: skip
    return found
