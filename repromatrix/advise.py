"""`repromatrix advise`: plan the cells that answer "what do I set so these agree, and what does it cost", run
them through the normal runner, and write the advice (reporting/advice.py judges it).

The search, per question ("agree across cpus", "across tf", "across host"): the defaults and each setting
alone first — oneDNN off, op determinism on, one intra-op thread, one inter-op thread, each ISA cap this CPU
can run from the newest down — one cell per value of the axis in every context (TF version, device, recipe
of the selection); then, for the scenario variants no single setting made agree in every output, pairs of
single settings on different axes, those that fix the most of what is left first, within the cell budget.
What is measured already is reused (the runner's reuse key); what the budget leaves out is "not tried".
Across hosts the same search runs on each host, each into its own results folder, and
`advise --across host FOLDER...` computes the advice when they meet.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from repromatrix import cli, matrix, options, progress, runner
from repromatrix.backends import host_cpu_flags
from repromatrix.errors import CellsFailedError, ConfigurationError, ExpectationsBrokenError
from repromatrix.harness import axes
from repromatrix.harness.axes import CPU_ISAS, ISA_FLAGS, NO_ISA_CAP, Cell
from repromatrix.harness.layout import Layout
from repromatrix.matrix import Matrix
from repromatrix.reporting import advice as judge
from repromatrix.reporting.advice import Across, Setting

# What each controllable axis is set to when tried alone (its default being TensorFlow's own).
ALONE: dict[str, list[Any]] = {"onednn": [False], "op_determinism": [True], "intra_op_threads": [1],
                               "inter_op_threads": [1]}  # fmt: skip


@dataclass(frozen=True)
class Step:
    """A setting the search tries, and why."""

    setting: Setting
    why: str


@dataclass(frozen=True)
class Planned:
    """A cell of the search and why it is there."""

    cell: Cell
    why: str


@dataclass(frozen=True)
class Search:
    """One question's cells: a setting's cells at every value of the axis in every context, in search order."""

    across: Across
    contexts: tuple[dict[str, Any], ...]
    values: tuple[Any, ...]  # of the axis (None for host: each host runs its own)
    cells: tuple[Planned, ...] = ()
    left_out: tuple[Step, ...] = ()  # over the budget: not tried

    def cells_of(self, setting: Setting) -> list[Cell]:
        found = []
        for context in self.contexts:
            for value in self.values:
                at = {**context, **setting.values}
                if value is not None:
                    at[self.across.value] = value
                found.append(Cell(**at))
        return found

    def add(self, steps: Iterable[Step], budget: int) -> Search:
        """These steps' cells after the ones planned, a step whole or not at all, within `budget` cells."""
        planned = list(self.cells)
        ids = {p.cell.id for p in planned}
        left_out = list(self.left_out)
        for step in steps:
            new = [cell for cell in self.cells_of(step.setting) if cell.id not in ids]
            if len(planned) + len(new) > budget:
                left_out.append(step)
                continue
            planned += [Planned(cell, step.why) for cell in new]
            ids |= {cell.id for cell in new}
        return replace(self, cells=tuple(planned), left_out=tuple(left_out))


def isa_caps(flags: set[str]) -> list[str]:
    """The ISA caps below native this CPU can run, newest first: a cap it lacks emulates nothing here."""
    return [isa for isa in reversed(CPU_ISAS) if isa != NO_ISA_CAP and set(ISA_FLAGS[isa]) <= flags]


def singles(search: Sequence[str], flags: set[str]) -> list[Step]:
    """The defaults, then each setting alone, in the order of `search` (the axes a user controls)."""
    steps = [Step(Setting(), "the defaults: the baseline every cost is measured against")]
    for name in search:
        values = isa_caps(flags) if name == "cpu_isa" else ALONE[name]
        for value in values:
            setting = Setting.of({name: value})
            steps.append(Step(setting, f"{setting.label()} alone"))
    return steps


