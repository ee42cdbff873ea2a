"""matrix.toml → validated cells.

Standard library only: the noxfile imports this module to name its per-cell
sessions before any virtualenv exists.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from repromatrix.errors import ConfigurationError
from repromatrix.scenarios import records

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


DEVICES = ("cpu", "cuda")
RECIPES = ("pip", "official")
# The highest instruction set oneDNN may dispatch to (ONEDNN_MAX_CPU_ISA), oldest last; "native": no cap.
CPU_ISAS = ("native", "avx512_core_amx", "avx512_core_bf16", "avx512_core_vnni", "avx512_core", "avx2_vnni",
            "avx2", "avx", "sse41")  # fmt: skip
DESIGNS = ("factorial", "one-at-a-time")
TF_VERSION = re.compile(r"^2\.\d+\.\d+(\.post\d+)?$")
MEMORY = re.compile(r"^\d+(\.\d+)?[kmg]?$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Cell:
    """One environment: TF version × device × recipe × determinism knobs × emulated hardware."""

    tf: str
    device: str
    recipe: str = "pip"
    onednn: bool = True
    op_determinism: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    cpus: int = 0  # cores the scenario processes may run on; 0: all the host offers
    cpu_isa: str = "native"

    @property
    def id(self) -> str:
        """Axes at their defaults are left out, so ids made before an axis existed stay valid."""
        parts = [f"tf{self.tf}", self.device]
        if self.recipe != "pip":
            parts.append(self.recipe)
        parts += [f"onednn{int(self.onednn)}", f"det{int(self.op_determinism)}"]
        if self.intra_op_threads:
            parts.append(f"intra{self.intra_op_threads}")
        if self.inter_op_threads:
            parts.append(f"inter{self.inter_op_threads}")
        if self.cpus:
            parts.append(f"cpus{self.cpus}")
        if self.cpu_isa != "native":
            parts.append(f"isa-{self.cpu_isa.replace('_', '')}")
        return "-".join(parts)

    @property
    def environment(self) -> tuple[str, str, str]:
        """Cells that differ only in knobs share one image or virtualenv."""
        return (self.tf, self.device, self.recipe)

    def params(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Axis values a record made before that axis existed stands for."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


@dataclass(frozen=True)
class DockerSettings:
    base_image: str = "python:3.11-slim"
    official_image: str = "tensorflow/tensorflow"
    extra_ca: str = ""
    index_url: str = ""
    memory: str = "4g"
    cpus: float = 2.0
    pids: int = 512


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
    isolation: str = records.DEFAULT_ISOLATION
    # Array bytes a record keeps whole (past it, and per-layer/per-epoch arrays: a fixed sample).
    record_bytes: int = records.DEFAULT_RECORD_BYTES
    # The user's pip-installable project and extra requirements, installed in every cell on top of its lock.
    project: Path | None = None
    requirements: tuple[str, ...] = ()
    # Folders of the user's own scenario modules, run beside the built-ins (relative to matrix.toml).
    scenario_paths: tuple[Path, ...] = ()
    # Why each cell is in the plan (one-at-a-time: "baseline", "changes cpus to 1", ...).
    reasons: dict[str, str] = field(default_factory=dict)


# key: (type, allowed values or None, default)
_AXES: dict[str, tuple[type, tuple[Any, ...] | None, list[Any]]] = {
    "tf": (str, None, ["2.15.1", "2.16.2", "2.21.0"]),
    "device": (str, DEVICES, ["cpu"]),
    "recipe": (str, RECIPES, ["pip"]),
    "onednn": (bool, (True, False), [True]),
    "op_determinism": (bool, (True, False), [False]),
    "intra_op_threads": (int, None, [0]),
    "inter_op_threads": (int, None, [0]),
    "cpus": (int, None, [0]),
    "cpu_isa": (str, CPU_ISAS, ["native"]),
}
# How a person reads each axis and its values (the report's words).
AXIS_LABELS = {
    "tf": "TensorFlow",
    "device": "device",
    "recipe": "image recipe",
    "onednn": "oneDNN",
    "op_determinism": "op determinism",
    "intra_op_threads": "intra-op threads",
    "inter_op_threads": "inter-op threads",
    "cpus": "cores",
    "cpu_isa": "CPU instruction set",
    "host": "host",  # not a planned axis: the machine the records come from
}


def value_label(axis: str, value: Any) -> str:
    """'all cores' rather than 0, 'on' rather than True, 'TF default' rather than 0 threads."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if axis == "cpus":
        return "all cores" if value == 0 else f"{value} core{'s' if value != 1 else ''}"
    if axis.endswith("_threads"):
        return "TF default" if value == 0 else f"{value}"
    if axis == "cpu_isa" and value == "native":
        return "native (no cap)"
    return str(value)


