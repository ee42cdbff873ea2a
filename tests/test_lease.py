"""The attempt's lease: a harness whose run is gone stops at once and writes nothing more. Fast (no TF, no Docker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from repromatrix.harness import exchange, lease
from repromatrix.harness.__main__ import execute
from repromatrix.harness.launch import Outcome
from repromatrix.harness.layout import CellLayout
from repromatrix.harness.records import Status
from repromatrix.matrix import REPO_ROOT
from tests.conftest import alive


def test_a_held_lease_is_seen_held_by_its_lock_and_lost_the_moment_it_is_let_go(tmp_path):
    path = tmp_path / ".attempts" / "a1" / "lease"
    with lease.Held(path):
        watch = lease.Watch(path)
        assert watch.by_lock and watch.lost() == "" and lease.still_held(watch.scenario_check())
    assert watch.lost() == "it let go of its lease"  # no waiting for an expiry
    assert not lease.still_held(watch.scenario_check())
    path.unlink()
    assert watch.lost() == "its attempt folder was removed"


def test_where_no_lock_reaches_the_lease_expires_when_it_is_not_renewed(tmp_path):
    path = tmp_path / "lease"
    path.write_text("")  # nobody holds a lock on it: as a container on a virtual machine's file share sees it
    watch = lease.Watch(path, expires_s=30)
    assert not watch.by_lock and watch.scenario_check() == ""
    assert watch.lost() == ""  # just touched
    os.utime(path, (time.time() - 31, time.time() - 31))
    assert watch.lost().startswith("its lease was not renewed for 3")


def test_the_runner_renews_its_lease(tmp_path):
    path = tmp_path / "lease"
    with lease.Held(path, renew_s=0.05):
        os.utime(path, (0, 0))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime == 0:
            assert time.monotonic() < deadline, "not renewed"
            time.sleep(0.02)


WATCHED = """
import subprocess, sys, time
from pathlib import Path
from repromatrix.harness import lease
child = subprocess.Popen(["sleep", "300"])
print(child.pid, flush=True)
lease.Watch(Path(sys.argv[1])).stop_when_lost(check_s=0.05)
time.sleep(300)
"""


def test_a_harness_whose_run_lets_go_stops_with_what_it_started(tmp_path):
    path = tmp_path / "lease"
    with lease.Held(path):
        watched = subprocess.Popen([sys.executable, "-c", WATCHED, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        child = int(watched.stdout.readline())
        time.sleep(0.3)
        assert watched.poll() is None  # held: it goes on
    try:
        watched.wait(timeout=30)
    finally:
        if watched.poll() is None:
            watched.kill()
    assert watched.returncode in (lease.GONE_EXIT, -9)
    assert "the run that started this harness is gone (it let go of its lease)" in watched.stderr.read()
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "its scenario process outlived it"
        time.sleep(0.05)


def test_a_repeat_that_ends_after_its_run_is_gone_leaves_no_record_at_all(tmp_path):
    """Not even an error record: nothing lands in a folder its run no longer holds."""
    layout = CellLayout(tmp_path)
    specs = [exchange.RepeatSpec("init", "unseeded", None, i) for i in range(3)]
    held = lease.Held(layout.lease_file("a1"))
    held.__enter__()
    watch = lease.Watch(layout.lease_file("a1"))
    started = []

    class DyingRun:  # a launcher whose repeat outlives the runner
        def run(self, spec: exchange.RepeatSpec, timeout: float, verbose: bool) -> Outcome:
            started.append(spec.repeat)
            assert spec.lease == str(layout.lease_file("a1"))  # the scenario process checks it before writing
            held.__exit__(None, None, None)  # the runner dies while the repeat runs; it then fails
            return Outcome(Status.ERROR, "killed by SIGKILL: no output")

        def stop(self) -> None:
            pass

    summary = execute(exchange.Plan(tuple(specs)), layout, "a1", DyingRun(), watch)
    assert started == [0]  # nothing more is started
    assert list(layout.record_files()) == []
    assert summary.error == 0 and summary.done == []
