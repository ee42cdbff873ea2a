"""What the noxfile's sessions do: run `python -m repromatrix` as a child that stops when nox is told to.

nox's own `session.run` only waits for its child on Ctrl-C (it expects the terminal to have sent
the child the same SIGINT) and does nothing on SIGTERM: a scheduler's or CI runner's SIGTERM to
nox's pid killed nox and left the orchestrator running on with its containers and the results
lock. Here the child runs in a process group of its own, so exactly one signal reaches it — the
one nox was sent, forwarded once — and it cannot outlive nox (it gets SIGTERM when nox dies, even
of SIGKILL). Standard library only: the noxfile imports it before any virtualenv exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

# The orchestrator writes its exit code here too: nox itself would report any failure as 1.
EXIT_CODE_FILE = "REPROMATRIX_EXIT_CODE_FILE"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Time the orchestrator gets to remove its containers and write what it measured after a signal;
# it needs well under a second, but a container removal waits for the engine.
GRACE_S = 60.0
INTERRUPTED = 130  # errors.Interrupted.return_code (this module is standard library only)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when nox's process ends, however it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run(bin_dir: str, args: list[str], log: Callable[[str], None]) -> int:
    """`python -m repromatrix ARGS` from the session's virtualenv; its own exit code (2, 3, 4, 5, 130...)."""
    with tempfile.TemporaryDirectory(prefix="repromatrix-session-") as scratch:
        code_file = Path(scratch) / "exit-code"
        env = {
            **os.environ,
            EXIT_CODE_FILE: str(code_file),
            "VIRTUAL_ENV": str(Path(bin_dir).parent),
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        }
        command = [str(Path(bin_dir) / "python"), "-m", "repromatrix", *args]
        log(" ".join(command[1:]))
        child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        received: list[int] = []

        def forward(signum: int, frame: FrameType | None) -> None:
            if not received:  # once: a second signal must not interrupt the child's clean-up
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)
            received.append(signum)

        previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
        try:
            while True:
                try:
                    returncode = child.wait(timeout=GRACE_S if received else None)
                    break
                except subprocess.TimeoutExpired:
                    log(f"repromatrix did not stop {GRACE_S:g} s after {signal.Signals(received[0]).name}; killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    return INTERRUPTED
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        try:
            code = int(code_file.read_text())
        except (OSError, ValueError):
            code = returncode if returncode >= 0 else 128 - returncode
        # Told to stop: never "successful", even when the run ended as the signal came.
        return INTERRUPTED if received and code == 0 else code
