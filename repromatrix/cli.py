"""`python -m repromatrix COMMAND`: what the nox sessions call.

Every FatalError is caught here, once, and printed as one line with its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from repromatrix import cleanup, commands, envaxes, locks, matrix, nightly, options, progress, results, runner
from repromatrix.backends import Backend, cache_dir
from repromatrix.backends.container import DockerBackend, DockerEngine
from repromatrix.backends.local import LocalBackend
from repromatrix.errors import (
    CellsFailedError,
    ConfigurationError,
    ExpectationsBrokenError,
    FatalError,
    Interrupted,
    LockError,
)
from repromatrix.extras import Extras
from repromatrix.harness import hosts
from repromatrix.harness.axes import Cell, is_nightly
from repromatrix.harness.catalog import Scenario, ScenarioClash, builtin_dir, discover, staged_files
from repromatrix.harness.hosts import Host
from repromatrix.harness.records import Isolation
from repromatrix.matrix import Matrix
from repromatrix.session import EXIT_CODE_FILE

# Each command, its help, and the option groups (options.py) whose flags it takes.
COMMAND_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "plan": ("list the cells", ("selection",)),
    "build": ("build the images (or virtualenvs) of the cells", ("selection", "environment")),
    "run": ("run the missing repeats of the cells", ("selection", "environment", "running", "overrides")),
    "matrix": ("plan, build, run and report", ("selection", "environment", "running", "overrides", "reporting",
                                                "explaining")),
    "shell": ("run a command in one cell's environment: its virtualenv, or its image, hardened",
              ("selection", "environment")),
    "report": ("render the report of one or more results folders", ("reporting",)),
    "lock": ("regenerate docker/locks/ for the matrix's TF versions", ("selection", "lock")),
    "base-image": ("build a base image from Debian's packages (no registry)", ()),
    "bench": ("measure warm re-runs, orchestration overhead, cached builds",
              ("selection", "environment", "overrides", "bench")),
    "advise": ("what to change: measured settings that make the cells agree across cpus, host or tf, with their cost",
               ("selection", "environment", "running", "overrides", "reporting", "advise")),
    "explain": ("re-run two sides traced: the first training step, variable and op where their bits part",
                ("selection", "environment", "overrides")),
}  # fmt: skip
# A command's own default for an option (bench measures into its own folder).
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {"bench": {"results": Path("results/bench")},
                                               "advise": {"results": Path("results/advise")}}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="repromatrix", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    made = {}
    for name, (help_text, groups) in COMMAND_GROUPS.items():
        made[name] = command = commands.add_parser(name, help=help_text)
        for group in groups:
            options.add_to(command, group, **COMMAND_DEFAULTS.get(name, {}))
    # Arguments of one command alone.
    made["plan"].add_argument("--format", choices=("text", "json"), default="text", help="json: for CI's fan-out")
    made["plan"].add_argument("--output", type=Path, help="write the list here instead of printing it")
    made["plan"].add_argument("--runners", type=options.csv, default=["ubuntu-24.04"], metavar="LABEL,...",
                              help="json: one job per cell per runner label (hosts); CUDA cells once, on the GPU "
                              "runner")  # fmt: skip
    made["shell"].add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                               help="what to run (default: python)")  # fmt: skip
    made["report"].add_argument("results_dirs", nargs="+", type=Path, metavar="RESULTS_DIR")
    made["base-image"].add_argument("name", nargs="?", default="repromatrix/debian-python:bookworm")
    made["advise"].add_argument("results_dirs", nargs="*", type=Path, metavar="RESULTS_DIR",
                                help="advise from these results folders or report.json files (several hosts' say); "
                                "nothing runs")  # fmt: skip
    made["base-image"].add_argument("suite", nargs="?", help="Debian release (default: the name's tag when it is one, "
                                    "e.g. :trixie for Python 3.13, else bookworm)")  # fmt: skip
    from repromatrix import explain

    explain.add_arguments(made["explain"])
    return top


def load_plan(args: argparse.Namespace) -> tuple[Matrix, list[Cell], dict[str, Scenario]]:
    """matrix.toml with the command line's overrides, the selected cells, and every scenario they can run."""
    loaded = matrix.load(args.matrix)
    given = options.overrides(args)
    folders = list(loaded.scenario_paths)
    for folder in given.pop("scenario_paths", []):  # beside matrix.toml's, relative to here
        if not folder.is_dir():
            raise ConfigurationError(f"--scenarios {folder}: no such folder; give a folder of scenario modules")
        folders.append(folder.resolve())
    try:
        found = commands.add_to(discover(builtin_dir(), *folders), loaded.commands)
        staged_files(folders, loaded.projects)  # what every cell will hold: no clash, not too large
    except ScenarioClash as exc:
        raise ConfigurationError(str(exc)) from None
    matrix.check_scenarios(loaded.source, loaded.scenarios, list(found))
    if "scenarios" in given:
        matrix.check_scenarios(loaded.source, given["scenarios"], list(found), flag="--scenario")
    for name, value in given.items():
        option = options.BY_NAME[name]
        problem = option.check(value)
        if problem:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            raise ConfigurationError(f"{option.flags[-1]} {shown}: not valid; {problem}")
    run: dict[str, Any] = {
        name: tuple(v) if isinstance(v, list) else v
        for name, v in given.items()
        if options.BY_NAME[name].table == "run"
    }
    if "isolation" in run:
        run["isolation"] = Isolation(run["isolation"])
    docker = {name: value for name, value in given.items() if options.BY_NAME[name].table == "docker"}
    loaded = replace(loaded, docker=replace(loaded.docker, **docker), scenario_paths=tuple(folders), **run)
    if getattr(args, "nightly", False):  # one cell beside the newest release, on the newest tf-nightly
        loaded = envaxes.beside_newest(loaded, nightly.resolve(cache_dir(), loaded.docker.index_url).version)
    cells = matrix.select(loaded.cells, tf=args.tf, device=args.device, cell_ids=args.cell)
    return loaded, cells, found


