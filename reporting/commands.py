"""What the report says of a command scenario's records (harness/command.py, harness/saved_files.py).

A command's outputs are named by file and path inside it (`model.keras:dense/kernel`, `preds.npy`);
`epoch.NN:...` are its per-epoch checkpoints, read for the first epoch at which two runs part, and
`bytes:...` the files that hold no array, reported as "also differs" and never deciding a verdict.
It has no model1 and model2, so no in-process comparison exists for it. Pure logic over records.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from repromatrix.harness import records

if TYPE_CHECKING:
    from repromatrix.reporting.analysis import Variant

EPOCH = re.compile(r"^epoch\.(\d+):(.+)$")
# Variables named at the first differing epoch, at most (the rest are counted).
NAMED = 3
# Class tables of one command variant, at most: its files can hold hundreds of arrays.
TABLES = 6


def is_command(record: records.Record) -> bool:
    return "command" in record.extra


def is_output(name: str) -> bool:
    """An array of a command's file that a comparison judges (not a per-epoch checkpoint, not bytes)."""
    return not name.startswith(("model1.", "model2.")) and records.COMMAND_DETAIL.match(name) is None


def is_bytes(name: str) -> bool:
    return name.startswith(records.COMMAND_BYTES_PREFIX)


def _differs(left: records.Record, right: records.Record, name: str) -> bool:
    return name in right.outputs and left.outputs[name] != right.outputs[name]


def _names(names: list[str]) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:NAMED])
    return shown + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")


def first_divergence(left: records.Record, right: records.Record, arrays: bool = True) -> str:
    """Where two runs of a command part: the first epoch whose checkpoint differs and in which variables,
    the saved arrays that differ (unless `arrays` is false: run to run names them already), and the files
    without arrays that also differ."""
    parts = []
    epochs: dict[int, list[str]] = {}
    for name in sorted(left.outputs):
        match = EPOCH.match(name)
        if match:
            epochs.setdefault(int(match.group(1)), []).append(name)
    if epochs:
        per_epoch = [
            (n, [EPOCH.sub(r"\2", x) for x in names if _differs(left, right, x)]) for n, names in epochs.items()
        ]
        first = next(((n, names) for n, names in sorted(per_epoch) if names), None)
        if first is None:
            parts.append(f"every epoch's checkpoint equal ({len(epochs)} epochs)")
        else:
            earlier = "" if first[0] == min(epochs) else f"checkpoints equal up to epoch {first[0] - 1}; "
            files = sorted({name.split(":", 1)[0] for name in first[1]})
            variables = sorted((name.split(":", 1)[-1] for name in first[1]), key=lambda v: telling_first(f"-:{v}"))
            what = f"variable{'s' if len(variables) > 1 else ''} {_names(variables)}"
            parts.append(f"{earlier}first difference at epoch {first[0]} ({', '.join(files)}), {what}")
    differing = sorted((n for n in left.outputs if is_output(n) and _differs(left, right, n)), key=telling_first)
    if differing and arrays:
        parts.append(f"saved arrays that differ: {_names(differing)}")
    also = [name.removeprefix(records.COMMAND_BYTES_PREFIX) for name in sorted(left.outputs)
            if is_bytes(name) and _differs(left, right, name)]  # fmt: skip
    if also:
        parts.append(f"also differs: {_names(also)}")
    return "; ".join(parts)


def run_to_run_divergence(ok: list[records.Record]) -> str:
    """The first divergence between the first repeat and the first repeat that differs from it."""
    if len(ok) < 2 or not all(is_command(record) for record in ok):
        return ""
    first = ok[0]
    for other in ok[1:]:
        if other.outputs != first.outputs:
            return first_divergence(first, other, arrays=False)
    return ""


def table_outputs(group: list[Variant], outputs: list[str]) -> list[str]:
    """The outputs a command variant gets class tables for: those whose bits are not one class in every
    cell (the first TABLES of them; report.json's digests hold every one), else its first saved array,
    which stands for all of them (each the same in every cell). Any other scenario: every output."""
    if not group or not all(r.record.extra.get("command") is not None for v in group for r in v.ok_records):
        return outputs
    telling = [o for o in outputs if len({v.digests.get(o, "") for v in group if v.ok_repeats}) > 1]
    telling += [o for o in outputs if o not in telling and any(v.digests.get(o, "") is None for v in group)]
    return sorted(telling, key=telling_first)[:TABLES] or sorted(outputs, key=telling_first)[:1]


def telling_first(name: str) -> tuple[int, str]:
    """Predictions first, then a layer's variables, then the rest (optimizer state, checkpoints' bookkeeping)."""
    inner = name.partition(":")[2]
    return (0 if not inner else 2 if "optimizer" in inner or "/." in inner else 1, name)


def varied(spreads: list[str]) -> str:
    """A command's outputs that varied, in one sentence: the telling few (its files can hold hundreds)."""
    ordered = sorted(spreads, key=lambda text: telling_first(text.split(" ", 1)[0]))
    more = f"; and {len(spreads) - NAMED} more outputs" if len(spreads) > NAMED else ""
    return "; ".join(ordered[:NAMED]) + more
