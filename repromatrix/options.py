"""Every option, declared once: its flag, its matrix.toml key, its environment variable, its default, its help.

The command line's parser is built from this table (`add_to`), `matrix.load` reads and checks matrix.toml's
[run] and [docker] with it (`in_table`), and a flag given on the command line overrides the matrix.toml
value (`overrides`), which the environment variable, for settings that differ per machine rather than
per matrix, overrides in turn. Standard library only: the noxfile's module imports it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repromatrix.harness import hosts, records

DEFAULT_SCENARIOS = ("init", "seeded_init", "dropout_training", "cnn_training")
DEFAULT_RESULTS = Path("results/matrix")
DEFAULT_REPORTS = Path("reports")
BACKENDS = ("auto", "docker", "local")
# What `advise` asks settings to agree across (axes a user does not control), and the axes a user controls
# that it searches (reporting/advice.py reads both).
ADVISE_ACROSS = ("cpus", "host", "tf")
ADVISE_SEARCH = ("onednn", "op_determinism", "intra_op_threads", "inter_op_threads", "cpu_isa")
ADVISE_BUDGET = 40
MEMORY = r"^\d+(\.\d+)?[kmg]?$"


def csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def default_jobs() -> int:
    """One cell per core, but no more than one per 4 GiB of memory (a TF process peaks near 1 GiB)."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 4.0
    return max(1, min(hosts.usable_cores(), int(memory_gib // 4)))


@dataclass(frozen=True)
class Option:
    """One setting. `key` ("run.repeats") puts it in matrix.toml; `flags` on the command line, in the
    commands that take its `group`; `env` lets an environment variable set it."""

    name: str  # the attribute it becomes: on the parsed arguments, Matrix or DockerSettings
    help: str
    groups: tuple[str, ...] = ()  # the flag groups it is in (cli.py gives each command its groups)
    flags: tuple[str, ...] = ()
    key: str = ""  # "run.repeats": table and key in matrix.toml
    env: str = ""
    default: Any = None  # a callable: computed when the parser is built
    kind: type | tuple[type, ...] = str  # of the matrix.toml value
    check: Callable[[Any], str] = lambda value: ""  # why a value is not allowed, or ""
    # argparse's own: how the flag's text becomes a value.
    type: Callable[[str], Any] | None = None
    action: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    nargs: str | None = None
    const: Any = None
    extends: bool = False  # the flag adds to the matrix.toml list rather than replacing it

    @property
    def table(self) -> str:
        return self.key.partition(".")[0]

    @property
    def key_name(self) -> str:
        """The key within its table."""
        return self.key.partition(".")[2]

    @property
    def toml_key(self) -> str:
        return f"[{self.table}].{self.key_name}"

    def where(self) -> str:
        """What a person types to set it: the flag, the matrix.toml key, the variable."""
        parts = [*self.flags[-1:], *([self.toml_key] if self.key else []), *([f"${self.env}"] if self.env else [])]
        return " / ".join(parts)


def _at_least(minimum: float, what: str) -> Callable[[Any], str]:
    return lambda value: "" if value >= minimum else what


def _names_from(value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, list) and value and all(name in allowed for name in value):
        return ""
    return f"a non-empty list from: {', '.join(allowed)}"


OPTIONS: tuple[Option, ...] = (
    # -- which cells
    Option("matrix", "matrix file (default: ./matrix.toml, else the packaged one)", ("selection",), ("--matrix",),
           type=Path),
    Option("tf", "only these TF versions (comma-separated, repeatable)", ("selection",), ("--tf",), type=csv,
           action="extend", metavar="VERSION,..."),
    Option("device", "only these devices: cpu, cuda", ("selection",), ("--device",), type=csv, action="extend",
           metavar="DEVICE,..."),
    Option("cell", "only these cell ids", ("selection",), ("--cell",), type=csv, action="extend", metavar="ID,..."),
    Option("nightly", "add one cell beside the newest release: its baseline on the newest tf-nightly, pinned "
           "($REPROMATRIX_TF_NIGHTLY fixes which)", ("selection",), ("--nightly",), default=False,
           action="store_true"),
    Option("scenario_paths", "a folder of your own scenarios (repeatable; in matrix.toml, relative to it)",
           ("selection",), ("--scenarios",), "run.scenario_paths", default=[], kind=list, type=Path, action="append",
           metavar="DIR", extends=True,
           check=lambda v: "" if all(isinstance(e, str | Path) and str(e) for e in v) else "a list of folder paths"),
    # -- what each cell runs ([run]); the reuse key covers each, so resuming stays correct
    Option("scenarios", "scenarios to run (--scenario: only these, comma-separated, repeatable)", ("overrides",),
           ("--scenario",), "run.scenarios", default=list(DEFAULT_SCENARIOS), kind=list, type=csv, action="extend",
           metavar="NAME,...",
           check=lambda v: "" if v and all(isinstance(s, str) for s in v) else "a non-empty list of scenario names"),
    Option("repeats", "fresh processes per scenario variant", ("overrides",), ("--repeats",), "run.repeats",
           default=records.DEFAULT_REPEATS, kind=int, type=int,
           check=_at_least(1, "at least 1 (2 or more to test run-to-run)")),
    Option("seed", "seed of the seeded variants (a scenario's own SEED still wins)", ("overrides",), ("--seed",),
           "run.seed", default=records.DEFAULT_SEED, kind=int, type=int),
    Option("spread_seeds", "other seeds each seeded variant runs with, once each, for the seed-to-seed spread "
           "a difference is judged against (0: none)", ("overrides",), ("--spread-seeds",), "run.spread_seeds",
           default=records.DEFAULT_SPREAD_SEEDS, kind=int, type=int, check=_at_least(0, "0 (no spread runs) or more")),
    Option("spread_siblings", "a seeded variant with an unseeded sibling in its scenario takes the spread from the "
           "unseeded repeats instead of running other seeds", key="run.spread_siblings", default=True, kind=bool),
    Option("isolation", "process: a new interpreter per repeat; fork: children of one parent per repeat index",
           ("overrides",), ("--isolation",), "run.isolation", default=records.DEFAULT_ISOLATION,
           choices=records.ISOLATIONS, check=lambda v: "" if v in records.ISOLATIONS else
           f"allowed: {', '.join(records.ISOLATIONS)}"),
    Option("timeout", "seconds one repeat may take", key="run.timeout", default=records.DEFAULT_TIMEOUT_S,
           kind=(int, float), check=_at_least(1e-9, "a positive number of seconds")),
    Option("record_bytes", "array bytes a record keeps whole; past it, and for per-layer and per-epoch arrays, "
           "a fixed sample", key="run.record_bytes", default=records.DEFAULT_RECORD_BYTES, kind=int,
           check=_at_least(0, "0 (sample every large array) or more bytes")),
    Option("project", "your pip-installable project, installed in every cell (relative to matrix.toml)",
           key="run.project", default=""),
    Option("commands", "your own commands, run as they are in every cell ([run.commands.NAME]: command, "
           "variants, expect, folder; repromatrix/commands.py checks them)", key="run.commands", default={},
           kind=dict),
    Option("requirements", "extra requirements installed in every cell", key="run.requirements", default=[],
           kind=list, check=lambda v: "" if all(isinstance(r, str) and r.strip() for r in v) else
           'a list of requirement strings, e.g. ["einops==0.8.2"]'),
    # -- where cells run
    Option("backend", "docker, local (cached virtualenvs), or auto: docker when an engine answers",
           ("environment",), ("--backend",), default="auto", choices=BACKENDS),
    Option("base_image", "the image the pip recipe installs TF on", ("environment",), ("--base-image",),
           "docker.base_image", "REPROMATRIX_BASE_IMAGE", default="python:3.11-slim"),
    Option("official_image", "the image the official recipe starts from", key="docker.official_image",
           default="tensorflow/tensorflow"),
    Option("extra_ca", "a PEM bundle pip trusts in builds (an intercepting proxy)", ("environment",), ("--extra-ca",),
           "docker.extra_ca", "REPROMATRIX_EXTRA_CA", default=""),
    Option("index_url", "the package index builds and locks install from", ("environment", "lock"), ("--index-url",),
           "docker.index_url", "REPROMATRIX_INDEX_URL", default=""),
    Option("memory", "memory limit of a container", key="docker.memory", default="4g",
           check=lambda v: "" if re.match(MEMORY, v, re.IGNORECASE) else 'a size such as "4g" or "512m"'),
    Option("cpus", "CPU quota of a container (a cell's cpus axis sets its own)", key="docker.cpus", default=2.0,
           kind=(int, float), check=_at_least(1e-9, "cpus > 0")),
    Option("pids", "process limit of a container", key="docker.pids", default=512, kind=int,
           check=_at_least(16, "pids ≥ 16")),
    Option("verbose", "stream build logs and scenario output", ("environment",), ("-v", "--verbose"),
           action="store_true"),
    # -- the run itself
    Option("results", "the results folder", ("running", "bench"), ("--results",), default=DEFAULT_RESULTS, type=Path),
    Option("jobs", "cells at once", ("running", "bench"), ("--jobs",), default=default_jobs, type=int),
    Option("force", "rerun repeats whose records could be reused", ("running",), ("--force",), action="store_true"),
    Option("wait", "wait for another run that holds --results to end", ("running",), ("--wait",),
           action="store_true"),
    Option("host", "label this machine's records, e.g. laptop (default: derived from the CPU, e.g. "
           "amd-epyc-avx512-2c)", ("running",), ("--host",), env=hosts.HOST_ENV, metavar="NAME"),
    # -- the report
    Option("baseline", "earlier results folder or report.json, for drift", ("reporting",), ("--baseline",), type=Path),
    Option("out", f"report folder (default: {DEFAULT_REPORTS}/NAME)", ("reporting",), ("--out",), type=Path),
    Option("history", "keep a timeline of published runs in --out (history.json, history/), continuing the "
           "previous site's history.json when given one that exists", ("reporting",), ("--history",), type=Path,
           metavar="HISTORY_JSON", nargs="?", const=Path("-")),
    # -- from where, exactly (matrix --explain)
    Option("explain", "after the run, trace the N pairs whose bits differ where they should not (repromatrix "
           "explain on each, worst first) into --out/explain/: a section each in the report", ("explaining",),
           ("--explain",), default=0, type=int, metavar="N"),
    Option("explain_budget", "seconds --explain may take in all: no pair starts that would overrun it",
           ("explaining",), ("--explain-budget",), default=900.0, type=float, metavar="SECONDS"),
    # -- what to change ([advise]; the advise command)
    Option("across", "make the cells agree across this axis: cpus, host or tf (comma-separated: a question each)",
           ("advise",), ("--across",), "advise.across", default=["cpus"], kind=list, type=csv, metavar="AXIS,...",
           check=lambda v: _names_from(v, ADVISE_ACROSS)),
    Option("advise_scenarios", "the scenarios advised on (default: [run].scenarios; --scenario narrows both)",
           key="advise.scenarios", default=[], kind=list,
           check=lambda v: "" if all(isinstance(s, str) and s for s in v) else "a list of scenario names"),
    Option("search", "the axes a user controls that the search changes", ("advise",), ("--search",),
           "advise.search", default=list(ADVISE_SEARCH), kind=list, type=csv, metavar="AXIS,...",
           check=lambda v: _names_from(v, ADVISE_SEARCH)),
    Option("budget", "cells the search plans at most (a setting takes one per value of --across)", ("advise",),
           ("--budget",), "advise.budget", default=ADVISE_BUDGET, kind=int, type=int,
           check=_at_least(1, "at least 1 cell")),
    Option("plan_only", "list the cells the search plans and why each is there; run nothing", ("advise",),
           ("--plan",), action="store_true"),
)  # fmt: skip
BY_NAME = {option.name: option for option in OPTIONS}


def in_table(table: str) -> list[Option]:
    """The options of one matrix.toml table, in the table's order."""
    return [option for option in OPTIONS if option.table == table]


def add_to(parser: argparse.ArgumentParser, group: str, **defaults: Any) -> None:
    """The flags of `group`'s options; `defaults` replaces an option's default for this command."""
    for option in OPTIONS:
        if group not in option.groups or not option.flags:
            continue
        default = defaults.get(option.name, None if option.key else option.default)
        default = default() if callable(default) else default
        shown = f" (default: {default})" if default not in (None, False) else ""
        also = f"; {'adds to' if option.extends else 'overrides'} {option.toml_key}" if option.key else ""
        also += f"; ${option.env} sets it when the flag is not given" if option.env else ""
        kwargs: dict[str, Any] = {"dest": option.name, "default": default, "help": f"{option.help}{shown}{also}"}
        if option.action:
            kwargs["action"] = option.action
        if option.type and option.action != "store_true":
            kwargs["type"] = option.type
        for name in ("choices", "metavar", "nargs", "const"):
            if getattr(option, name) is not None:
                kwargs[name] = getattr(option, name)
        parser.add_argument(*option.flags, **kwargs)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """matrix.toml settings the command line gives for this run (a flag not given overrides nothing)."""
    return {
        option.name: getattr(args, option.name)
        for option in OPTIONS
        if option.key and option.flags and getattr(args, option.name, None) not in (None, [])
    }