def choose_backend(args: argparse.Namespace, loaded: Matrix, cells: list[Cell]) -> Backend:
    """The backend --backend names (auto: Docker when an engine answers), checked before anything is built."""
    backend = _backend(args, loaded)
    if isinstance(backend, DockerBackend):
        backend.require_bases(cells)
    return backend


def _backend(args: argparse.Namespace, loaded: Matrix) -> Backend:
    extras = Extras(loaded.project, loaded.requirements)
    local = LocalBackend(index_url=loaded.docker.index_url, verbose=args.verbose, scenario_dirs=loaded.scenario_paths,
                         extras=extras, projects=loaded.projects)  # fmt: skip
    if args.backend == "local":
        progress.say("backend: local (chosen with --backend local)")
        return local
    engine = DockerEngine()
    docker = DockerBackend(settings=loaded.docker, engine=engine, verbose=args.verbose,
                           scenario_dirs=loaded.scenario_paths, extras=extras, projects=loaded.projects)  # fmt: skip
    if args.backend == "docker":
        engine.client()  # raises EngineUnavailableError with how to start one
        progress.say("backend: docker (chosen with --backend docker)")
        return docker
    reason = engine.reachable()
    if reason is None:
        progress.say("backend: docker (a Docker engine answers; --backend local to use virtualenvs instead)")
        return docker
    progress.say(f"backend: local ({reason})")
    return local


def fan_out(loaded: Matrix, cells: list[Cell], runners: list[str]) -> list[dict[str, str]]:
    """CI's jobs: each CPU cell on each runner label (a host each, named by its label), each CUDA cell
    once on the GPU runner. The artifact name is unique per job, so the report keeps every host."""
    for label in runners:
        problem = hosts.check_label(label)
        if problem:
            raise ConfigurationError(f"--runners {label}: not a usable runner label; {problem}")
    jobs = []
    for label in runners:
        for cell in cells:
            if cell.device == "cuda" and label != runners[0]:
                continue
            host = "gpu" if cell.device == "cuda" else label
            if is_nightly(cell.tf) and label != runners[0]:  # one nightly cell, beside the newest release
                continue
            jobs.append({"id": cell.id, "session": f"cell({cell.id})", "device": cell.device,
                         "why": loaded.reasons[cell.id], "runner": host,
                         "artifact": f"results-{cell.id}-{host}"})  # fmt: skip
            if is_nightly(cell.tf):  # its pin travels with its job, whose planner pins "nightly" the same
                jobs[-1]["tf_nightly"] = f"{nightly.package_for(cell.tf)}=={cell.tf}"
    return jobs