def value_order(axis: str, value: Any) -> tuple[int, Any]:
    """Where a value sits on its axis, for pairing neighbours: versions and counts ascending, instruction
    sets oldest first with no cap last (CPU_ISAS, reversed), every value the axis accepts."""
    if axis == "cpu_isa" and value in CPU_ISAS:
        return (0, len(CPU_ISAS) - CPU_ISAS.index(value))
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*(\.post\d+)?", value):
        return (0, tuple(int(p) for p in re.findall(r"\d+", value)))
    return (1, str(value))


# Keys of [matrix] that choose cells rather than name an axis.
_DESIGN_KEYS = ("design", "crossed")
_RUN: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "scenarios": (list, ["init", "seeded_init", "dropout_training", "cnn_training"]),
    "repeats": (int, records.DEFAULT_REPEATS),
    "seed": (int, records.DEFAULT_SEED),
    "timeout": ((int, float), records.DEFAULT_TIMEOUT_S),
    "isolation": (str, records.DEFAULT_ISOLATION),
    "scenario_paths": (list, []),
    "record_bytes": (int, records.DEFAULT_RECORD_BYTES),
    "project": (str, ""),
    "requirements": (list, []),
}
# Environment overrides, for settings that differ per machine rather than per matrix.
_DOCKER_ENV = {
    "base_image": "REPROMATRIX_BASE_IMAGE",
    "extra_ca": "REPROMATRIX_EXTRA_CA",
    "index_url": "REPROMATRIX_INDEX_URL",
}