def pairs(found: list[judge.Advice], tried_alone: list[Step]) -> list[Step]:
    """Pairs of single settings on different axes, for the scenario variants that no single setting made agree
    in every output; those that leave the fewest outputs unfixed by both of their members first."""
    alone = [step.setting for step in tried_alone if step.setting.size == 1]
    scores: dict[Setting, tuple[int, float]] = {}
    wanted: dict[Setting, list[str]] = {}
    for advice in found:
        if advice.working or len(advice.values) < 2:
            continue
        by_setting = {o.setting: o for o in advice.options if o.tried}
        for left, right in combinations(alone, 2):
            if left.axes & right.axes or left not in by_setting or right not in by_setting:
                continue
            a, b = by_setting[left], by_setting[right]
            unfixed = sum(
                a.trials[o].verdict != judge.Verdict.WORKS and b.trials[o].verdict != judge.Verdict.WORKS
                for o in advice.outputs
            )
            cost = (a.worst_cost or 1.0) * (b.worst_cost or 1.0)
            both = left.plus(right)
            scores[both] = min(scores.get(both, (unfixed, cost)), (unfixed, cost))
            wanted.setdefault(both, []).append(advice.scenario)
    ordered = sorted(scores, key=lambda s: (*scores[s], s.label()))
    return [Step(s, f"{s.label()}: a combination, for {', '.join(sorted(set(wanted[s])))}, which no single setting "
                    "makes agree in every output") for s in ordered]  # fmt: skip


def contexts(cells: Sequence[Cell], across: Across) -> tuple[dict[str, Any], ...]:
    """Where settings are compared: each TF version, device and recipe of the selection (but the asked
    axis), at every core unless cores are what is asked across."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for cell in cells:
        context = {name: getattr(cell, name) for name in ("tf", "device", "recipe") if name != across.value}
        found.setdefault(tuple(context.values()), context)
    return tuple(found.values())


def across_values(cells: Sequence[Cell], across: Across) -> tuple[Any, ...]:
    """The asked axis's values in the selection (host: None, each host running its own search)."""
    if across == Across.HOST:
        return (None,)
    axis = axes.BY_NAME[across.value]
    return tuple(sorted({getattr(cell, across.value) for cell in cells}, key=axis.order))


def first_search(cells: Sequence[Cell], across: Across, steps: list[Step], budget: int) -> Search:
    search = Search(across, contexts(cells, across), across_values(cells, across))
    return search.add(steps, budget)


def describe(searches: list[Search], budget: int, measured: set[str]) -> str:
    """`advise --plan`: every cell, why it is there, and whether records of it exist."""
    lines = []
    for search in searches:
        values = ", ".join(axes.axis(search.across.value).show(v) for v in search.values if v is not None)
        lines.append(f"across {search.across.value}" + (f" ({values})" if values else " (this host's own search)")
                     + f": {len(search.cells)} cells of a budget of {budget}")  # fmt: skip
        width = max((len(p.cell.id) for p in search.cells), default=0)
        for planned in search.cells:
            note = "  [has records: reused where the reuse key matches]" if planned.cell.id in measured else ""
            lines.append(f"  {planned.cell.id:{width}}  {planned.why}{note}")
        for step in search.left_out:
            lines.append(f"  over the budget (not tried): {step.setting.label()}")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------


def settings_of(args: argparse.Namespace, loaded: Matrix) -> matrix.AdviseSettings:
    """[advise] with the command line's flags over it, each checked as its matrix.toml key is."""
    settings = loaded.advise
    for name in ("across", "search", "budget"):
        value = getattr(args, name, None)
        if value in (None, []):
            continue
        problem = options.BY_NAME[name].check(value)
        if problem:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise ConfigurationError(f"{options.BY_NAME[name].flags[-1]} {shown}: not valid; {problem}")
        changed: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value}
        settings = replace(settings, **changed)
    return settings


def scenarios_of(args: argparse.Namespace, loaded: Matrix, known: list[str]) -> tuple[str, ...]:
    """--scenario, else [advise].scenarios, else [run].scenarios (load_plan put --scenario there)."""
    if args.scenarios or not loaded.advise.advise_scenarios:
        return loaded.scenarios
    matrix.check_scenarios(loaded.source, loaded.advise.advise_scenarios, known)
    return loaded.advise.advise_scenarios