def this_host(label: str | None) -> Host:
    """This machine's fingerprint, labelled by --host, $REPROMATRIX_HOST or its CPU; a bad label is exit 2."""
    host = hosts.fingerprint(label=label)
    problem = hosts.check_label(host.label)
    if problem:
        given = f"--host {label}" if label else f"${hosts.HOST_ENV}={host.label}"
        raise ConfigurationError(f"{given}: not a usable host label; {problem}")
    return host


def do_run(args: argparse.Namespace) -> list[runner.CellOutcome]:
    loaded, cells, found = load_plan(args)
    if args.jobs < 1:
        raise ConfigurationError(f"--jobs {args.jobs}: must be 1 or more")
    backend = choose_backend(args, loaded, cells)
    progress.say(f"{len(cells)} cells × {len(runner.planned_repeats(loaded, found))} repeats → {args.results}")
    if loaded.repeats < 2:
        progress.warn(
            f"warning: {loaded.repeats} repeat per variant: run to run cannot be judged (it needs two independent "
            "processes); the report marks it untested. Use --repeats 2 or more."
        )
    host = this_host(args.host)
    progress.say(f"host: {hosts.describe(host)}")
    options = runner.RunOptions(
        results=args.results, jobs=args.jobs, force=args.force, verbose=args.verbose, wait=args.wait, host=host
    )
    outcomes = runner.run_matrix(backend, loaded, cells, options, found)
    started = sum(outcome.started for outcome in outcomes)
    shown = (runner.CellState.RAN, runner.CellState.UP_TO_DATE, runner.CellState.SKIPPED, runner.CellState.ERROR)
    states = {state: sum(o.state == state for o in outcomes) for state in shown}
    progress.say(f"scenario processes started: {started}; cells: " + ", ".join(f"{n} {s}" for s, n in states.items()))
    return outcomes


def report_folder(results_dirs: list[Path], out: Path | None) -> Path:
    """Where the report goes: --out, else reports/<name of the first results folder>."""
    return out or options.DEFAULT_REPORTS / results_dirs[0].name


def check_report_folder(results_dirs: list[Path], out: Path | None) -> None:
    """An --out that cannot be written is exit 2 before anything runs, not after the whole run."""
    results.ensure_writable(report_folder(results_dirs, out), "--out", keep=False)


def do_report(results_dirs: list[Path], baseline: Path | None, out: Path | None, history: Path | None = None) -> int:
    """Render and write every report file; returns how many expectations broke."""
    from repromatrix.reporting import render_all, text

    destination = report_folder(results_dirs, out)
    previous = history if history is not None and history != Path("-") and history.is_file() else None
    report = render_all(results_dirs, destination, baseline=baseline, history=previous,
                        keep_history=history is not None)  # fmt: skip
    progress.say(text.terminal(report))
    progress.say(f"report written to {destination}/ (report.md, report.html, report.json, report.csv)")
    return report.expectations_broken


def _broken(count: int) -> None:
    if count:
        raise ExpectationsBrokenError(
            f"{count} expectation{'s' if count != 1 else ''} broke (see Findings); every report file is written"
        )


def _failed(outcomes: list[runner.CellOutcome]) -> None:
    failed = [o for o in outcomes if o.state == runner.CellState.ERROR]
    if failed:
        names = ", ".join(o.cell.id for o in failed)
        raise CellsFailedError(f"{len(failed)} of {len(outcomes)} cells had errors ({names}); see the lines above")


