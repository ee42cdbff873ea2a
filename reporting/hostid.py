"""A label is a host: who a record's host is, in the report.

Two machines with the same CPU model, cores and ISA flags have one fingerprint (`Host.id`), and
they are still two machines: two runners of one CI label, last week's runner and this week's, a
laptop and a CI box. So the report knows a host by its label (`--host`, $REPROMATRIX_HOST, or the
one derived from the CPU): two labels are two hosts, always. One label given to machines whose
fingerprints differ is the ambiguous case — two CPUs that may compute differently under one name —
and is never pooled: each gets its id beside the label, with a warning that says what to do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from repromatrix.harness.hosts import Host

UNKNOWN_HOST = "unknown-host"
# (label, fingerprint id): the label decides, the id only parts machines that share one label.
HostKey = tuple[str, str]


def key_of(host: Host) -> HostKey:
    return (host.label or host.id, host.id)


def key_of_json(raw: dict[str, Any]) -> HostKey:
    """The key of a host as a report.json lists it."""
    return (str(raw.get("label") or raw.get("id") or ""), str(raw.get("id") or ""))


def unique_labels(keys: Iterable[HostKey]) -> dict[HostKey, str]:
    """Each host key → the label the report shows: its own, or `label-<id>` when one label names machines
    with different fingerprints."""
    ids: dict[str, set[str]] = defaultdict(set)
    for label, host_id in keys:
        ids[label].add(host_id)
    shown = {}
    for label, found in ids.items():
        for host_id in found:
            name = label or UNKNOWN_HOST
            shown[(label, host_id)] = f"{name}-{host_id[:6]}" if len(found) > 1 and host_id else name
    return shown


def clash_warnings(hosts: Iterable[Host]) -> list[str]:
    """One warning per label that names machines whose fingerprints differ, saying what to do."""
    by_label: dict[str, dict[str, Host]] = defaultdict(dict)
    for host in hosts:
        by_label[host.label or host.id][host.id] = host
    shown = unique_labels((label, host_id) for label, found in by_label.items() for host_id in found)
    warnings = []
    for label, found in sorted(by_label.items()):
        if len(found) < 2:
            continue
        machines = "; ".join(
            f"{shown[(label, h.id)]}: {h.model or h.vendor or 'unknown CPU'}, {h.cores} cores, "
            f"{', '.join(h.isa[-3:]) or 'no ISA recorded'}"
            for h in sorted(found.values(), key=lambda h: h.id)
        )
        warnings.append(
            f"the host label {label or UNKNOWN_HOST} names {len(found)} machines whose CPU, cores or GPUs differ "
            f"({machines}): they are kept apart, never pooled; rerun each with its own --host NAME to name them"
        )
    return warnings
