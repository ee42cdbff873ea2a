"""What to change: the measured settings of the axes a user controls under which every value of an axis they
do not control gives the very same bits, each with its measured time cost.

The question is "make these agree across X" — X being the cores a machine has, the host, or the TF versions a
project must support. A *setting* is a value of each controllable axis (oneDNN, op determinism, thread
counts, the ISA cap), named by what it changes from TensorFlow's defaults. For one seeded scenario variant
and one compared output, a setting *works* when its cell at every value of X was measured, each is
reproducible run to run (two or more process identities, one digest), and all of them gave one digest —
the whole-array sha256 the records hold. A setting with a value of X unmeasured is "not tried", never
advice. The cost is the median scenario time under the setting over the default's, per value of X.

Pure logic over `analysis.Variant`s (so over records, or a published report.json's digests), tested on
hand-made records.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from repromatrix import options
from repromatrix.harness import axes
from repromatrix.reporting import analysis


class Across(StrEnum):
    """The axes a user does not control, and so asks settings to make agree across."""

    CPUS = "cpus"
    HOST = "host"
    TF = "tf"


# The axes a user sets in their own code or environment, in the order settings are named and tried.
CONTROLLED: tuple[str, ...] = options.ADVISE_SEARCH

# The TF call a user makes for an axis applied with one (axes.py's tf_call makes the same call).
_CALLS = {
    "op_determinism": lambda on: "tf.config.experimental.enable_op_determinism()" if on else "",
    "intra_op_threads": lambda n: f"tf.config.threading.set_intra_op_parallelism_threads({n})" if n else "",
    "inter_op_threads": lambda n: f"tf.config.threading.set_inter_op_parallelism_threads({n})" if n else "",
}


def _default(name: str) -> Any:
    return axes.BY_NAME[name].default


@dataclass(frozen=True, order=True)
class Setting:
    """Values of the controllable axes that differ from TensorFlow's defaults; none: the defaults."""

    changes: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, values: dict[str, Any]) -> Setting:
        """The setting a cell (or a plain {axis: value}) is at; axes it does not name are at their default."""
        return cls(tuple((name, values[name]) for name in CONTROLLED
                         if name in values and values[name] != _default(name)))  # fmt: skip

    @property
    def is_default(self) -> bool:
        return not self.changes

    @property
    def size(self) -> int:
        return len(self.changes)

    @property
    def values(self) -> dict[str, Any]:
        """Every controllable axis's value under this setting."""
        return {**{name: _default(name) for name in CONTROLLED}, **dict(self.changes)}

    def plus(self, other: Setting) -> Setting:
        return Setting.of({**dict(self.changes), **dict(other.changes)})

    @property
    def axes(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.changes)

    def label(self) -> str:
        """'oneDNN off + ISA cap avx2'; 'the defaults'."""
        if self.is_default:
            return "the defaults"
        return " + ".join(_part(name, value) for name, value in self.changes)

    def how(self) -> list[str]:
        """What a user puts in their own environment or code: the exact variable or TF call."""
        found: list[str] = []
        for name, value in self.changes:
            call = _CALLS.get(name, lambda v: "")(value)
            if call:
                found.append(call)
            else:
                found += [f"{key}={val}" for key, val in axes.BY_NAME[name].env(value).items()]
        return found

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label(), "changes": dict(self.changes), "how": self.how()}


def _part(name: str, value: Any) -> str:
    if name == "cpu_isa":
        return f"ISA cap {value}"
    axis = axes.BY_NAME[name]
    return f"{axis.label} {axis.show(value)}"


class Verdict(StrEnum):
    """One setting, one output, every value of the axis."""

    WORKS = "works"  # one digest at every value, each reproducible run to run
    DIFFERS = "differs"  # measured everywhere, reproducible, but not one digest
    VARIES = "varies run to run"  # at some value the repeats disagree: no digest to agree on
    UNTESTED = "run to run untested"  # one digest everywhere, but some value had one process identity
    NOT_TRIED = "not tried"  # some value of the axis was not measured under it (or could not run)