def _note_exit_code(code: int) -> int:
    """For the noxfile: nox reports any failure as 1, so the session reads the real code here."""
    path = os.environ.get(EXIT_CODE_FILE)
    if path:
        Path(path).write_text(f"{code}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    return _note_exit_code(_main(argv))


def cmd_plan(args: argparse.Namespace) -> int:
    loaded, cells, _ = load_plan(args)
    if args.format == "json":
        listing = json.dumps(fan_out(loaded, cells, args.runners))
    else:
        width = max((len(c.id) for c in cells), default=0)
        listing = "\n".join(
            [f"{len(cells)} cells ({loaded.design} design)"]
            + [f"{c.id:{width}}  {loaded.reasons[c.id]}" for c in cells]
        )
    if args.output:
        results.ensure_writable(args.output.parent, "--output")
        args.output.write_text(listing + "\n")
    else:
        progress.say(listing)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    loaded, cells, _ = load_plan(args)
    failures = runner.build_all(choose_backend(args, loaded, cells), cells, args.verbose)
    if failures:
        raise CellsFailedError(f"{len(failures)} image builds failed: {', '.join(c.id for c, _ in failures)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _failed(do_run(args))
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    if args.explain < 0 or args.explain_budget <= 0:
        raise ConfigurationError(f"--explain {args.explain} --explain-budget {args.explain_budget:g}: give a count "
                                 "of pairs ≥ 0 and a budget in seconds > 0")  # fmt: skip
    check_report_folder([args.results], args.out)
    outcomes = do_run(args)
    if args.explain:
        from repromatrix import explain

        explain.after_matrix(args, report_folder([args.results], args.out))
    broken = do_report([args.results], args.baseline, args.out, args.history)
    _failed(outcomes)  # cells that failed outrank broken expectations; every file is written either way
    _broken(broken)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    check_report_folder(args.results_dirs, args.out)
    _broken(do_report(args.results_dirs, args.baseline, args.out, args.history))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    loaded, cells, _ = load_plan(args)
    index_url = loaded.docker.index_url
    failed = []
    # Per (tf, device, python, keras); a nightly is pinned per run and package pins are laid over a lock
    # when a cell needs them: neither is committed.
    wanted = {(c.tf, c.device, c.python, c.keras) for c in cells
              if c.recipe == "pip" and not is_nightly(c.tf) and envaxes.skip_reason(c) is None}  # fmt: skip
    for tf, device, python, keras in sorted(wanted):
        name = locks.lock_name(tf, device, python, keras)
        what = f"{locks.requirement(tf, device)}" + (" + tf-keras" if keras != "3" else "") + f" (Python {python})"
        try:
            path = locks.generate(tf, device, locks.LOCK_DIR / name, index_url, python, keras)
        except LockError as exc:
            progress.warn(f"error: {exc.message}")
            failed.append(what)
            continue
        progress.say(f"locked {what} → {path}")
    if failed:
        raise CellsFailedError(f"{len(failed)} locks could not be resolved: {', '.join(failed)}")
    return 0


def cmd_base_image(args: argparse.Namespace) -> int:
    script = matrix.RECIPES_DIR / "base" / "build-debian-base.sh"
    tag = args.name.rpartition(":")[2]
    suite = args.suite or (tag if tag in envaxes.DEBIAN_PYTHON.values() else "bookworm")
    return subprocess.run(["bash", str(script), args.name, suite], check=False).returncode


def cmd_shell(args: argparse.Namespace) -> int:
    loaded, cells, _ = load_plan(args)
    if len(cells) != 1:
        raise ConfigurationError(
            f"shell needs exactly one cell (--cell ID), the selection has {len(cells)}; see nox -s plan"
        )
    command = (args.argv[1:] if args.argv[:1] == ["--"] else args.argv) or ["python"]
    return choose_backend(args, loaded, cells).shell(cells[0], command, Path.cwd())


def cmd_bench(args: argparse.Namespace) -> int:
    from repromatrix import bench

    loaded, cells, _ = load_plan(args)
    bench.run(choose_backend(args, loaded, cells), loaded, cells, args.results, args.jobs)
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    from repromatrix import advise

    return advise.command(args)


def cmd_explain(args: argparse.Namespace) -> int:
    from repromatrix import explain

    return explain.command(args)


# Every command the parser declares, and what runs it: its exit code, or a FatalError's.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": cmd_plan,
    "build": cmd_build,
    "run": cmd_run,
    "matrix": cmd_matrix,
    "report": cmd_report,
    "lock": cmd_lock,
    "base-image": cmd_base_image,
    "shell": cmd_shell,
    "bench": cmd_bench,
    "advise": cmd_advise,
    "explain": cmd_explain,
}


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    cleanup.handle_termination()
    try:
        return COMMANDS[args.command](args)
    except FatalError as exc:
        progress.warn(f"error: {exc.message}")
        return exc.return_code
    except KeyboardInterrupt as exc:
        cleanup.stop_everything()  # idempotent: the runner may have done it already
        why = f" ({exc.args[0]})" if exc.args else ""
        progress.warn(f"interrupted{why}; containers removed, records written so far are kept, run again to resume")
        _note_exit_code(Interrupted.return_code)
        sys.stdout.flush()
        sys.stderr.flush()
        # Not waiting for worker threads: one may sit in an image build for minutes. Leaving
        # closes its connection, and the engine cancels a build whose client went away.
        os._exit(Interrupted.return_code)
