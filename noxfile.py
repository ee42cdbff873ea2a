"""Thin glue: every session calls `python -m repromatrix ...` (package code) with the posargs.

nox -s matrix                      the whole job: plan → build → run → report
nox -s matrix -- --tf 2.21.0 --device cpu --backend local --jobs 2
nox -s "cell(tf2.16.2-cpu-onednn1-det0)"   exactly one cell (what CI fans out)
nox -s shell -- --cell ID -- python x.py   a command in one cell's virtualenv or image
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from repromatrix import envaxes, nightly  # noqa: E402
from repromatrix import matrix as matrix_toml  # noqa: E402  (needs ROOT on sys.path)
from repromatrix import session as orchestrator  # noqa: E402

try:
    CELL_IDS = [cell.id for cell in matrix_toml.load(ROOT / "matrix.toml").cells]
    # CI's nightly job: the plan job pinned the nightly ($REPROMATRIX_TF_NIGHTLY), its cell is one session more.
    NIGHTLY_IDS = [
        cell.id
        for cell in envaxes.beside_newest(matrix_toml.load(ROOT / "matrix.toml"), nightly.resolve(Path()).version).cells
        if cell.id not in CELL_IDS
    ] if os.environ.get(nightly.NIGHTLY_ENV) else []  # fmt: skip
except matrix_toml.ConfigurationError as exc:  # nox -l must still work; `nox -s matrix` reports the error
    print(f"warning: {exc.message}; no per-cell sessions", file=sys.stderr)
    CELL_IDS, NIGHTLY_IDS = [], []
CELL_IDS += NIGHTLY_IDS


def repromatrix(session: nox.Session, *args: str) -> None:
    """Run the command and exit with its own code; SIGTERM, SIGINT or SIGHUP to nox stop it cleanly."""
    session.install("-e", ".")
    code = orchestrator.run(session.bin, [*args, *session.posargs], session.log)
    if code:
        session.log(f"repromatrix exited with code {code} (README: exit codes)")
        sys.exit(code)


@nox.session(default=False)
def matrix(session: nox.Session) -> None:
    """Plan, build, run and report the matrix (Docker if an engine answers, else local virtualenvs)."""
    repromatrix(session, "matrix")


@nox.session(default=False)
def plan(session: nox.Session) -> None:
    """List the cells of matrix.toml (--format json for CI's fan-out)."""
    repromatrix(session, "plan")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build the images (or virtualenvs) of the selected cells."""
    repromatrix(session, "build")


@nox.session(default=False)
def run(session: nox.Session) -> None:
    """Run the missing repeats of the selected cells, without a report."""
    repromatrix(session, "run")


@nox.session(default=False)
@nox.parametrize("cell", CELL_IDS, ids=CELL_IDS)
def cell(session: nox.Session, cell: str) -> None:
    """Run exactly one cell into results/cells/<id> (one CI job per cell)."""
    nightly_cell = ["--nightly"] if cell in NIGHTLY_IDS else []
    repromatrix(session, "run", "--cell", cell, "--results", f"results/cells/{cell}", *nightly_cell)


@nox.session(default=False)
def shell(session: nox.Session) -> None:
    """Run a command in one cell's environment: nox -s shell -- --cell ID -- python my_scenario.py."""
    repromatrix(session, "shell")


@nox.session(default=False)
def report(session: nox.Session) -> None:
    """Render the report: nox -s report -- RESULTS_DIR [...] [--baseline PATH] [--out DIR]."""
    repromatrix(session, "report")


@nox.session(default=False)
def advise(session: nox.Session) -> None:
    """What to change: nox -s advise -- --across cpus [--scenario X] [--plan] (settings that make cells agree)."""
    repromatrix(session, "advise")


@nox.session(default=False)
def version_sweep(session: nox.Session) -> None:
    """Regenerate docs/version-sweep/ from a real run: every TF line 2.12–2.21 × oneDNN on/off × Keras 3/2."""
    repromatrix(session, "matrix", "--matrix", "docs/version-sweep/matrix.toml", "--backend", "local",
                "--results", "results/version-sweep", "--out", "docs/version-sweep")  # fmt: skip


@nox.session(default=False)
def lock(session: nox.Session) -> None:
    """Regenerate the hash-pinned lock files in docker/locks/."""
    repromatrix(session, "lock")


@nox.session(default=False)
def base_image(session: nox.Session) -> None:
    """Build a Debian base image from Debian's packages, for engines that cannot pull."""
    repromatrix(session, "base-image")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Print warm re-run time, orchestration overhead and cached-build figures (not a test)."""
    repromatrix(session, "bench")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (real TensorFlow; a real Docker engine, required when CI=true)."""
    session.install("-e", ".[test,lint]")
    session.run("pytest", *session.posargs)


# What `nox -s unit` leaves out (pyproject.toml declares the markers).
HEAVY = ("tf", "docker", "browser", "lint", "slow")


@nox.session
def unit(session: nox.Session) -> None:
    """The fast tier: every test that needs no TensorFlow, Docker, browser or network (well under a minute)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", " and ".join(f"not {marker}" for marker in HEAVY), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff; mypy over the whole package; actionlint, zizmor and the workflow schema on .github/workflows."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # From outside the checkout: its ./repromatrix would stand in for the installed package, which is the one
    # holding repromatrix.scenarios and repromatrix.reporting where their names say.
    with session.chdir(session.create_tmp()):
        session.run("mypy", "-p", "repromatrix", "--config-file", str(ROOT / "pyproject.toml"))
    session.run("python", "-m", "repromatrix.workflow_lint", *session.posargs)