@dataclass(frozen=True)
class Trial:
    """One setting for one scenario variant·output: what its cells at each value of the axis gave."""

    setting: Setting
    verdict: Verdict
    digests: dict[str, str | None]  # value of the axis (as shown) → digest, None when none to agree on
    classes: int  # distinct digests among the values measured reproducibly
    missing: dict[str, str] = field(default_factory=dict)  # value → why it has no result
    cells: tuple[str, ...] = ()  # the cells (ids) it was judged from

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.setting.label(), "verdict": self.verdict, "digests": self.digests,
                "classes": self.classes, "missing": self.missing, "cells": list(self.cells)}  # fmt: skip


@dataclass(frozen=True)
class Option:
    """A setting for a whole scenario variant: its trials per output, and its cost per value of the axis."""

    setting: Setting
    trials: dict[str, Trial]  # output → trial
    cost: dict[str, float | None]  # value → median scenario time under it / under the defaults

    @property
    def works(self) -> bool:
        return bool(self.trials) and all(t.verdict == Verdict.WORKS for t in self.trials.values())

    @property
    def tried(self) -> bool:
        return all(t.verdict != Verdict.NOT_TRIED for t in self.trials.values())

    @property
    def differing(self) -> int:
        """Outputs it does not make agree (fewest: the closest setting)."""
        return sum(t.verdict != Verdict.WORKS for t in self.trials.values())

    @property
    def worst_cost(self) -> float | None:
        """The largest ratio over the values timed under both it and the defaults; None when none is."""
        known = [c for c in self.cost.values() if c is not None]
        return max(known) if known else None

    def cost_text(self) -> str:
        worst = self.worst_cost
        if self.setting.is_default:
            return "1.0× (the baseline)"
        if worst is None:
            return "time cost not measured (no value timed under both it and the defaults)"
        spread = ", ".join(f"{value} {ratio:.2f}×" for value, ratio in self.cost.items() if ratio is not None)
        untimed = [value for value, ratio in self.cost.items() if ratio is None]
        spread += f"; not timed: {', '.join(untimed)}" if untimed else ""
        return f"{worst:.2f}× time ({spread})"

    def sort_key(self) -> tuple[Any, ...]:
        worst = self.worst_cost
        return (worst is None, worst or 0.0, self.setting.size, self.setting.label())

    def to_json(self) -> dict[str, Any]:
        return {**self.setting.to_json(), "works": self.works, "tried": self.tried, "cost": self.cost,
                "worst_cost": self.worst_cost, "differing_outputs": self.differing,
                "outputs": {name: trial.to_json() for name, trial in self.trials.items()}}  # fmt: skip


