"""The scenario modules, found by reading their source, and the repeats a plan asks of them.

A scenario is a module that defines `VARIANTS` and `run(variant, seed)` (the contract:
`scenarios/__init__.py`, docs/scenarios.md). Discovery reads the source (no import), so
planning a matrix never pays for importing TensorFlow. Also here: what a cell's staged code
holds (this harness, the built-ins and the user's scenario folders beside them) and the reuse
key that says whether a record can stand for a repeat.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from . import command, exchange, records
from .records import Isolation

HARNESS_DIR = Path(__file__).resolve().parent
# The package these modules belong to, and the built-in scenarios beside them: `repromatrix.scenarios`,
# the top-level scenarios/ folder of a checkout, a subfolder of the package installed or staged in a cell.
PACKAGE = (__package__ or "repromatrix.harness").rpartition(".")[0]
SCENARIOS_PACKAGE = f"{PACKAGE}.scenarios"


@cache
def builtin_dir() -> Path:
    """Where the built-in scenarios are, as the import system finds `repromatrix.scenarios`."""
    spec = importlib.util.find_spec(SCENARIOS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{SCENARIOS_PACKAGE} is not importable: install repromatrix (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# What a comparison may be declared to show.
OUTCOMES = ("identical", "differs", "any")
EXPECT_KEYS = ("run_to_run", "in_process")
# What a scenario may declare of its predictions' decisions (reporting/matter.py counts them).
DECISION_KEYS = ("threshold",)


def default_expectation(variant: str) -> dict[str, str]:
    """Seeded variants must be identical; unseeded ones must vary (the article's claims)."""
    outcome = "identical" if records.is_seeded(variant) else "differs"
    return {"run_to_run": outcome, "in_process": outcome}


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    variants: tuple[str, ...]
    summary: str
    expect: dict[str, dict[str, str]] = field(default_factory=dict)
    seed: int | None = None  # the scenario's own seed; None: the matrix's
    problem: str | None = None  # why the module does not follow the contract
    decision: dict[str, float] = field(default_factory=dict)  # DECISION: e.g. {"threshold": 0.5}
    # A command scenario ([run.commands] in matrix.toml, repromatrix/commands.py): no module, but the
    # command and the project folder it runs from (staged into every cell).
    command: tuple[str, ...] = ()
    project: Path | None = None

    def seed_for(self, variant: str, matrix_seed: int) -> int | None:
        return records.seed_for(variant, self.seed if self.seed is not None else matrix_seed)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ValueError


def _check_expect(expect: Any, variants: tuple[str, ...]) -> str | None:
    if not isinstance(expect, dict):
        return f"EXPECT must be a literal dict of variant → {{comparison: outcome}}, got {expect!r}"
    for variant, declared in expect.items():
        if variant not in variants:
            return f"EXPECT names variant {variant!r}, which is not in VARIANTS {variants}"
        if not isinstance(declared, dict) or not declared:
            return f"EXPECT[{variant!r}] must be a dict such as {{'in_process': 'differs'}}, got {declared!r}"
        for key, outcome in declared.items():
            if key not in EXPECT_KEYS:
                return f"EXPECT[{variant!r}] has key {key!r}; allowed: {', '.join(EXPECT_KEYS)}"
            if outcome not in OUTCOMES:
                return f"EXPECT[{variant!r}][{key!r}] = {outcome!r}; allowed: {', '.join(OUTCOMES)}"
    return None


def _inspect(path: Path) -> Scenario:
    name = path.stem
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        return Scenario(name, path, (), "", problem=f"cannot be parsed: {exc}")
    summary = (ast.get_docstring(tree) or "").strip().splitlines()[:1]
    assigned: dict[str, Any] = {}
    has_run = False
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("VARIANTS", "EXPECT", "SEED", "DECISION"):
                    assigned[target.id] = _literal(node.value)
        elif isinstance(node, ast.FunctionDef) and node.name == "run":
            has_run = True
    variants = assigned.get("VARIANTS")
    valid = (
        isinstance(variants, (tuple, list))
        and bool(variants)
        and all(isinstance(v, str) and VARIANT_NAME.match(v) for v in variants)
        and len(set(variants)) == len(variants)
    )
    info = Scenario(name, path, tuple(variants) if valid and variants else (), summary[0] if summary else "")
    if not valid:
        return replace(info, problem=f"VARIANTS must be a literal tuple of distinct lower-case names, got {variants!r}")
    if not has_run:
        return replace(info, problem="defines no top-level run(variant, seed)")
    expect = assigned.get("EXPECT", {})
    problem = _check_expect(expect, info.variants)
    if problem:
        return replace(info, problem=problem)
    seed = assigned.get("SEED")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return replace(info, problem=f"SEED must be an integer literal, got {seed!r}")
    decision = assigned.get("DECISION", {})
    if not (
        isinstance(decision, dict)
        and set(decision) <= set(DECISION_KEYS)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in decision.values())
    ):
        return replace(info, problem=f'DECISION must be a literal dict such as {{"threshold": 0.5}}, got {decision!r}')
    return replace(info, expect=expect, seed=seed, decision={k: float(v) for k, v in decision.items()})


