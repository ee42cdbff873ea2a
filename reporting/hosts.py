"""Hosts against each other: every pair, per scenario variant and output; what a plain run gets on each;
which hosts compute alike on the fixed kernel probe (harness/hostprobe.py).

Pure logic over the report's variants and host entries (analysis.hosts_of, published reports'),
so it is tested on hand-made records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from repromatrix.harness import axes
from repromatrix.harness.hostprobe import KERNELS
from repromatrix.reporting.analysis import Variant, is_compared, output_order

SHOWN_SETTINGS = 3  # settings named per agreement before "and N more"
# The knobs a plain `python train.py` leaves at TF's defaults (oneDNN is what TF picks on the host).
PLAIN_KNOBS = {"op_determinism": False, "intra_op_threads": 0, "inter_op_threads": 0, "cpus": 0,
               "cpu_isa": axes.NO_ISA_CAP}  # fmt: skip


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def setting(v: Variant) -> str:
    """A cell's settings without its host: the cell id before `@host`."""
    return v.cell_id.split("@")[0]


def host_of(v: Variant) -> str:
    return str(v.cell.get("host") or "")


# -- every pair of hosts, per scenario variant and output ---------------------------------------------


@dataclass
class Agreement:
    """One scenario variant × output across hosts: per setting (cell without host), the hosts that gave one
    digest, grouped (one group: they all agree)."""

    scenario: str
    output: str
    hosts: list[str]
    by_setting: dict[str, list[list[str]]] = field(default_factory=dict)

    def pairs(self) -> list[dict[str, Any]]:
        """Every unordered pair of hosts: at which settings they agree, at which they differ."""
        found = []
        for a, b in combinations(self.hosts, 2):
            agree: list[str] = []
            differ: list[str] = []
            for name, groups in self.by_setting.items():
                where = {h: i for i, g in enumerate(groups) for h in g}
                if a in where and b in where:
                    (agree if where[a] == where[b] else differ).append(name)
            found.append({"hosts": [a, b], "agree": agree, "differ": differ})
        return found

    def line(self) -> str:
        by_text: dict[str, list[str]] = defaultdict(list)
        for name, groups in self.by_setting.items():
            by_text[_partition(groups, self.hosts)].append(name)
        everywhere = len(by_text) == 1 and _partition([self.hosts], self.hosts) in by_text
        parts = []
        for text, names in sorted(by_text.items(), key=lambda kv: ("≠" not in kv[0], kv[0])):
            shown = ", ".join(names[:SHOWN_SETTINGS]) + (
                f" and {len(names) - SHOWN_SETTINGS} more" if len(names) > SHOWN_SETTINGS else ""
            )
            if everywhere:
                both = "both" if len(self.hosts) == 2 else f"all {len(self.hosts)}"
                cells = f"{len(names)} cell{'s' if len(names) != 1 else ''}"
                parts.append(f"{text} at every setting measured on {both} ({cells}: {shown})")
            else:
                parts.append(f"{text} at {shown}")
        return f"- {self.scenario} {self.output.removeprefix('model1.')}: {'; '.join(parts)}"


def _partition(groups: list[list[str]], every: list[str]) -> str:
    if len(groups) == 1 and len(groups[0]) == len(every) > 2:
        return f"all {len(every)} agree"
    ordered = sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g))
    return " ≠ ".join(" = ".join(g) for g in ordered)


def agreements(variants: list[Variant]) -> list[Agreement]:
    """Per scenario variant meant to be reproducible and per compared output, the hosts' agreement at every
    setting measured on two or more of them (a host without one stable digest there is left out of it)."""
    every = sorted({host_of(v) for v in variants if host_of(v)})
    if len(every) < 2:
        return []
    by_scenario: dict[str, list[Variant]] = defaultdict(list)
    for v in variants:
        if host_of(v) and v.ok_repeats and v.expectation.get("run_to_run") == "identical":
            by_scenario[v.name].append(v)
    found = []
    for scenario, group in sorted(by_scenario.items()):
        outputs = sorted({o for v in group for o in v.digests if is_compared(o)}, key=output_order)
        for output in outputs:
            digests: dict[str, dict[str, str]] = defaultdict(dict)  # setting → host → digest
            for v in group:
                digest = v.digests.get(output)
                if digest:
                    digests[setting(v)][host_of(v)] = digest
            entry = Agreement(scenario, output, every)
            for name, by_host in sorted(digests.items()):
                if len(by_host) < 2:
                    continue
                classes: dict[str, list[str]] = defaultdict(list)
                for host, digest in sorted(by_host.items()):
                    classes[digest].append(host)
                entry.by_setting[name] = list(classes.values())
            if entry.by_setting:
                found.append(entry)
    return found


