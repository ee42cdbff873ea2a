"""matrix.toml → validated cells.

Standard library only: the noxfile imports this module to name its per-cell
sessions before any virtualenv exists.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repromatrix import commands as command_scenarios
from repromatrix import envaxes, options
from repromatrix.errors import ConfigurationError
from repromatrix.harness import axes, records
from repromatrix.harness.axes import Cell
from repromatrix.harness.catalog import Scenario
from repromatrix.harness.records import Isolation

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# Installed, the copies packaged beside this module (pyproject's package-dir and setup.py put them
# there); in a checkout, editable or not, the repository's own folder and file.
RECIPES_DIR = PACKAGE_DIR / "docker" if (PACKAGE_DIR / "docker").is_dir() else REPO_ROOT / "docker"
PACKAGED_MATRIX = PACKAGE_DIR / "matrix.toml" if (PACKAGE_DIR / "matrix.toml").is_file() else REPO_ROOT / "matrix.toml"


def default_matrix() -> Path:
    """./matrix.toml when the current folder has one (a user's project), else the packaged default."""
    here = Path("matrix.toml")
    return here if here.is_file() else PACKAGED_MATRIX


DESIGNS = ("factorial", "one-at-a-time")


@dataclass(frozen=True)
class DockerSettings:
    """Where cells run: matrix.toml's [docker] (options.py declares each key; a test holds the two together)."""

    base_image: str = "python:3.11-slim"
    official_image: str = "tensorflow/tensorflow"
    extra_ca: str = ""
    index_url: str = ""
    memory: str = "4g"
    cpus: float = 2.0
    pids: int = 512


@dataclass(frozen=True)
class AdviseSettings:
    """What `advise` asks: matrix.toml's [advise] (options.py declares each key)."""

    across: tuple[str, ...] = ("cpus",)
    advise_scenarios: tuple[str, ...] = ()  # empty: [run].scenarios
    search: tuple[str, ...] = options.ADVISE_SEARCH
    budget: int = options.ADVISE_BUDGET


@dataclass(frozen=True)
class Matrix:
    cells: tuple[Cell, ...]
    scenarios: tuple[str, ...]
    repeats: int
    seed: int
    timeout: float
    docker: DockerSettings
    source: Path
    design: str = "factorial"
    isolation: Isolation = records.DEFAULT_ISOLATION
    # Array bytes a record keeps whole (past it, and per-layer/per-epoch arrays: a fixed sample).
    record_bytes: int = records.DEFAULT_RECORD_BYTES
    # Other seeds per seeded variant for the seed-to-seed spread; an unseeded sibling's repeats serve instead.
    spread_seeds: int = records.DEFAULT_SPREAD_SEEDS
    spread_siblings: bool = True
    # The user's pip-installable project and extra requirements, installed in every cell on top of its lock.
    project: Path | None = None
    requirements: tuple[str, ...] = ()
    # Folders of the user's own scenario modules, run beside the built-ins (relative to matrix.toml).
    scenario_paths: tuple[Path, ...] = ()
    # Why each cell is in the plan (one-at-a-time: "baseline", "changes cpus to 1", ...).
    reasons: dict[str, str] = field(default_factory=dict)
    advise: AdviseSettings = field(default_factory=AdviseSettings)
    # The user's own commands ([run.commands], repromatrix/commands.py), scenarios without a module.
    commands: tuple[Scenario, ...] = ()

    @property
    def projects(self) -> tuple[Path, ...]:
        """The folders the commands run from: staged into every cell."""
        return command_scenarios.projects(self.commands)


# Keys of [matrix] that choose cells rather than name an axis.
_DESIGN_KEYS = ("design", "crossed")
# [matrix] packages = { numpy = [...] }: pins over each cell's lock, one axis (packages) made of them.
PACKAGES_KEY = "packages"


def _fail(source: Path, key: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{source.name}: {key} = {value!r} is not valid; {allowed}")


def _check_keys(source: Path, table: str, given: dict[str, Any], allowed: list[str]) -> None:
    for key in given:
        if key not in allowed:
            raise _fail(source, f"[{table}].{key}", given[key], f"allowed keys: {', '.join(allowed)}")


def _axis(source: Path, name: str, raw: Any) -> list[Any]:
    key = f"[matrix].{name}"
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise _fail(source, key, raw, "give at least one value")
    for value in values:
        problem = axes.BY_NAME[name].problem(value)
        if problem:
            raise _fail(source, key, value, problem)
    if len(set(values)) != len(values):
        raise _fail(source, key, raw, "values must not repeat")
    return values


def _settings(source: Path, data: dict[str, Any], table: str) -> dict[str, Any]:
    """One table of matrix.toml ([run] or [docker]) as options.py declares it: every key known, every value
    of its type and allowed, the environment variable of a per-machine setting winning over the file."""
    declared = options.in_table(table)
    given = data.get(table, {})
    _check_keys(source, table, given, [option.key_name for option in declared])
    values: dict[str, Any] = {}
    for option in declared:
        value = given.get(option.key_name, option.default)
        if not axes.is_of(value, option.kind):
            raise _fail(source, option.toml_key, value, f"it must be {axes.type_name(option.kind)}")
        if option.env and option.env in os.environ:
            value = os.environ[option.env]
        problem = option.check(value)
        if problem:
            raise _fail(source, f"${option.env}" if option.env in os.environ else option.toml_key, value, problem)
        values[option.name] = value
    return values


def load(path: Path | None = None, known_scenarios: list[str] | None = None) -> Matrix:
    """Parse and validate; every mistake is a ConfigurationError naming key, value and what is allowed."""
    path = path or default_matrix()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such matrix file; pass --matrix PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path.name}: not valid TOML: {exc}") from None
    _check_keys(path, "top level", data, ["matrix", "run", "docker", "advise"])
    for table in ("matrix", "run", "docker", "advise"):
        if not isinstance(data.get(table, {}), dict):
            raise _fail(path, f"[{table}]", data[table], "it must be a table")
    axes_raw = dict(data.get("matrix", {}))
    _check_keys(path, "matrix", axes_raw, [*axes.NAMES, *_DESIGN_KEYS])
    pins = envaxes.package_table(path, axes_raw.pop(PACKAGES_KEY, {}))
    design = axes_raw.pop("design", "factorial")
    crossed = axes_raw.pop("crossed", [])
    if design not in DESIGNS:
        raise _fail(path, "[matrix].design", design, f"allowed: {', '.join(DESIGNS)}")
    if not isinstance(crossed, list) or any(name not in axes.BY_NAME for name in crossed):
        bad = crossed if not isinstance(crossed, list) else [n for n in crossed if n not in axes.BY_NAME]
        raise _fail(path, "[matrix].crossed", bad, f"a list of axes from: {', '.join(axes.NAMES)}")
    if crossed and design != "one-at-a-time":
        raise _fail(path, "[matrix].crossed", crossed, 'crossed axes only mean something with design = "one-at-a-time"')
    chosen_values = {
        a.name: _axis(path, a.name, axes_raw.get(a.name, list(a.planned))) for a in axes.AXES if a.name != PACKAGES_KEY
    }
    chosen_values["tf"] = envaxes.pin_nightly(path, chosen_values["tf"])
    chosen_values.update(pins)  # one axis per pinned package; design_cells folds them into `packages`

    run = _settings(path, data, "run")
    commands = command_scenarios.parse(path, run["commands"])
    if commands and "scenarios" not in data.get("run", {}):  # declaring a command is asking to run it
        run["scenarios"] = [command.name for command in commands]
    if known_scenarios is not None:
        check_scenarios(path, run["scenarios"], [*known_scenarios, *(command.name for command in commands)])
    project = None
    if run["project"]:
        project = (path.parent / Path(run["project"]).expanduser()).resolve()
        if not ((project / "pyproject.toml").is_file() or (project / "setup.py").is_file()):
            how = f"{project} has no pyproject.toml or setup.py; give the folder of a pip-installable project"
            raise _fail(path, "[run].project", run["project"], how)

    advise = _settings(path, data, "advise")
    advised = AdviseSettings(across=tuple(advise["across"]), advise_scenarios=tuple(advise["advise_scenarios"]),
                             search=tuple(advise["search"]), budget=advise["budget"])  # fmt: skip
    chosen = design_cells(chosen_values, design, crossed)
    cells = tuple(chosen)
    return Matrix(
        cells=cells,
        scenarios=tuple(run["scenarios"]),
        repeats=run["repeats"],
        seed=run["seed"],
        timeout=float(run["timeout"]),
        isolation=Isolation(run["isolation"]),
        record_bytes=run["record_bytes"],
        spread_seeds=run["spread_seeds"],
        spread_siblings=run["spread_siblings"],
        project=project,
        requirements=tuple(r.strip() for r in run["requirements"]),
        scenario_paths=_scenario_paths(path, run["scenario_paths"]),
        docker=DockerSettings(**_settings(path, data, "docker")),
        source=path,
        design=design,
        reasons={cell.id: why for cell, why in chosen.items()},
        advise=advised,
        commands=commands,
    )


def check_scenarios(source: Path, names: list[str] | tuple[str, ...], known: list[str], flag: str = "") -> None:
    """Every name a known scenario; the error names the flag that gave it, else matrix.toml's key."""
    for name in names:
        if name not in known:
            if flag:
                raise ConfigurationError(f"{flag} {name}: not a known scenario; known scenarios: {', '.join(known)}")
            raise _fail(source, "[run].scenarios", name, f"known scenarios: {', '.join(known)}")


def _scenario_paths(source: Path, raw: list[Any]) -> tuple[Path, ...]:
    folders = []
    for entry in raw:
        if not isinstance(entry, str) or not entry:
            raise _fail(source, "[run].scenario_paths", entry, "a list of folder paths (strings)")
        folder = (source.parent / Path(entry).expanduser()).resolve()  # an absolute entry stays as it is
        if not folder.is_dir():
            raise _fail(source, "[run].scenario_paths", entry, f"no such folder {folder}; list folders of scenarios")
        folders.append(folder)
    return tuple(folders)


def design_cells(values: dict[str, list[Any]], design: str, crossed: list[str]) -> dict[Cell, str]:
    """The cells of the design, each with why it is there (insertion-ordered, no duplicates).

    factorial: every combination. one-at-a-time: a baseline (every axis at its first value)
    and every cell that changes one axis alone; crossed axes are combined in full, and each
    of their combinations gets its own baseline and single changes.
    """
    if design == "factorial":
        return {
            _cell(dict(zip(values, combo, strict=True))): "factorial" for combo in itertools.product(*values.values())
        }
    baseline = {name: axis_values[0] for name, axis_values in values.items()}
    chosen: dict[Cell, str] = {}
    for combo in itertools.product(*(values[name] for name in crossed)):
        point = {**baseline, **dict(zip(crossed, combo, strict=True))}
        where = ", ".join(f"{name}={_show(name, point[name])}" for name in crossed)
        chosen.setdefault(_cell(point), f"baseline ({where})" if crossed else "baseline")
        for name, axis_values in values.items():
            if name in crossed:
                continue
            for value in axis_values[1:]:
                why = f"changes {name} to {_show(name, value)}" + (f" (at {where})" if crossed else "")
                chosen.setdefault(_cell({**point, name: value}), why)
    return chosen


def _cell(point: dict[str, Any]) -> Cell:
    """A cell from one value per axis; a pinned package's value (not an axis name) joins `packages`."""
    pins = tuple(sorted((name, value) for name, value in point.items() if name not in axes.BY_NAME))
    return Cell(**{name: value for name, value in point.items() if name in axes.BY_NAME}, packages=pins)


def _show(name: str, value: Any) -> str:
    return axes.BY_NAME[name].show(value) if name in axes.BY_NAME else f"{name} {value}"


def select(
    cells: tuple[Cell, ...] | list[Cell],
    tf: list[str] | None = None,
    device: list[str] | None = None,
    cell_ids: list[str] | None = None,
) -> list[Cell]:
    """Narrow the cells by the command line's filters; a filter matching nothing is an error."""
    chosen = list(cells)
    for option, wanted, attribute in (("--tf", tf, "tf"), ("--device", device, "device"), ("--cell", cell_ids, "id")):
        if not wanted:
            continue
        if attribute == "tf" and axes.NIGHTLY in wanted:  # --tf nightly: whichever nightly the matrix pinned
            nightlies = sorted({c.tf for c in chosen if axes.is_nightly(c.tf)})
            wanted = [v for v in wanted if v != axes.NIGHTLY] + (nightlies or [axes.NIGHTLY])
        present = sorted({getattr(cell, attribute) for cell in chosen})
        unknown = [value for value in wanted if value not in present]
        if unknown:
            raise ConfigurationError(
                f"{option} {','.join(unknown)}: not in the matrix; available: {', '.join(present) or 'none'}"
            )
        chosen = [cell for cell in chosen if getattr(cell, attribute) in wanted]
    return chosen