@dataclass(frozen=True)
class Advice:
    """The answer for one seeded scenario variant in one context (the axes neither asked across nor set)."""

    scenario: str  # the variant's name, e.g. cnn_training-seeded
    across: Across
    context: dict[str, Any]  # e.g. {"tf": "2.21.0", "device": "cpu"}
    values: tuple[str, ...]  # the axis's values, as shown ("all cores", "1 core")
    outputs: tuple[str, ...]
    options: tuple[Option, ...]  # every setting measured at any value, cheapest working first

    @property
    def working(self) -> list[Option]:
        """Settings that work for every output; none when one value was measured (nothing to agree across)."""
        return [o for o in self.options if o.works] if self.askable else []

    @property
    def closest(self) -> Option | None:
        """When none works: the tried setting with the fewest outputs not agreeing (then the cheapest)."""
        tried = [o for o in self.options if o.tried]
        return min(tried, key=lambda o: (o.differing, *o.sort_key()), default=None)

    @property
    def not_tried(self) -> list[Option]:
        return [o for o in self.options if not o.tried]

    @property
    def askable(self) -> bool:
        """Two or more values of the axis measured: something to agree across."""
        return len(self.values) > 1

    def working_for(self, output: str) -> list[Option]:
        """Settings that make this one output agree (maybe not the others), cheapest first."""
        return [o for o in self.options if output in o.trials and o.trials[output].verdict == Verdict.WORKS]

    def context_text(self) -> str:
        """The context in words; axes at their default (the image recipe pip, all cores) go unsaid."""
        parts = [f"{axes.axis(name).label} {axes.axis(name).show(value)}" for name, value in self.context.items()
                 if axes.axis(name).default is None or value != axes.axis(name).default]  # fmt: skip
        return ", ".join(parts)

    def values_text(self) -> str:
        return _and(list(self.values))

    def line(self) -> str:
        """The headline's sentence."""
        head = f"To make {self.scenario} identical on {self.values_text()}"
        head += f" ({self.context_text()})" if self.context else ""
        if len(self.values) < 2:
            return f"{head}: only {self.values_text()} measured, nothing to agree across"
        working = self.working
        if any(o.setting.is_default for o in working):
            return f"{self.scenario} is already identical on {self.values_text()} with the defaults"
        if working:
            shown = [f"{o.setting.label()} ({_short_cost(o)})" for o in working[:3]]
            more = f"; {len(working) - 3} more in What to change" if len(working) > 3 else ""
            return f"{head}: " + "; or ".join(shown) + more
        tried = [o for o in self.options if o.tried]
        closest = self.closest
        near = ""
        if closest is not None and closest.differing < len(self.outputs):
            near = (f"; closest: {closest.setting.label()} ({closest.differing} of {len(self.outputs)} outputs "
                    "still differ)")  # fmt: skip
        return f"{head}: none of the {len(tried)} measured settings{near}"

    def to_json(self) -> dict[str, Any]:
        closest = self.closest
        return {
            "scenario": self.scenario, "across": self.across, "context": self.context, "values": list(self.values),
            "outputs": list(self.outputs), "line": self.line(), "askable": self.askable,
            "working": [o.setting.label() for o in self.working],
            "closest": closest.setting.label() if closest is not None and not self.working else None,
            "not_tried": [o.setting.label() for o in self.not_tried],
            "settings": [o.to_json() for o in self.options],
        }  # fmt: skip


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "nothing"


def _short_cost(option: Option) -> str:
    worst = option.worst_cost
    return f"{worst:.2f}× time" if worst is not None else "time cost not measured"


def across_value(across: Across, variant: analysis.Variant) -> Any:
    """The value of the axis a variant stands at (its host label for host: a cell names its host only when
    several meet in one report)."""
    if across == Across.HOST and "host" not in variant.cell:
        first = variant.representative
        return (first.record.host_label if first else "") or analysis.UNKNOWN_HOST
    return variant.cell.get(across.value, axes.axis(across.value).default)


def _show(across: Across, value: Any) -> str:
    return str(value) if across == Across.HOST else axes.axis(across.value).show(value)


def _context(across: Across, cell: dict[str, Any]) -> dict[str, Any]:
    """What a cell is at besides the asked axis and the controllable ones: settings are compared within it."""
    left_out = {"id", across.value, *CONTROLLED}
    return {k: _frozen(v) for k, v in sorted(cell.items(), key=lambda kv: _axis_rank(kv[0])) if k not in left_out}


def _frozen(value: Any) -> Any:
    """A cell's value as its axis holds it: JSON's lists back to tuples (package pins), so defaults compare."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _axis_rank(name: str) -> int:
    return axes.NAMES.index(name) if name in axes.NAMES else len(axes.NAMES)


def scenario_seconds(variant: analysis.Variant) -> float | None:
    """The median scenario time of a variant's measured repeats (None: none timed, e.g. a published one)."""
    times = [float(r.record.timings["scenario_s"]) for r in variant.ok_records if r.record.timings.get("scenario_s")]
    return statistics.median(times) if times else None


