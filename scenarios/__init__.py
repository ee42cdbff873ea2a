"""Reproducibility scenarios and the harness that runs them in fresh processes.

A scenario is a module in this folder (its name not starting with `_`) that
defines, at module level:

- `VARIANTS`: a tuple literal of variant names, from "unseeded" and "seeded";
- `run(variant, seed)`: builds two models the same way and returns
  `{"model1": {"predictions": array, "weights": array}, "model2": {...}}`.

Discovery reads the source (no import), so planning a matrix never pays for
importing TensorFlow. See docs/scenarios.md for a worked example.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

SCENARIOS_DIR = Path(__file__).resolve().parent
KNOWN_VARIANTS = ("unseeded", "seeded")
# Files every scenario process executes besides the scenario's own module: a
# change to any of them can change the bits, so they are part of the reuse key.
SHARED_SOURCES = ("_common.py", "_records.py", "_worker.py")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    variants: tuple[str, ...]
    summary: str
    problem: str | None = None  # why the module does not follow the contract


def _inspect(path: Path) -> Scenario:
    name = path.stem
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        return Scenario(name, path, (), "", problem=f"cannot be parsed: {exc}")
    summary = (ast.get_docstring(tree) or "").strip().splitlines()[:1]
    variants: object = None
    has_run = False
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "VARIANTS" for target in node.targets
        ):
            try:
                variants = ast.literal_eval(node.value)
            except ValueError:
                variants = None
        elif isinstance(node, ast.FunctionDef) and node.name == "run":
            has_run = True
    valid = isinstance(variants, (tuple, list)) and bool(variants) and all(v in KNOWN_VARIANTS for v in variants)
    info = Scenario(name, path, tuple(variants) if valid else (), summary[0] if summary else "")
    if not valid:
        return replace(info, problem=f"VARIANTS must be a literal tuple drawn from {KNOWN_VARIANTS}, got {variants!r}")
    if not has_run:
        return replace(info, problem="defines no top-level run(variant, seed)")
    return info


def discover(directory: Path = SCENARIOS_DIR) -> dict[str, Scenario]:
    """Every scenario module in `directory`, by name, including ones that break the contract."""
    return {path.stem: _inspect(path) for path in sorted(directory.glob("*.py")) if not path.name.startswith("_")}


def source_digest(scenario: Scenario) -> str:
    sha = hashlib.sha256()
    for path in (scenario.path, *(scenario.path.parent / name for name in SHARED_SOURCES)):
        sha.update(path.name.encode() + b"\0")
        sha.update(path.read_bytes() if path.is_file() else b"")
    return sha.hexdigest()


def reuse_key(environment_key: str, scenario: Scenario, variant: str, seed: int | None) -> str:
    """Identifies everything that decides a repeat's bits; equal keys mean the record can be reused."""
    parts = (environment_key, scenario.name, variant, repr(seed), source_digest(scenario))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