def _fail(source: Path, key: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{source.name}: {key} = {value!r} is not valid; {allowed}")


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; in a config file true is not 1.
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _check_keys(source: Path, table: str, given: dict[str, Any], allowed: list[str]) -> None:
    for key in given:
        if key not in allowed:
            raise _fail(source, f"[{table}].{key}", given[key], f"allowed keys: {', '.join(allowed)}")


def _axis(source: Path, name: str, raw: Any) -> list[Any]:
    kind, allowed, _ = _AXES[name]
    key = f"[matrix].{name}"
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise _fail(source, key, raw, "give at least one value")
    for value in values:
        if not _is(value, kind):
            raise _fail(source, key, value, f"each value must be {_type_name(kind)}")
        if allowed is not None and value not in allowed:
            raise _fail(source, key, value, f"allowed: {', '.join(map(str, allowed))}")
        if name == "tf" and not TF_VERSION.match(value):
            raise _fail(source, key, value, 'write a full TensorFlow 2 release, e.g. "2.16.2"')
        if name.endswith("_threads") and value < 0:
            raise _fail(source, key, value, "0 (TensorFlow's default) or a positive thread count")
        if name == "cpus" and value < 0:
            raise _fail(source, key, value, "0 (every core the host offers) or a positive number of cores")
    if len(set(values)) != len(values):
        raise _fail(source, key, raw, "values must not repeat")
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
    _check_keys(path, "top level", data, ["matrix", "run", "docker"])
    for table in ("matrix", "run", "docker"):
        if not isinstance(data.get(table, {}), dict):
            raise _fail(path, f"[{table}]", data[table], "it must be a table")
    axes_raw = dict(data.get("matrix", {}))
    _check_keys(path, "matrix", axes_raw, [*_AXES, *_DESIGN_KEYS])
    design = axes_raw.pop("design", "factorial")
    crossed = axes_raw.pop("crossed", [])
    if design not in DESIGNS:
        raise _fail(path, "[matrix].design", design, f"allowed: {', '.join(DESIGNS)}")
    if not isinstance(crossed, list) or any(name not in _AXES for name in crossed):
        bad = crossed if not isinstance(crossed, list) else [n for n in crossed if n not in _AXES]
        raise _fail(path, "[matrix].crossed", bad, f"a list of axes from: {', '.join(_AXES)}")
    if crossed and design != "one-at-a-time":
        raise _fail(path, "[matrix].crossed", crossed, 'crossed axes only mean something with design = "one-at-a-time"')
    axes = {name: _axis(path, name, axes_raw.get(name, spec[2])) for name, spec in _AXES.items()}

    run_raw = data.get("run", {})
    _check_keys(path, "run", run_raw, list(_RUN))
    run = {}
    for name, (kind, default) in _RUN.items():
        value = run_raw.get(name, default)
        if not _is(value, kind):
            raise _fail(path, f"[run].{name}", value, f"it must be {_type_name(kind)}")
        run[name] = value
    if run["repeats"] < 1:
        raise _fail(path, "[run].repeats", run["repeats"], "at least 1 (2 or more to test run-to-run)")
    if run["isolation"] not in records.ISOLATIONS:
        raise _fail(path, "[run].isolation", run["isolation"], f"allowed: {', '.join(records.ISOLATIONS)}")
    if not all(isinstance(r, str) and r.strip() for r in run["requirements"]):
        raise _fail(
            path, "[run].requirements", run["requirements"], 'a list of requirement strings, e.g. ["einops==0.8.2"]'
        )
    project = None
    if run["project"]:
        project = (path.parent / Path(run["project"]).expanduser()).resolve()
        if not ((project / "pyproject.toml").is_file() or (project / "setup.py").is_file()):
            how = f"{project} has no pyproject.toml or setup.py; give the folder of a pip-installable project"
            raise _fail(path, "[run].project", run["project"], how)
    if run["record_bytes"] < 0:
        raise _fail(path, "[run].record_bytes", run["record_bytes"], "0 (sample every large array) or more bytes")
    if run["timeout"] <= 0:
        raise _fail(path, "[run].timeout", run["timeout"], "a positive number of seconds")
    if not run["scenarios"] or not all(isinstance(s, str) for s in run["scenarios"]):
        raise _fail(path, "[run].scenarios", run["scenarios"], "a non-empty list of scenario names")
    if known_scenarios is not None:
        check_scenarios(path, run["scenarios"], known_scenarios)

    docker_raw = data.get("docker", {})
    settings = {f.name: f for f in fields(DockerSettings)}
    _check_keys(path, "docker", docker_raw, list(settings))
    docker_values: dict[str, Any] = {}
    for name, setting in settings.items():
        value = docker_raw.get(name, setting.default)
        kind: type | tuple[type, ...] = (int, float) if isinstance(setting.default, float) else type(setting.default)
        if not _is(value, kind):
            raise _fail(path, f"[docker].{name}", value, f"it must be {_type_name(kind)}")
        docker_values[name] = os.environ.get(_DOCKER_ENV[name], value) if name in _DOCKER_ENV else value
    if not MEMORY.match(str(docker_values["memory"])):
        raise _fail(path, "[docker].memory", docker_values["memory"], 'a size such as "4g" or "512m"')
    if docker_values["cpus"] <= 0 or docker_values["pids"] < 16:
        raise _fail(path, "[docker].cpus/pids", (docker_values["cpus"], docker_values["pids"]), "cpus > 0, pids ≥ 16")

    chosen = design_cells(axes, design, crossed)
    cells = tuple(chosen)
    return Matrix(
        cells=cells,
        scenarios=tuple(run["scenarios"]),
        repeats=run["repeats"],
        seed=run["seed"],
        timeout=float(run["timeout"]),
        isolation=run["isolation"],
        record_bytes=run["record_bytes"],
        project=project,
        requirements=tuple(r.strip() for r in run["requirements"]),
        scenario_paths=_scenario_paths(path, run["scenario_paths"]),
        docker=DockerSettings(**docker_values),
        source=path,
        design=design,
        reasons={cell.id: why for cell, why in chosen.items()},
    )


def check_scenarios(source: Path, names: list[str] | tuple[str, ...], known: list[str], key: str = "") -> None:
    for name in names:
        if name not in known:
            raise _fail(source, key or "[run].scenarios", name, f"known scenarios: {', '.join(known)}")


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


def design_cells(axes: dict[str, list[Any]], design: str, crossed: list[str]) -> dict[Cell, str]:
    """The cells of the design, each with why it is there (insertion-ordered, no duplicates).

    factorial: every combination. one-at-a-time: a baseline (every axis at its first value)
    and every cell that changes one axis alone; crossed axes are combined in full, and each
    of their combinations gets its own baseline and single changes.
    """
    if design == "factorial":
        return {Cell(**dict(zip(axes, combo, strict=True))): "factorial" for combo in itertools.product(*axes.values())}
    baseline = {name: values[0] for name, values in axes.items()}
    chosen: dict[Cell, str] = {}
    for combo in itertools.product(*(axes[name] for name in crossed)):
        point = {**baseline, **dict(zip(crossed, combo, strict=True))}
        where = ", ".join(f"{name}={_show(point[name])}" for name in crossed)
        chosen.setdefault(Cell(**point), f"baseline ({where})" if crossed else "baseline")
        for name, values in axes.items():
            if name in crossed:
                continue
            for value in values[1:]:
                why = f"changes {name} to {_show(value)}" + (f" (at {where})" if crossed else "")
                chosen.setdefault(Cell(**{**point, name: value}), why)
    return chosen


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


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
        present = sorted({getattr(cell, attribute) for cell in chosen})
        unknown = [value for value in wanted if value not in present]
        if unknown:
            raise ConfigurationError(
                f"{option} {','.join(unknown)}: not in the matrix; available: {', '.join(present) or 'none'}"
            )
        chosen = [cell for cell in chosen if getattr(cell, attribute) in wanted]
    return chosen
