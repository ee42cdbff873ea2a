"""Command scenarios: a user's own training script, run as it is in every cell ([run.commands] in matrix.toml).

    [run.commands.train]
    command = ["python", "train.py", "--seed", "{seed}", "--out", "{out}"]
    variants = ["seeded", "unseeded"]            # the default
    expect = { seeded = "identical", unseeded = "any" }
    folder = "."                                 # the project folder it runs from (default: matrix.toml's)

Parsed and checked here, once: every mistake is a ConfigurationError of one line (key, value, what is
allowed). A command becomes a `catalog.Scenario` with no module, which the plan, the reuse key and the
report treat as any other; the cell runs it through `harness/command.py`. Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from repromatrix.errors import ConfigurationError
from repromatrix.harness import records
from repromatrix.harness.catalog import OUTCOMES, VARIANT_NAME, Scenario, ScenarioClash, default_expectation
from repromatrix.harness.command import OUT, PLACEHOLDERS, SEED

KEYS = ("command", "variants", "expect", "folder")
DEFAULT_VARIANTS = ("seeded", "unseeded")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PLACEHOLDER = re.compile(r"\{[^{}]*\}")
TABLE = "run.commands"


def _fail(source: Path, key: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{source.name}: {key} = {value!r} is not valid; {allowed}")


def _command(source: Path, key: str, raw: Any) -> tuple[str, ...]:
    example = 'a list of strings, e.g. ["python", "train.py", "--seed", "{seed}", "--out", "{out}"]'
    if not isinstance(raw, list) or not raw or not all(isinstance(part, str) and part for part in raw):
        raise _fail(source, key, raw, example)
    for part in raw:
        for found in PLACEHOLDER.findall(part):
            if found not in PLACEHOLDERS:
                raise _fail(source, key, part, f"{found} is not a placeholder; only {SEED} and {OUT} are filled in")
    if not any(OUT in part for part in raw):
        raise _fail(source, key, raw, f"it must pass {OUT}, the folder the files it saves are compared from")
    return tuple(raw)


def _variants(source: Path, key: str, raw: Any) -> tuple[str, ...]:
    names = 'a list of distinct lower-case names, e.g. ["seeded", "unseeded"] (a name starting "unseeded" gets no seed)'
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) and VARIANT_NAME.match(v) for v in raw):
        raise _fail(source, key, raw, names)
    if len(set(raw)) != len(raw):
        raise _fail(source, key, raw, names)
    return tuple(raw)


def _expect(source: Path, key: str, raw: Any, variants: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each variant's run-to-run outcome; in-process does not exist for a command, so it is never expected."""
    if not isinstance(raw, dict):
        raise _fail(source, key, raw, 'a table of variant = outcome, e.g. { seeded = "identical", unseeded = "any" }')
    for variant, outcome in raw.items():
        if variant not in variants:
            raise _fail(source, f"{key}.{variant}", outcome, f"not a variant of this command ({', '.join(variants)})")
        if outcome not in OUTCOMES:
            raise _fail(source, f"{key}.{variant}", outcome, f"allowed: {', '.join(OUTCOMES)}")
    return {
        variant: {"run_to_run": str(raw.get(variant, default_expectation(variant)["run_to_run"])), "in_process": "any"}
        for variant in variants
    }


def _folder(source: Path, key: str, raw: Any) -> Path:
    if not isinstance(raw, str) or not raw:
        raise _fail(source, key, raw, "a folder path (relative to the matrix file)")
    folder = (source.parent / Path(raw).expanduser()).resolve()
    if not folder.is_dir():
        raise _fail(source, key, raw, f"no such folder {folder}; give the folder the command runs from")
    return folder


def parse(source: Path, raw: Any) -> tuple[Scenario, ...]:
    """[run.commands] as scenarios, in the file's order."""
    if not isinstance(raw, dict):
        raise _fail(source, f"[{TABLE}]", raw, "a table of [run.commands.NAME] tables")
    found = []
    for name, table in raw.items():
        where = f"[{TABLE}.{name}]"
        if not NAME.match(name):
            raise _fail(source, where, name, "a command's name is lower-case letters, digits and _ (e.g. train)")
        if not isinstance(table, dict):
            raise _fail(source, where, table, f"a table with {', '.join(KEYS)}")
        for key in table:
            if key not in KEYS:
                raise _fail(source, f"{where}.{key}", table[key], f"allowed keys: {', '.join(KEYS)}")
        if "command" not in table:
            raise ConfigurationError(f'{source.name}: {where} has no command; add command = ["python", ...]')
        command = _command(source, f"{where}.command", table["command"])
        variants = _variants(source, f"{where}.variants", table.get("variants", list(DEFAULT_VARIANTS)))
        expect = _expect(source, f"{where}.expect", table.get("expect", {}), variants)
        folder = _folder(source, f"{where}.folder", table.get("folder", "."))
        if any(records.is_seeded(v) for v in variants) and not any(SEED in part for part in command):
            raise _fail(source, f"{where}.command", list(command),
                        f"a seeded variant ({', '.join(v for v in variants if records.is_seeded(v))}) gets a seed, "
                        f"but the command does not pass {SEED}; add it, or name the variant unseeded")  # fmt: skip
        summary = f"runs `{' '.join(command)}` from {folder}"
        found.append(Scenario(name, source, variants, summary, expect=expect, command=command, project=folder))
    return tuple(found)


def projects(commands: tuple[Scenario, ...]) -> tuple[Path, ...]:
    """The project folders the commands run from, each once: what every cell stages."""
    return tuple(dict.fromkeys(c.project for c in commands if c.project is not None))


def add_to(found: dict[str, Scenario], commands: tuple[Scenario, ...]) -> dict[str, Scenario]:
    """The scenarios and the commands together; ScenarioClash when a command takes a scenario's name."""
    for scenario in commands:
        if scenario.name in found:
            raise ScenarioClash(
                f"[{TABLE}.{scenario.name}] has the name of the scenario {found[scenario.name].path}; rename one"
            )
    return {**found, **{scenario.name: scenario for scenario in commands}}