def command(args: argparse.Namespace) -> int:
    loaded, cells, found = cli.load_plan(args)
    settings = settings_of(args, loaded)
    scenarios = scenarios_of(args, loaded, list(found))
    # Advice compares digests across cells: spread runs would only add cost (asked for, they run).
    spread = loaded.spread_seeds if getattr(args, "spread_seeds", None) is not None else 0
    loaded = replace(loaded, scenarios=scenarios, spread_seeds=spread)
    across = [Across(a) for a in settings.across]
    if args.results_dirs:  # advice from folders that met (several hosts, say): nothing runs
        cli.check_report_folder(args.results_dirs, args.out)
        return _broken(_report(args, args.results_dirs, across, scenarios))
    if not cells:
        raise ConfigurationError("the selection has no cells; see nox -s plan")
    flags = host_cpu_flags()
    steps = singles(settings.search, flags)
    searches = [first_search(cells, a, steps, settings.budget) for a in across]
    for search in searches:
        if search.across != Across.HOST and len(search.values) < 2:
            name = search.across.value
            how = " (or --tf A,B)" if name == "tf" else ""
            progress.warn(f"warning: the selection has one value of {name} ({search.values[0]}): nothing to agree "
                          f"across; give [matrix].{name} two or more values{how}")  # fmt: skip
    if args.plan_only:
        measured = {cell_id for cell_id, _ in Layout(args.results).cells()} if args.results.is_dir() else set()
        progress.say(describe(searches, settings.budget, measured))
        progress.say("then: pairs of these settings, for the scenario variants no single one makes agree in every "
                     "output (decided once the singles are measured), within what is left of the budget")  # fmt: skip
        return 0
    cli.check_report_folder([args.results], args.out)
    if args.jobs < 1:
        raise ConfigurationError(f"--jobs {args.jobs}: must be 1 or more")
    if loaded.repeats < 2:
        progress.warn(f"warning: {loaded.repeats} repeat per variant: no setting can be called working without "
                      "run to run (it needs two processes); use --repeats 2 or more")  # fmt: skip
    outcomes = _run(args, loaded, [p for s in searches for p in s.cells], found)
    advised = _advice(args.results, across, scenarios)
    second = []
    for search in searches:
        mine = [a for a in advised if a.across == search.across]
        second.append(search.add(pairs(mine, steps), settings.budget))
    extra = [p for s, before in zip(second, searches, strict=True) for p in s.cells[len(before.cells) :]]
    if extra:
        progress.say(f"advise: {len(extra)} more cells for combinations of settings")
        outcomes += _run(args, loaded, extra, found)
    for search in second:
        for step in search.left_out:
            progress.say(f"advise: over the budget of {settings.budget} cells, not tried: {step.setting.label()}")
    broken = _report(args, [args.results], across, scenarios)
    failed = [o.cell.id for o in outcomes if o.state == runner.CellState.ERROR]
    if failed:  # the advice is written either way: a failed cell is "not tried" in it
        raise CellsFailedError(f"{len(failed)} cells had errors ({', '.join(failed)}); see the lines above")
    return _broken(broken)


def _broken(count: int) -> int:
    """Exit 5 as `matrix` and `report` do when an expectation broke (a seeded variant that varies, say)."""
    if count:
        raise ExpectationsBrokenError(f"{count} expectation{'s' if count != 1 else ''} broke (see the report's "
                                      "Findings); every report file and advice.md is written")  # fmt: skip
    return 0


def _run(args: argparse.Namespace, loaded: Matrix, planned: list[Planned], found: dict[str, Any]) -> list[Any]:
    cells = list(dict.fromkeys(p.cell for p in planned))
    reasons = {p.cell.id: p.why for p in planned}
    loaded = replace(loaded, cells=tuple(cells), reasons={**loaded.reasons, **reasons})
    backend = cli.choose_backend(args, loaded, cells)
    host = cli.this_host(args.host)
    progress.say(f"advise: {len(cells)} cells × {len(runner.planned_repeats(loaded, found))} repeats → "
                 f"{args.results} (host {host.label})")  # fmt: skip
    run_options = runner.RunOptions(results=args.results, jobs=args.jobs, force=args.force, verbose=args.verbose,
                                    wait=args.wait, host=host)  # fmt: skip
    return runner.run_matrix(backend, loaded, cells, run_options, found)


def _advice(results: Path, across: list[Across], scenarios: Sequence[str]) -> list[judge.Advice]:
    from repromatrix.reporting import analysis
    from repromatrix.reporting.load import load

    variants = analysis.variants(load([results]).records)
    return [a for axis in across for a in judge.advise(variants, axis, scenarios)]


def _report(args: argparse.Namespace, folders: list[Path], across: list[Across], scenarios: Sequence[str]) -> int:
    """Every report file with the advice; returns how many expectations broke."""
    from repromatrix.reporting import render_all

    destination = cli.report_folder(folders, args.out)
    # --history as `report` takes it: a previous site's history.json to continue, or "-" (start one).
    given = args.history
    history = given if given is not None and given != Path("-") and given.is_file() else None
    report = render_all(folders, destination, baseline=args.baseline, history=history,
                        keep_history=args.history is not None, across=[a.value for a in across],
                        scenarios=scenarios)  # fmt: skip
    progress.say("\n".join(report.headline))
    progress.say("")
    progress.say(judge.markdown(report.advice, judge.question(a.value for a in across)))
    progress.say(f"advice written to {destination}/advice.md (and report.json's advice, report.md's What to change)")
    return report.expectations_broken