def agreement_lines(found: list[Agreement]) -> list[str]:
    if not found:
        return []
    return [
        "Host against host (= the very same bits, ≠ different bits), per reproducible scenario variant and output, "
        "at each setting (the cell without its host) measured on two or more hosts:",
        *(a.line() for a in found),
    ]


# -- what a plain run gets --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainRun:
    """On one host under one TF version: what TF picks by itself, and the cell of the matrix that runs it."""

    host: str
    tf: str
    onednn: bool | None
    onednn_isa: str | None
    thread_pools: dict[str, int]
    usable_cores: int | None
    cell: str | None  # the measured cell a plain run corresponds to; None: no cell of the matrix does
    nearest: str | None = None  # when none does: the cell that differs from it in oneDNN alone

    def line(self) -> str:
        onednn = "unknown" if self.onednn is None else "on" if self.onednn else "off"
        isa = f" (dispatching to {self.onednn_isa})" if self.onednn and self.onednn_isa else ""
        pools = ", ".join(f"{name} {count}" for name, count in self.thread_pools.items())
        threads = (
            f"thread pools at TF's defaults ({pools} threads on {self.usable_cores} cores)"
            if pools
            else ("thread pools at TF's defaults")
        )
        said = f"- {self.host}, TF {self.tf}: oneDNN {onednn}{isa} with TF_ENABLE_ONEDNN_OPTS unset, {threads}; "
        if self.cell:
            return said + f"a plain run computes what cell {self.cell} computes."
        if self.nearest:
            wanted = self.nearest.replace(f"onednn{int(not self.onednn)}", f"onednn{int(bool(self.onednn))}")
            return said + (
                f"no cell measured here runs these settings (the nearest, {self.nearest}, sets oneDNN "
                f"{'off' if self.onednn else 'on'}): measure --cell {wanted} to know what a plain run computes."
            )
        return said + "no cell measured here runs these settings."

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "tf": self.tf, "onednn": self.onednn, "onednn_isa": self.onednn_isa,
                "thread_pools": self.thread_pools, "usable_cores": self.usable_cores, "cell": self.cell,
                "nearest": self.nearest}  # fmt: skip


def _runs_plainly(cell: dict[str, Any], tf: str, onednn: bool | None) -> bool:
    return (
        str(cell.get("tf")) == tf
        and cell.get("device", "cpu") == "cpu"
        and cell.get("onednn") == onednn
        and all(cell.get(name, value) == value for name, value in PLAIN_KNOBS.items())
    )


def plain_runs(variants: list[Variant], hosts: list[dict[str, Any]]) -> list[PlainRun]:
    """Per host and TF version probed: the cell a plain `python train.py` there corresponds to."""
    several = any(host_of(v) for v in variants)
    found = []
    for host in hosts:
        label = str(host.get("label") or "")
        mine = [v for v in variants if v.ok_repeats and (host_of(v) == label or not several)]
        for tf, computes in sorted((host.get("computes") or {}).items()):
            plain = computes.get("plain_run") or {}
            if not plain:
                continue
            onednn = plain.get("onednn")
            cells = sorted({setting(v) for v in mine if _runs_plainly(v.cell, tf, onednn)})
            near = sorted({setting(v) for v in mine if onednn is not None and _runs_plainly(v.cell, tf, not onednn)})
            found.append(PlainRun(label, tf, onednn, plain.get("onednn_isa"), dict(plain.get("thread_pools") or {}),
                                  plain.get("usable_cores"), cells[0] if cells else None,
                                  None if cells else (near[0] if near else None)))  # fmt: skip
    return found


def plain_run_lines(found: list[PlainRun]) -> list[str]:
    if not found:
        return []
    return ["What a plain `python train.py` gets (TF's own choices on the host, no variable set):"] + [
        p.line() for p in found
    ]


def unprobed_lines(found: list[PlainRun], hosts: list[dict[str, Any]]) -> list[str]:
    unprobed = sorted(str(h.get("label")) for h in hosts if not h.get("computes") and h.get("id"))
    if not unprobed or not (found or len(hosts) > 1):
        return []
    return [
        f"Not probed (its records, or the published report, predate the probe of what a host computes and what "
        f"a plain run gets): {_join(unprobed)}; a run there with --force probes it."
    ]


# -- what each host computes ------------------------------------------------------------------------


def _parts(computes: dict[str, Any]) -> dict[str, str]:
    """`matmul (oneDNN on)` → digest, over the probe's kernels under oneDNN on and off."""
    found = {}
    for mode, kernels in sorted((computes.get("probe") or {}).items()):
        state = "on" if mode.endswith("1") else "off"
        for kernel in KERNELS:
            if kernel in kernels:
                found[f"{kernel} (oneDNN {state})"] = str(kernels[kernel])
    return found