def is_scenario_module(path: Path) -> bool:
    """Assigning VARIANTS marks a scenario; a module that does not parse is judged by its text."""
    if path.name.startswith("_") or path.suffix != ".py":
        return False
    try:
        return "VARIANTS" in path.read_text(errors="replace")
    except OSError:
        return False


@cache
def shared_sources() -> tuple[Path, ...]:
    """Files every scenario process executes besides the scenario's own module (this harness, and the
    scenarios' own helpers such as `common`): a change to any of them can change the bits, so they
    are part of the reuse key."""
    helpers = sorted(p for p in builtin_dir().glob("*.py") if not is_scenario_module(p))
    return (HARNESS_DIR.parent / "__init__.py", *sorted(HARNESS_DIR.glob("*.py")), *helpers)


class ScenarioClash(ValueError):
    """Two folders define a scenario of the same name, or stage a file of the same name."""


# What a user's scenario folder may stage into every cell, all files together: code and small
# inputs, not a data set (a cell copies it for every run, and a container mounts it).
STAGE_LIMIT_BYTES = 50 * 1024 * 1024
# Never staged: caches, version control, virtualenvs.
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".venv", "venv", ".nox", ".tox", "node_modules",
                          ".mypy_cache", ".pytest_cache", ".ruff_cache", "results", "reports"})  # fmt: skip


def folder_files(directory: Path) -> dict[str, Path]:
    """Every file of a scenario folder that goes into a cell, by its path relative to the folder."""
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            found[relative.as_posix()] = path
    return found


def _limited(directory: Path, own: dict[str, Path]) -> dict[str, Path]:
    size = sum(path.stat().st_size for path in own.values())
    if size > STAGE_LIMIT_BYTES:
        name, largest = max(own.items(), key=lambda item: item[1].stat().st_size)
        raise ScenarioClash(
            f"{directory}: {size / 2**20:.0f} MiB of files to stage into every cell, more than the "
            f"{STAGE_LIMIT_BYTES / 2**20:.0f} MiB allowed (largest: {name}, "
            f"{largest.stat().st_size / 2**20:.0f} MiB); keep large data outside the scenario folder"
        )
    return own


def staged_files(directories: tuple[Path, ...] | list[Path], projects: tuple[Path, ...] = ()) -> dict[str, Path]:
    """What every cell's code folder holds, by path inside it: this package's `__init__`, the harness,
    the built-in scenarios and each scenario folder's files beside them (`repromatrix/scenarios/...`),
    and each command's project folder (`repromatrix/projects/<key>/...`, harness/command.py).
    ScenarioClash when two would land on one name, or a folder is past STAGE_LIMIT_BYTES."""
    package = PACKAGE.replace(".", "/")
    files = {f"{package}/__init__.py": HARNESS_DIR.parent / "__init__.py"}
    files |= {f"{package}/{HARNESS_DIR.name}/{path.name}": path for path in sorted(HARNESS_DIR.glob("*.py"))}
    for project in projects:
        own = _limited(project, project_files(project))
        files |= {f"{package}/{command.PROJECTS}/{command.project_key(project)}/{n}": p for n, p in own.items()}
    staged = {path.name: path for path in sorted(builtin_dir().glob("*.py"))}
    for directory in directories:
        own = folder_files(directory)
        own.pop("__init__.py", None)  # the staged package has its own; a folder's marks it a package, no more
        _limited(directory, own)
        for name, path in own.items():
            if name in staged:
                raise ScenarioClash(f"{path} would replace {staged[name]} in every cell; rename one of them")
            staged[name] = path
    scenarios = SCENARIOS_PACKAGE.replace(".", "/")
    return files | {f"{scenarios}/{name}": path for name, path in staged.items()}


def project_files(directory: Path) -> dict[str, Path]:
    """A command's project folder as staged: its files but the matrix file (which says where to run it,
    not what runs: adding a TF version to it must not make every record stale)."""
    return {name: path for name, path in folder_files(directory).items() if name != "matrix.toml"}


def folder_digest(directory: Path, files: dict[str, Path] | None = None) -> str:
    sha = hashlib.sha256()
    for name, path in (folder_files(directory) if files is None else files).items():
        sha.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def discover(*directories: Path) -> dict[str, Scenario]:
    """Every scenario module of the folders (default: the built-ins), including ones that break the contract."""
    found: dict[str, Scenario] = {}
    for directory in directories or (builtin_dir(),):
        for path in sorted(directory.glob("*.py")):
            if not is_scenario_module(path):
                continue
            if path.stem in found:
                raise ScenarioClash(
                    f"scenario {path.stem!r} is defined twice: {found[path.stem].path} and {path}; rename one"
                )
            found[path.stem] = _inspect(path)
    return found


