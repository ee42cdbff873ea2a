"""A command scenario's repeat, inside the cell: run the user's own command, read every file it wrote.

The repeat's process (a fresh interpreter or a fork, as for any scenario: the same timeout, memory,
cores and hardening) runs the command as its child, from the project folder staged into the cell
(`repromatrix/projects/<key>/`), with the cell's knobs: the environment variables are its own, and
the knobs that are TF calls (op determinism, thread pools) are made in every Python process the
command starts, as TensorFlow finishes loading (`command_site`, through a generated
`sitecustomize`). `{out}` is an empty folder of this repeat's own; `{seed}` the repeat's seed.
For an unseeded variant, an argument holding `{seed}` is dropped, and a bare `{seed}` takes the flag
before it along (`--seed {seed}` is left out whole), so the script runs as it does without a seed.

A command that exits non-zero, is killed, or writes nothing ends this process with a one-line reason
after the command's own stderr (which passes through as it is written, so a timeout keeps it too):
the harness makes that an error record. Standard library only, besides what `measure` is handed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import command_site, exchange, saved_files
from .launch import COMMAND_SAYS

SEED = "{seed}"
OUT = "{out}"
PLACEHOLDERS = (SEED, OUT)
# Under the staged package: one folder per project a command runs from.
PROJECTS = "projects"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# How much of the command's stderr the one-line reason quotes from.
TAIL_CHARS = 4000
PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


def project_key(folder: Path) -> str:
    """The staged folder's name: the project folder's name, and a digest of where it is (two projects of
    one name never share a folder)."""
    folder = folder.resolve()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name) or "project"
    return f"{name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


def project_dir(key: str) -> Path:
    """Where a staged project is in this cell."""
    return PACKAGE_DIR / PROJECTS / key


def arguments(command: tuple[str, ...] | list[str], seed: int | None, out: str) -> list[str]:
    """The command with `{seed}` and `{out}` filled in (for an unseeded variant: the seed left out)."""
    argv: list[str] = []
    for part in command:
        if SEED in part and seed is None:
            if part == SEED and argv and argv[-1].startswith("-") and len(argv) > 1:
                argv.pop()  # `--seed {seed}`: the flag goes with its value
            continue
        argv.append(part.replace(SEED, str(seed)).replace(OUT, out))
    return argv


def interpreter(argv: list[str]) -> list[str]:
    """`python` means this cell's interpreter (the one with its TensorFlow), whatever PATH says."""
    if argv and PYTHON.match(argv[0]):
        return [sys.executable, *argv[1:]]
    return argv


@dataclass
class Ran:
    """How the command ended, and the end of what it said on stderr."""

    returncode: int
    seconds: float
    tail: str = ""
    knobs_seen: list[dict[str, Any]] = field(default_factory=list)


class CommandFailed(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _pdeathsig() -> Any:
    """What the command's child runs before it execs: it dies with this process (a repeat killed for its
    timeout takes the command along). Loaded before the fork: a child of a threaded parent must do little."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tee(stream: Any, tail: list[str]) -> None:
    """The command's stderr, passed on to this process's own as it comes, its end kept for the reason."""
    kept = ""
    for chunk in iter(lambda: stream.read1(8192), b""):
        os.write(2, chunk)
        kept = (kept + chunk.decode(errors="replace"))[-TAIL_CHARS:]
    tail.append(kept)


def run(spec: exchange.RepeatSpec, out: Path, scratch: Path) -> Ran:
    """Run the repeat's command from its project folder, `out` as `{out}`; its stderr passes through."""
    cwd = project_dir(spec.project)
    if not cwd.is_dir():
        raise CommandFailed(f"the project folder {spec.project} is not staged in this cell")
    argv = interpreter(arguments(spec.command, spec.seed, str(out)))
    site = scratch / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import {command_site.__name__}\n")
    seen = scratch / "knobs-seen.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join(filter(None, [os.path.dirname(sys.executable), os.environ.get("PATH")])),
        command_site.KNOBS_ENV: json.dumps(spec.knobs.to_json()),
        command_site.SEEN_ENV: str(seen),
    }
    started = time.perf_counter()
    sys.stderr.flush()
    try:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   preexec_fn=_pdeathsig())  # fmt: skip
    except OSError as exc:
        raise CommandFailed(f"the command could not start: {argv[0]}: {exc.strerror}") from None
    tail: list[str] = []
    reader = threading.Thread(target=_tee, args=(process.stderr, tail), daemon=True)
    reader.start()
    returncode = process.wait()
    reader.join()
    ran = Ran(returncode, time.perf_counter() - started, tail[0] if tail else "")
    with contextlib.suppress(OSError, ValueError):
        ran.knobs_seen = [json.loads(line) for line in seen.read_text().splitlines() if line.strip()]
    return ran


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "it printed nothing on stderr"


def shown(command: tuple[str, ...] | list[str]) -> str:
    return " ".join(command)


def check(spec: exchange.RepeatSpec, ran: Ran, out: Path) -> None:
    """CommandFailed unless the command exited 0 and left something under `{out}`."""
    if ran.returncode < 0:
        name = signal.Signals(-ran.returncode).name
        raise CommandFailed(f"the command `{shown(spec.command)}` was killed by {name}: {last_line(ran.tail)}")
    if ran.returncode != 0:
        code = ran.returncode if 0 < ran.returncode < 126 else 1
        raise CommandFailed(
            f"the command `{shown(spec.command)}` failed (exit code {ran.returncode}): {last_line(ran.tail)}", code
        )
    if not any(path.is_file() for path in out.rglob("*")):
        raise CommandFailed(
            f"the command `{shown(spec.command)}` exited 0 but wrote nothing under {OUT}: save the model, its "
            f"weights or its predictions there"
        )


def measure(spec: exchange.RepeatSpec, np: Any, tf: Any) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Run the command and read what it wrote: the arrays, what the record says of the command, its seconds.
    A failure ends this process (after the command's stderr) with the reason as its last line."""
    scratch = Path(tempfile.mkdtemp(prefix="repromatrix-command-"))
    out = scratch / "out"
    out.mkdir()
    try:
        ran = run(spec, out, scratch)
        check(spec, ran, out)
        saved = saved_files.read_folder(out, np, tf)
    except CommandFailed as failed:
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"{COMMAND_SAYS}{failed.message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(failed.code)  # the command's own code; the message is the line the record quotes
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    about = {
        "argv": list(spec.command),
        "ran": arguments(spec.command, spec.seed, OUT),
        "project": spec.project,
        "returncode": ran.returncode,
        "knobs_seen": ran.knobs_seen,
        **saved.describe(),
    }
    return saved.arrays, about, ran.seconds