def _condensed(parts: list[str]) -> list[str]:
    """`matmul (oneDNN on)` and `matmul (oneDNN off)` together read `matmul`."""
    kernels = defaultdict(list)
    for part in parts:
        kernels[part.split(" (", 1)[0]].append(part)
    said = []
    for kernel in KERNELS:
        if kernel in kernels:
            said += [kernel] if len(kernels[kernel]) == 2 else kernels[kernel]
    return said


@dataclass
class ComputeGroups:
    """Under one TF version: hosts grouped by the probe's digests, and per pair of groups the parts that part them."""

    tf: str
    groups: list[list[str]]
    differences: list[dict[str, Any]]  # {"hosts": [a, b], "alike": [...], "differ": [...]}

    def lines(self) -> list[str]:
        said = []
        for group in self.groups:
            if len(group) > 1:
                said.append(f"- TF {self.tf}: {_join(group)} compute alike on every probe part.")
        for d in self.differences:
            a, b = d["hosts"]
            differ = _join(_condensed(d["differ"])) if d["differ"] else "no part they share"
            if d["alike"]:
                alike = _join(_condensed(d["alike"]))
                said.append(f"- TF {self.tf}: {a} computes like {b} on {alike}, not on {differ}.")
            else:
                said.append(f"- TF {self.tf}: {a} and {b} differ on every probe part ({differ}).")
        return said

    def to_json(self) -> dict[str, Any]:
        return {"tf": self.tf, "groups": self.groups, "differences": self.differences}


def compute_groups(hosts: list[dict[str, Any]]) -> list[ComputeGroups]:
    """Per TF version probed on two or more hosts: who computes alike, and what parts the others. Only
    answers of one probe version are compared (another version ran other kernels or inputs)."""
    by_tf: dict[tuple[str, int], dict[str, dict[str, str]]] = defaultdict(dict)  # (tf, version) → host → parts
    for host in hosts:
        for tf, computes in (host.get("computes") or {}).items():
            parts = _parts(computes)
            if parts:
                version = int((computes.get("key") or {}).get("probe_version") or 0)
                by_tf[(tf, version)][str(host.get("label"))] = parts
    versions = defaultdict(set)
    for tf, version in by_tf:
        versions[tf].add(version)
    found = []
    for (tf, version), by_host in sorted(by_tf.items()):
        if len(by_host) < 2:
            continue
        signature: dict[str, list[str]] = defaultdict(list)
        for label, parts in sorted(by_host.items()):
            signature[repr(sorted(parts.items()))].append(label)
        groups = list(signature.values())
        differences = []
        for left, right in combinations(groups, 2):
            a, b = by_host[left[0]], by_host[right[0]]
            shared = [p for p in a if p in b]
            differences.append({
                "hosts": [left[0], right[0]],
                "alike": [p for p in shared if a[p] == b[p]],
                "differ": [p for p in shared if a[p] != b[p]],
            })  # fmt: skip
        name = f"{tf} (probe v{version})" if len(versions[tf]) > 1 else tf
        found.append(ComputeGroups(name, groups, differences))
    return found


def compute_lines(found: list[ComputeGroups]) -> list[str]:
    if not found:
        return []
    lines = [
        f"What the hosts compute (a fixed probe: {_join(list(KERNELS))} on fixed inputs, oneDNN on and off; "
        "hosts alike here are likely, not certain, to agree on a model):"
    ]
    for entry in found:
        lines += entry.lines()
    return lines


# -- all of it -------------------------------------------------------------------------------------


@dataclass
class HostComparison:
    agreements: list[Agreement]
    plain: list[PlainRun]
    computes: list[ComputeGroups]
    notes: list[str]

    def headline(self) -> list[str]:
        return agreement_lines(self.agreements)

    def lines(self, hosts: list[dict[str, Any]]) -> list[str]:
        """The report's Hosts section: what the merge did, what a plain run gets, who computes alike."""
        blocks = [
            [f"- {n}" for n in self.notes],
            plain_run_lines(self.plain),
            unprobed_lines(self.plain, hosts),
            compute_lines(self.computes),
        ]
        lines: list[str] = []
        for block in (b for b in blocks if b):
            # A blank line between blocks: in Markdown a sentence right after a list joins its last item.
            lines += ([""] if lines else []) + block
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "agreement": [
                {"scenario": a.scenario, "output": a.output, "by_setting": a.by_setting, "pairs": a.pairs()}
                for a in self.agreements
            ],
            "plain_runs": [p.to_json() for p in self.plain],
            "computes_alike": [c.to_json() for c in self.computes],
            "notes": self.notes,
        }


def compare(variants: list[Variant], hosts: list[dict[str, Any]], notes: list[str]) -> HostComparison:
    return HostComparison(agreements(variants), plain_runs(variants, hosts), compute_groups(hosts), notes)
