"""Drift: what changed since a baseline (an earlier results folder or a published report.json)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repromatrix.reporting.analysis import Variant, hosts_of, is_compared, variants

READABLE_SCHEMAS = (1, 2)  # baselines: the drift summary kept its form


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
        if before is None and now is not None:
            changes.append({"variant": key, "change": "new", "before": "", "after": now["run_to_run"]})
        elif now is None and before is not None:
            changes.append({"variant": key, "change": "gone", "before": before["run_to_run"], "after": ""})
        elif now is not None and before is not None:
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
