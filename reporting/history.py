"""The published site's memory: every run's report.json kept beside it, and a timeline of verdicts.

The scheduled workflow publishes a whole new site each time, so the history travels with it:
`history.json` lists every published run (when, what it measured, its verdict, how many cells
changed since the run before) and names each one's report in `history/`. The workflow fetches the
previous site's `history.json` and those reports, and `--history` keeps them in the new site, so
a reader sees "the table changed on the day TF X.Y was added".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from repromatrix.harness import fileio
from repromatrix.reporting.model import Report

FILE = "history.json"
FOLDER = "history"


def read(path: Path | None) -> list[dict[str, Any]]:
    """The previous site's timeline; [] when there is none yet (the first run) or it is unreadable."""
    if path is None:
        return []
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [entry for entry in raw if isinstance(entry, dict)] if isinstance(raw, list) else []


def entry(report: Report) -> dict[str, Any]:
    measured = [v for v in report.variants if v.ok_repeats]
    changed = sorted({d["variant"].split("/")[0] for d in report.drift or [] if d["change"] != "new"})
    return {
        "generated_at": report.generated_at,
        "report": f"{FOLDER}/{report.generated_at.replace(':', '')}.json",
        "verdict": report.headline[0] if report.headline else "",
        "expectations_broken": report.expectations_broken,
        "cells": len({v.cell_id for v in measured}),
        "tf": sorted({str(v.cell.get("tf")) for v in measured if v.cell.get("tf")}),
        "hosts": [h.get("label") for h in report.hosts],
        "changed_cells": len(changed) if report.drift is not None else None,
        "new_cells": len({d["variant"].split("/")[0] for d in report.drift or [] if d["change"] == "new"}),
    }


def timeline(report: Report, previous: Path | None) -> list[dict[str, Any]]:
    """The previous site's timeline with this run added."""
    return [*read(previous), entry(report)]


def write(items: list[dict[str, Any]], out: Path, previous: Path | None) -> None:
    """out/history.json, this run's report.json under out/history/, and the earlier runs' reports
    carried over from beside the previous history.json (those it still finds)."""
    (out / FOLDER).mkdir(parents=True, exist_ok=True)
    for old in items[:-1]:
        source = previous.parent / str(old.get("report", "")) if previous is not None else None
        if source is not None and old.get("report") and source.is_file():
            shutil.copyfile(source, out / old["report"])
    shutil.copyfile(out / "report.json", out / items[-1]["report"])
    fileio.write_text(out / FILE, json.dumps(items, indent=2) + "\n")


def rows(timeline: list[dict[str, Any]]) -> list[list[str]]:
    """Newest first: when, TF versions, cells, changed since the run before, verdict."""
    found = []
    for item in reversed(timeline):
        changed = item.get("changed_cells")
        since = (
            "first run"
            if changed is None
            else f"{changed} changed" + (f", {item['new_cells']} new" if item.get("new_cells") else "")
        )
        tf = item.get("tf") or []
        versions = f"{tf[0]}–{tf[-1]} ({len(tf)})" if len(tf) > 1 else ", ".join(tf)
        found.append([str(item.get("generated_at", "")), versions, str(item.get("cells", "")), since,
                      str(item.get("verdict", ""))])  # fmt: skip
    return found