def _trial(setting: Setting, output: str, at: dict[str, analysis.Variant | None], values: list[str]) -> Trial:
    digests: dict[str, str | None] = {}
    missing: dict[str, str] = {}
    varies = untested = False
    for value in values:
        variant = at.get(value)
        if variant is None:
            missing[value] = "not run"
            digests[value] = None
            continue
        if not variant.ok_repeats or output not in variant.digests:
            missing[value] = (variant.message or str(variant.status)) if not variant.ok_repeats else f"no {output}"
            digests[value] = None
            continue
        digest = variant.digests[output]
        digests[value] = digest
        if digest is None:
            varies = True
        elif variant.identities < 2:
            untested = True
    classes = len({d for d in digests.values() if d is not None})
    if missing:
        verdict = Verdict.NOT_TRIED
    elif varies:
        verdict = Verdict.VARIES
    elif classes > 1:
        verdict = Verdict.DIFFERS
    elif untested:
        verdict = Verdict.UNTESTED
    else:
        verdict = Verdict.WORKS
    cells = tuple(v.cell_id for v in at.values() if v is not None)
    return Trial(setting, verdict, digests, classes, missing, cells)


def advise(variants: Iterable[analysis.Variant], across: Across | str,
           scenarios: Iterable[str] | None = None) -> list[Advice]:  # fmt: skip
    """Advice for every seeded scenario variant (only those of `scenarios`, scenario or variant names, when
    given) in every context, from whatever is measured. Unseeded variants are meant to vary: no advice."""
    across = Across(across)
    wanted = set(scenarios or ())
    grouped: dict[tuple[str, str], list[analysis.Variant]] = defaultdict(list)
    for variant in variants:
        if not variant.seeded or (wanted and variant.scenario not in wanted and variant.name not in wanted):
            continue
        context = _context(across, variant.cell)
        grouped[(variant.name, json.dumps(context, sort_keys=True, default=str))].append(variant)
    found = []
    for (name, _), group in sorted(grouped.items()):
        found.append(_advise_one(name, across, group))
    return found


def _advise_one(name: str, across: Across, group: list[analysis.Variant]) -> Advice:
    axis = axes.axis(across.value)
    raw_values = sorted({across_value(across, v) for v in group}, key=axis.order)
    values = [_show(across, value) for value in raw_values]
    by_setting: dict[Setting, dict[str, analysis.Variant]] = defaultdict(dict)
    for variant in group:
        at = by_setting[Setting.of(variant.cell)]
        value = _show(across, across_value(across, variant))
        # Two variants at one setting and value (a published copy beside a measured one): a measured one wins.
        if value not in at or (at[value].published and not variant.published):
            at[value] = variant
    outputs = sorted({o for v in group for o in v.compared_outputs}, key=analysis.output_order)
    baseline = by_setting.get(Setting(), {})
    options = []
    for setting, at in by_setting.items():
        trials = {output: _trial(setting, output, dict(at), values) for output in outputs}
        cost: dict[str, float | None] = {}
        for value in values:
            mine = scenario_seconds(at[value]) if value in at else None
            base = scenario_seconds(baseline[value]) if value in baseline else None
            cost[value] = round(mine / base, 3) if mine is not None and base else None
        options.append(Option(setting, trials, cost))
    options.sort(key=lambda o: (not o.works, not o.tried, *o.sort_key()))
    context = _context(across, group[0].cell)
    return Advice(name, across, context, tuple(values), tuple(outputs), tuple(options))


# -- text -----------------------------------------------------------------------------