def source_digest(scenario: Scenario) -> str:
    """The scenario's source and the harness's; for a user's scenario, every file of its folder too
    (a helper module or a data file changes its bits as surely as the scenario itself)."""
    sha = hashlib.sha256()
    if scenario.project is not None:  # a command: what it runs, and every file of the folder it runs from
        files = project_files(scenario.project)
        sha.update("\0".join(scenario.command).encode() + b"\0" + folder_digest(scenario.project, files).encode())
    elif scenario.path.parent.resolve() != builtin_dir():
        sha.update(folder_digest(scenario.path.parent).encode())
    for path in ((scenario.path,) if scenario.project is None else ()) + shared_sources():
        sha.update(path.name.encode() + b"\0")
        sha.update(path.read_bytes() if path.is_file() else b"")
    return sha.hexdigest()


def reuse_key(
    environment_key: str,
    scenario: Scenario,
    variant: str,
    seed: int | None,
    isolation: Isolation = Isolation.PROCESS,
    record_bytes: int = records.DEFAULT_RECORD_BYTES,
) -> str:
    """Identifies everything that decides a repeat's bits and what its record keeps; equal keys mean
    the record can be reused."""
    parts = [environment_key, scenario.name, variant, repr(seed), source_digest(scenario), isolation,
             f"record_bytes={record_bytes}"]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class PlannedRepeat:
    """One repeat to have a record for; `problem` set when the scenario cannot run."""

    name: str
    variant: str
    seed: int | None
    index: int
    scenario: Scenario | None = None
    problem: str = ""
    spread: bool = False  # a spread run: the variant with another seed, once (records.Record.spread)
    sibling: str = ""  # the unseeded variant that stands in for this spread run where it is measured

    @property
    def spread_seed(self) -> int | None:
        """The seed a spread run's record is named by; None for an ordinary repeat."""
        return self.seed if self.spread else None

    @property
    def label(self) -> str:
        return exchange.spread_label(self.name, self.variant, self.index, self.spread_seed)

    @property
    def expect(self) -> dict[str, str]:
        """Only what the scenario declared: records keep the defaults implicit."""
        return dict(self.scenario.expect.get(self.variant, {})) if self.scenario else {}

    def spec(self, reuse_key: str | None, isolation: Isolation = Isolation.PROCESS,
             record_bytes: int = records.DEFAULT_RECORD_BYTES) -> exchange.RepeatSpec:  # fmt: skip
        return exchange.RepeatSpec(self.name, self.variant, self.seed, self.index, reuse_key=reuse_key,
                                  expect=self.expect, isolation=Isolation(isolation), record_bytes=record_bytes,
                                  problem=self.problem, spread=self.spread, sibling=self.sibling,
                                  decision=dict(self.scenario.decision) if self.scenario else {},
                                  **self.command_fields())  # fmt: skip

    def command_fields(self) -> dict[str, Any]:
        """What a command scenario's repeat needs besides (harness/command.py): empty for a module."""
        if self.scenario is None or self.scenario.project is None:
            return {}
        return {"command": self.scenario.command, "project": command.project_key(self.scenario.project)}


def plan(
    found: dict[str, Scenario],
    names: list[str] | tuple[str, ...],
    repeats: int,
    seed: int,
    only_variant: str | None = None,
    spread_seeds: int = 0,
    spread_siblings: bool = True,
) -> list[PlannedRepeat]:
    """Every repeat of every requested scenario variant; broken or unknown ones carry their problem.

    With `spread_seeds`, each seeded variant also runs once with each of that many other seeds (its
    seed + 1, + 2, ...): spread runs, measuring what a different seed does to the same model here. A
    seeded variant whose scenario has an unseeded variant in the plan takes that spread from the
    unseeded repeats instead, unless `spread_siblings` is False: its spread runs name the sibling,
    and the harness runs them only in a cell where the sibling measured nothing.
    """
    planned: list[PlannedRepeat] = []
    for name in names or [n for n, info in found.items() if info.problem is None]:
        info = found.get(name)
        if info is None:
            problem = f"unknown scenario (available: {', '.join(found) or 'none'})"
            variants: list[str] = [only_variant or "unknown"]
        elif info.problem:
            problem = f"{info.path.name} {info.problem}"
            variants = [only_variant] if only_variant else list(info.variants) or ["unknown"]
        elif only_variant and only_variant not in info.variants:
            problem, variants = f"has no {only_variant} variant (it has {info.variants})", [only_variant]
        else:
            problem, variants = "", [only_variant] if only_variant else list(info.variants)
        sibling = next((v for v in variants if not records.is_seeded(v)), "") if spread_siblings else ""
        for variant in variants:
            used = info.seed_for(variant, seed) if info else records.seed_for(variant, seed)
            for index in range(repeats):
                planned.append(PlannedRepeat(name, variant, used, index, None if problem else info, problem))
            if used is None or problem:
                continue
            for offset in range(1, spread_seeds + 1):
                planned.append(PlannedRepeat(name, variant, used + offset, 0, info, spread=True, sibling=sibling))
    return planned
