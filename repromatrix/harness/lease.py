"""The lease of one attempt: how a harness knows that the run which started it is still there.

A local harness dies with its runner (PDEATHSIG), but a container is no child of the runner: after
the runner is SIGKILLed, or exits when its engine stops answering, its container would go on
measuring and writing records into a folder no run holds. So the runner holds a lease for every
attempt it starts (`Held`): `<cell>/.attempts/<id>/lease`, a file in the cell's folder, which a
container sees as it sees the records. The runner holds an exclusive flock on it for as long as
the attempt runs, and touches it every RENEW_S seconds.

The harness checks it (`Watch`) before each repeat, every CHECK_S seconds while one runs (a watchdog
that stops the harness and its scenario process at once), and a scenario process checks it once
more just before it writes its record. The run is gone when the file is gone (its attempt folder
was removed), when the flock is free (the kernel releases it the moment the runner dies, however
it dies), or — where a flock does not reach the container (a file share of a virtual machine) —
when the file was not touched for EXPIRES_S seconds. A harness that finds its run gone writes
nothing more and exits. Standard library only: it runs inside any TensorFlow image.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

RENEW_S = 5.0
EXPIRES_S = 30.0  # six missed renewals
CHECK_S = 1.0
GONE_EXIT = 75  # the harness's exit code when its run is gone (nobody reads it: an operator's `docker ps -a`)


def _locked(path: Path) -> bool | None:
    """Whether someone holds an exclusive flock on the file; None when the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without flock: judged by its age alone
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class Held:
    """The runner's side: the lease of one attempt, held and renewed until the attempt ends."""

    def __init__(self, path: Path, renew_s: float = RENEW_S) -> None:
        self.path, self.renew_s = path, renew_s
        self._stop = threading.Event()
        self._fd = -1
        self._thread = threading.Thread(target=self._renew, name=f"lease-{path.parent.name}", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            with contextlib.suppress(OSError):  # the folder removed under it: the attempt is over anyway
                os.utime(self.path)

    def __enter__(self) -> Held:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        os.close(self._fd)  # releases the flock


class Watch:
    """The harness's side. Whether a flock reaches it is learnt at the start, while the runner holds it."""

    def __init__(self, path: Path | None, expires_s: float = EXPIRES_S) -> None:
        self.path, self.expires_s = path, expires_s
        self.by_lock = path is not None and _locked(path) is True

    def lost(self) -> str:
        """Why the run that started this harness is gone, or '' while it holds the lease (or there is none)."""
        if self.path is None:
            return ""
        locked = _locked(self.path)
        if locked is None:
            return "its attempt folder was removed"
        if self.by_lock:
            return "" if locked else "it let go of its lease"
        with contextlib.suppress(OSError):
            age = time.time() - self.path.stat().st_mtime
            return "" if age < self.expires_s else f"its lease was not renewed for {age:.0f} s"
        return "its attempt folder was removed"

    def scenario_check(self) -> str:
        """What a scenario process is handed to check just before it writes its record ('' for nothing):
        the lease's path where a flock reaches here, which answers at once."""
        return str(self.path) if self.path is not None and self.by_lock else ""

    def stop_when_lost(self, check_s: float = CHECK_S) -> None:
        """A watchdog: once the run is gone, this process and what it started stop at once, writing nothing."""

        def watch() -> None:
            while True:
                time.sleep(check_s)
                why = self.lost()
                if why:
                    print(f"the run that started this harness is gone ({why}); stopping, nothing more is "
                          "written (the next run measures the rest)", file=sys.stderr, flush=True)  # fmt: skip
                    stop_this_group()

        if self.path is not None:
            threading.Thread(target=watch, name="lease-watch", daemon=True).start()


def stop_this_group() -> None:
    """End this process and every process of its group now. In a container the harness is PID 1, which
    a signal from inside does not kill: its exit then takes the container's other processes with it."""
    with contextlib.suppress(OSError):
        if os.getpid() != 1:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        else:
            os.kill(-1, signal.SIGKILL)  # PID 1 of its namespace: every other process in it
    os._exit(GONE_EXIT)


def still_held(path: str) -> bool:
    """For a scenario process, just before it writes its record: False once its run let go of the lease."""
    return not path or _locked(Path(path)) is True