def markdown(advice: list[Advice], question: str = "") -> str:
    """The "What to change" section (and advice.md): per scenario, every measured setting with its verdict
    per output and its cost, working ones cheapest first."""
    lines = ["## What to change", ""]
    if question:
        lines += [question, ""]
    if not advice:
        lines += ["No seeded scenario variant was measured: no advice (unseeded variants are meant to vary).", ""]
        return "\n".join(lines)
    lines += [f"- {line}" for line in headline(advice)]
    lines.append("")
    advice = [a for a in advice if a.askable]
    lines.append(
        "A setting *works* when its cells at every value gave one whole-array digest and each was reproducible "
        "run to run; *not tried* means some value was not measured under it (never advice). Time: median "
        "scenario time under the setting divided by the defaults', per value."
    )
    for a in advice:
        lines += ["", f"### {a.scenario}" + (f" ({a.context_text()})" if a.context else ""), ""]
        lines.append(f"Across {axes.axis(a.across.value).label}: {a.values_text()}.")
        lines.append("")
        header = ["setting", "set it with", "time", *a.outputs]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for option in a.options:
            how = "<br>".join(f"`{h}`" for h in option.setting.how()) or "(nothing)"
            cells = [_verdict_cell(option.trials[o]) for o in a.outputs]
            label = f"**{option.setting.label()}**" if option.works else option.setting.label()
            lines.append("| " + " | ".join([label, how, option.cost_text(), *cells]) + " |")
        if not a.working and len(a.values) > 1:
            closest = a.closest
            near = f" The closest: {closest.setting.label()}." if closest is not None else ""
            lines += ["", f"None of the measured settings makes every output agree.{near}"]
            for output in a.outputs:
                fixes = a.working_for(output)
                if fixes:
                    lines.append(f"- {output} alone agrees under: {', '.join(o.setting.label() for o in fixes)}")
    lines.append("")
    return "\n".join(lines)


def headline(advice: list[Advice]) -> list[str]:
    """A line per scenario variant and context with two or more values of the axis measured; the others
    (one host's folder, a context only one side has) in one line."""
    lines = [a.line() for a in advice if a.askable]
    single = [a for a in advice if not a.askable]
    if single:
        values = sorted({v for a in single for v in a.values})
        where = sorted({a.context_text() or "everywhere" for a in single})
        lines.append(f"Nothing to agree across for {len(single)} scenario variant × context"
                     f"{'s' if len(single) != 1 else ''} measured at one value only ({', '.join(values)}): "
                     f"{'; '.join(where)}")  # fmt: skip
    return lines


def _verdict_cell(trial: Trial) -> str:
    if trial.verdict == Verdict.DIFFERS:
        return f"differs ({trial.classes} digests)"
    if trial.verdict == Verdict.NOT_TRIED:
        return "not tried (" + "; ".join(f"{v}: {why}" for v, why in trial.missing.items()) + ")"
    return str(trial.verdict)


def to_json(advice: list[Advice]) -> list[dict[str, Any]]:
    return [a.to_json() for a in advice]


def table(advice: list[Advice]) -> tuple[list[str], list[list[str]], str]:
    """The report's "What to change" section: headers, rows (a scenario's settings, working ones first,
    cheapest first) and its intro (the headline's sentences)."""
    headers = ["scenario", "setting", "set it with", "verdict", "time"]
    rows = []
    for a in advice:
        if not a.askable:
            continue
        for option in a.options:
            if option.works:
                verdict = "works"
            elif not option.tried:
                verdict = "not tried"
            else:
                verdict = f"{option.differing} of {len(a.outputs)} outputs differ"
            where = f"{a.scenario} ({a.context_text()})" if a.context_text() else a.scenario
            rows.append([where, option.setting.label(), " ".join(option.setting.how()) or "(nothing)", verdict,
                         option.cost_text()])  # fmt: skip
    intro = (
        "Every measured setting of the axes you control, per seeded scenario variant: it works when its cells "
        "at every value gave one whole-array digest, each reproducible run to run; not tried: some value was "
        "not measured under it. Per output: advice.md beside this report."
    )
    return headers, rows, intro


def question(across: Iterable[str]) -> str:
    """The question advice answers, in words."""
    named = [axes.axis(str(a)).label for a in across]
    return (
        f"Which settings of the axes you control (oneDNN, op determinism, thread counts, the ISA cap) make "
        f"every value of {_and(named)} give the very same bits, and at what cost?"
    )
