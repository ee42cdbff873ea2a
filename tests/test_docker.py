"""The Docker backend on a real engine: a real CPU image, the scenarios inside it, the hardening.

Skipped without an engine, except when CI=true: there a missing engine fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repromatrix import locks, matrix, runner
from repromatrix.backends.container import CONTAINER_RESULTS
from repromatrix.backends.local import LocalBackend
from repromatrix.errors import CellError
from repromatrix.harness import records
from repromatrix.harness.axes import Cell
from repromatrix.harness.layout import CellLayout, Layout
from repromatrix.matrix import REPO_ROOT
from tests.conftest import NEWEST_TF, OLDEST_TF, repromatrix_cli

pytestmark = pytest.mark.docker
CELL = Cell(NEWEST_TF, "cpu")

PROBE = f"""
import json, os, socket
result = {{"uid": os.getuid(), "gid": os.getgid()}}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    result["network"] = "open"
except OSError as exc:
    result["network"] = f"blocked: {{exc}}"
for place in ("/opt/repromatrix/scenarios/x", "/etc/x", "/x", "{CONTAINER_RESULTS}/probe.txt", "/tmp/x"):
    try:
        with open(place, "w") as handle:
            handle.write("x")
        result[place] = "written"
    except OSError as exc:
        result[place] = f"refused: {{exc.strerror}}"
status = open("/proc/self/status").read()
result["cap_eff"] = [line.split()[1] for line in status.splitlines() if line.startswith("CapEff")][0]
result["no_new_privs"] = [line.split()[1] for line in status.splitlines() if line.startswith("NoNewPrivs")][0]
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def image(docker_backend):
    prepared = docker_backend.prepare(CELL, verbose=False)
    assert prepared.key.startswith("sha256:")
    return prepared


def test_second_build_of_the_same_cell_reuses_the_image(docker_backend, image):
    again = docker_backend.prepare(CELL, verbose=False)
    assert again.key == image.key
    # Knob-only differences share the environment, hence the image.
    assert docker_backend.prepare(Cell(NEWEST_TF, "cpu", onednn=False), verbose=False).key == image.key
    labels = docker_backend.api.inspect_image(image.key)["Config"]["Labels"]
    assert labels["org.repromatrix.managed"] == "true" and labels["org.repromatrix.tf"] == NEWEST_TF


def test_every_built_in_scenario_runs_inside_the_image_to_valid_records(docker_backend, image, tmp_path):
    loaded = matrix.load()
    loaded = type(loaded)(**{**loaded.__dict__, "repeats": 2, "docker": docker_backend.settings})
    [outcome] = runner.run_matrix(docker_backend, loaded, [CELL], runner.RunOptions(tmp_path, jobs=1))
    assert outcome.state == "ran", outcome
    # 12 repeats, and the seed-to-seed spread: seeded_init's two other seeds run; the unseeded variants'
    # repeats stand in for the two training scenarios' (no process).
    assert outcome.counts == {"ok": 14, "spread from the unseeded sibling": 4}
    for scenario, variant in [("init", "unseeded"), ("seeded_init", "seeded")] + [
        (name, v) for name in ("dropout_training", "cnn_training") for v in ("unseeded", "seeded")
    ]:
        for repeat in range(2):
            record = records.Record.read(CellLayout(tmp_path / CELL.id).record(scenario, variant, repeat))
            assert record.status == "ok"
            assert record.environment["image"]["id"] == image.key
            assert record.environment["tensorflow"] == NEWEST_TF
            assert record.cell_id == CELL.id
    layout = CellLayout(tmp_path / CELL.id)
    seeded = [records.Record.read(layout.record("dropout_training", "seeded", r)) for r in (0, 1)]
    assert seeded[0].outputs == seeded[1].outputs
    assert docker_backend.leftovers() == []


def test_container_is_hardened(docker_backend, image, tmp_path):
    result = docker_backend.execute(CELL, image.handle, ["python3", "-c", PROBE], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["uid"] != 0 and probe["gid"] != 0
    assert probe["network"].startswith("blocked")
    assert probe["/opt/repromatrix/scenarios/x"].startswith("refused")
    assert probe["/etc/x"].startswith("refused") and probe["/x"].startswith("refused")
    assert probe[f"{CONTAINER_RESULTS}/probe.txt"] == "written" and (tmp_path / "probe.txt").is_file()
    assert probe["/tmp/x"] == "written"  # the tmpfs
    assert int(probe["cap_eff"], 16) == 0
    assert probe["no_new_privs"] == "1"
    config = docker_backend.api.inspect_image(image.key)  # the image itself is unchanged by the probe
    assert config["Id"] == image.key
    assert docker_backend.leftovers() == []


def test_container_is_removed_when_the_run_fails(docker_backend, image, tmp_path):
    with pytest.raises(CellError, match="timed out after 3 s"):
        docker_backend.execute(CELL, image.handle, ["sleep", "60"], tmp_path, timeout=3)
    assert docker_backend.leftovers() == []


def test_cuda_cell_is_skipped_without_an_nvidia_runtime(docker_backend):
    reason = docker_backend.skip_reason(Cell(NEWEST_TF, "cuda"))
    runtimes = docker_backend.api.info().get("Runtimes", {})
    if any("nvidia" in name for name in runtimes):
        assert reason is None
    else:
        assert reason is not None and "no NVIDIA runtime" in reason


def test_a_version_without_a_wheel_fails_alone_in_docker(docker_backend, image, tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(
        f'[matrix]\ntf = ["2.99.0", "{NEWEST_TF}"]\n[run]\nscenarios = ["seeded_init"]\nrepeats = 1\n'
        f'[docker]\nbase_image = "{docker_backend.settings.base_image}"\n'
        f'extra_ca = "{docker_backend.settings.extra_ca}"\n'
    )
    done = repromatrix_cli("run", "--matrix", str(path), "--backend", "docker", "--results", str(tmp_path / "r"))
    assert done.returncode == 4, done.stdout + done.stderr
    assert "backend: docker" in done.stdout
    assert any(line.startswith("error: tf2.99.0-cpu-onednn1-det0: cannot resolve") for line in done.stdout.splitlines())
    good = records.Record.read(tmp_path / "r" / CELL.id / "seeded_init-seeded" / "0.json")
    assert good.status == "ok" and good.environment["image"]["id"] == image.key
    assert docker_backend.leftovers() == []


def test_unreachable_engine_is_one_clear_line(tmp_path):
    done = repromatrix_cli(
        "run", "--backend", "docker", "--tf", NEWEST_TF, "--results", str(tmp_path),
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )  # fmt: skip
    assert done.returncode == 3
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: no Docker engine answers at unix://") and "--backend local" in line


def test_auto_backend_says_which_it_chose_and_why(docker_backend, image, tmp_path, tf_python):
    settings = docker_backend.settings
    env = {"REPROMATRIX_BASE_IMAGE": settings.base_image, "REPROMATRIX_EXTRA_CA": settings.extra_ca}
    with_engine = repromatrix_cli("build", "--tf", NEWEST_TF, "--device", "cpu", env=env)
    assert with_engine.returncode == 0, with_engine.stderr
    assert "backend: docker (a Docker engine answers" in with_engine.stdout
    assert image.key in with_engine.stdout  # reused, not rebuilt

    tf_python(NEWEST_TF)
    path = tmp_path / "matrix.toml"
    path.write_text(f'[matrix]\ntf = ["{NEWEST_TF}"]\n[run]\nscenarios = ["seeded_init"]\nrepeats = 1\n')
    without = repromatrix_cli(
        "run", "--matrix", str(path), "--results", str(tmp_path / "r"),
        env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
    )  # fmt: skip
    assert without.returncode == 0, without.stderr
    assert "backend: local (no Docker engine answers at unix://" in without.stdout


def test_ctrl_c_removes_the_containers_and_keeps_what_was_measured(docker_backend, image, tmp_path):
    settings = docker_backend.settings
    env = {**os.environ, "REPROMATRIX_BASE_IMAGE": settings.base_image, "REPROMATRIX_EXTRA_CA": settings.extra_ca}
    results = tmp_path / "r"
    process = subprocess.Popen(
        [sys.executable, "-m", "repromatrix", "run", "--backend", "docker", "--tf", NEWEST_TF, "--device", "cpu",
         "--results", str(results)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not docker_backend.leftovers():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no container started"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the runner
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted" in stderr
    assert docker_backend.leftovers() == []
    for _, path in Layout(results).record_files():
        record = records.Record.read(path)
        assert record.status == "ok", record.message  # no made-up errors for the containers we removed


def test_container_and_local_virtualenv_agree_bit_for_bit(docker_backend, image, tmp_path, tf_python):
    """Same lock, same CPU: the seeded outputs must not depend on the backend."""
    tf_python(NEWEST_TF)
    loaded = matrix.load()
    loaded = type(loaded)(
        **{**loaded.__dict__, "repeats": 1, "scenarios": ("seeded_init",), "docker": docker_backend.settings}
    )
    for backend, folder in ((docker_backend, "docker"), (LocalBackend(), "local")):
        [outcome] = runner.run_matrix(backend, loaded, [CELL], runner.RunOptions(tmp_path / folder))
        assert outcome.state == "ran", outcome
    docker_record, local_record = (
        records.Record.read(CellLayout(tmp_path / folder / CELL.id).record("seeded_init", "seeded", 0))
        for folder in ("docker", "local")
    )
    assert docker_record.environment["image"]["backend"] == "docker"
    assert local_record.environment["image"]["backend"] == "local"
    assert docker_record.outputs == local_record.outputs


# -- hardware axes in a container ------------------------------------------------------------------


def test_cpus_axis_pins_the_container_to_that_many_cores(docker_backend, image, tmp_path):
    cell = Cell(NEWEST_TF, "cpu", cpus=1)
    loaded = matrix.load()
    loaded = type(loaded)(**{**loaded.__dict__, "repeats": 1, "scenarios": ("seeded_init",),
                             "docker": docker_backend.settings})  # fmt: skip
    [outcome] = runner.run_matrix(docker_backend, loaded, [cell], runner.RunOptions(tmp_path))
    assert outcome.state == "ran", outcome
    record = records.Record.read(CellLayout(tmp_path / cell.id).record("seeded_init", "seeded", 0))
    assert record.knobs["usable_cores"] == 1 and record.cell["cpus"] == 1
    assert docker_backend.leftovers() == []


# -- faults: signals, orphans, locks, mixing ----------------------------------------------------------


def _env(docker_backend) -> dict[str, str]:
    settings = docker_backend.settings
    return {**os.environ, "REPROMATRIX_BASE_IMAGE": settings.base_image, "REPROMATRIX_EXTRA_CA": settings.extra_ca}


# What these runs count is repeats: no spread runs (test_every_built_in_scenario... measures those in Docker).
SMALL = f"""
[matrix]
tf = ["{NEWEST_TF}"]
[run]
scenarios = ["init", "seeded_init"]
repeats = 2
spread_seeds = 0
"""


def _start_run(docker_backend, results, *extra: str) -> subprocess.Popen:
    small = results.parent / "small.toml"
    small.write_text(SMALL)
    return subprocess.Popen(
        [sys.executable, "-m", "repromatrix", "run", "--backend", "docker", "--matrix", str(small),
         "--results", str(results), *extra],
        cwd=REPO_ROOT, env=_env(docker_backend), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def _wait_for_container(docker_backend, process) -> None:
    """Until a container of this run (its owner label names the process) exists."""
    from repromatrix.backends.container import CELL_LABEL, OWNER

    deadline = time.monotonic() + 120
    while True:
        found = docker_backend.api.containers(all=True, filters={"label": CELL_LABEL})
        if any(f":{process.pid}:" in (c.get("Labels") or {}).get(OWNER, "") for c in found):
            return
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no container started"
        time.sleep(0.2)


def written(results) -> dict[str, tuple[int, int]]:
    """Every file of the results folder outside its hidden ones, with its size and modification time."""
    return {
        str(p.relative_to(results)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in results.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(results).parts)
        and p.name != "repromatrix-results.json"
    }


def wait_until_stopped(docker_backend, within_s: float) -> None:
    """Until no container of a run (this test's, the only ones labelled as cells here) is running."""
    from repromatrix.backends.container import CELL_LABEL

    deadline = time.monotonic() + within_s
    while any(c["State"] == "running" for c in docker_backend.api.containers(all=True, filters={"label": CELL_LABEL})):
        assert time.monotonic() < deadline, f"the orphaned container still ran {within_s:g} s later"
        time.sleep(0.5)


def assert_no_litter(results) -> None:
    """No temporary file of an atomic write and no attempt folder left in the results folder."""
    left = [p for p in results.rglob(".*") if p.name.endswith((".tmp", ".tmp.npz")) or p.name == ".attempts"]
    assert left == [], left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_nox_stops_the_run_and_nothing_outlives_it(docker_backend, image, tmp_path, signum):
    """What a scheduler, a CI runner or systemd does: signal nox's own pid, not its process group."""
    results, small = tmp_path / "r", tmp_path / "small.toml"
    small.write_text(SMALL)
    command = [sys.executable, "-m", "nox", "-s", "matrix", "--", "--backend", "docker", "--matrix", str(small),
               "--results", str(results), "--out", str(tmp_path / "report")]  # fmt: skip
    scratch = tmp_path / "tmp"  # the run's own temporary folder: whatever it leaves there is its own
    scratch.mkdir()
    nox = subprocess.Popen(command, cwd=REPO_ROOT, env={**_env(docker_backend), "TMPDIR": str(scratch)},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not docker_backend.leftovers():  # a container of this run is up: mid-cell
        assert nox.poll() is None, nox.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no container started"
        time.sleep(0.2)
    os.kill(nox.pid, signum)
    output, _ = nox.communicate(timeout=120)
    assert nox.returncode == 130, output[-3000:]
    assert docker_backend.leftovers() == []
    assert_no_litter(results)  # as the signal left it, before any later run tidies up
    assert [p.name for p in scratch.iterdir() if p.name.startswith("repromatrix-build-")] == []
    running = subprocess.run(["pgrep", "-f", f"repromatrix.*{results}"], capture_output=True, text=True)
    assert running.stdout.strip() == "", running.stdout
    again = subprocess.run(command, cwd=REPO_ROOT, env=_env(docker_backend), capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:]
    assert "in use by" not in again.stdout
    assert_no_litter(results)


class EngineProxy:
    """A Unix socket in front of the real engine: closing it is the engine stopping to answer, as the
    client sees it (connections dropped mid-call, new ones refused), without stopping the shared engine."""

    def __init__(self, target: str, path) -> None:
        import socket
        import threading

        self.target, self.path, self.connections = target, str(path), []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(2)

    def stop(self) -> None:
        import socket

        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
        os.unlink(self.path)


def test_an_engine_that_stops_answering_is_exit_3_with_one_line_and_the_counts(docker_backend, image, tmp_path):
    target = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    proxy = EngineProxy(target, tmp_path / "engine.sock")
    results = tmp_path / "r"
    env = {**_env(docker_backend), "DOCKER_HOST": f"unix://{proxy.path}"}
    small = tmp_path / "small.toml"
    small.write_text(SMALL.replace("repeats = 2", "repeats = 4"))
    command = [sys.executable, "-m", "repromatrix", "run", "--backend", "docker", "--matrix", str(small),
               "--results", str(results)]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    layout = Layout(results)
    deadline = time.monotonic() + 300
    while not any((r := records.read_if_valid(p)) and r.is_ok for _, p in layout.record_files()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    measured_before = sum(r.is_ok for _, p in layout.record_files() if (r := records.read_if_valid(p)))
    proxy.stop()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert f"the Docker engine at unix://{proxy.path} stopped answering during tf{NEWEST_TF}" in errors[0]
    measured = int(errors[0].split("repeats measured")[0].rsplit(":", 1)[1].split(" of ")[0])
    assert measured >= measured_before and " of 8 repeats measured" in errors[0]
    # The orphaned container stops by itself, and writes nothing after its run ended.
    at_exit = written(results)
    wait_until_stopped(docker_backend, 60)
    assert written(results) == at_exit
    # The engine back: the next run sweeps the orphan and completes.
    again = subprocess.run(command, cwd=REPO_ROOT, env=_env(docker_backend), capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert {records.Record.read(p).status for _, p in layout.record_files()} == {"ok"}
    assert docker_backend.leftovers() == []
    assert_no_litter(results)


def test_sigterm_removes_the_containers_and_leaves_a_resumable_folder(docker_backend, image, tmp_path):
    results = tmp_path / "r"
    process = _start_run(docker_backend, results)
    _wait_for_container(docker_backend, process)
    process.send_signal(signal.SIGTERM)  # what timeout(1), a CI cancel and systemd send
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "SIGTERM" in stderr
    assert docker_backend.leftovers() == []
    resumed = _start_run(docker_backend, results)
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stdout + stderr
    statuses = {records.Record.read(path).status for _, path in Layout(results).record_files()}
    assert statuses == {"ok"}
    assert_no_litter(results)


def test_a_killed_runs_container_is_swept_and_a_live_runs_is_not(docker_backend, image, tmp_path):
    from repromatrix.backends.container import OWNER
    from repromatrix.cleanup import owner_id

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "300"])
    try:
        made = {}
        for who, pid in (("dead", dead.pid), ("live", live.pid)):
            made[who] = docker_backend.api.create_container(
                image=image.handle, command=["sleep", "300"], labels={"org.repromatrix.managed": "true",
                "org.repromatrix.cell": CELL.id,
                OWNER: owner_id(pid) if who == "live" else f"{owner_id().split(':')[0]}:{pid}:1"},
            )["Id"]  # fmt: skip
        docker_backend.sweep()
        remaining = {c["Id"] for c in docker_backend.api.containers(all=True)}
        assert made["dead"] not in remaining and made["live"] in remaining
    finally:
        live.kill()
        for container in made.values():
            with contextlib.suppress(Exception):
                docker_backend.api.remove_container(container, force=True)


def test_sigkill_of_the_orchestrator_then_resume_loses_nothing_and_sweeps_it(docker_backend, image, tmp_path):
    results = tmp_path / "r"
    process = _start_run(docker_backend, results)
    deadline = time.monotonic() + 300
    layout = Layout(results)
    while not any(records.Record.read(p).is_ok for _, p in layout.record_files() if records.read_if_valid(p)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)  # the orchestrator alone: its container is orphaned
    process.communicate()
    at_kill = written(results)
    assert docker_backend.leftovers(), "the container is not removed by a SIGKILLed orchestrator"
    wait_until_stopped(docker_backend, 60)  # by itself: it sees its run's lease let go
    assert written(results) == at_kill  # no record landed after the kill
    resumed = _start_run(docker_backend, results)
    stdout, stderr = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, stdout + stderr
    assert "left behind by a run that ended without removing it" in stdout
    assert docker_backend.leftovers() == []
    paths = [p for _, p in layout.record_files()]
    assert len(paths) == 4 and {records.Record.read(p).status for p in paths} == {"ok"}
    assert_no_litter(results)


def test_a_second_run_into_the_same_folder_exits_2_naming_the_holder(docker_backend, image, tmp_path):
    results = tmp_path / "r"
    first = _start_run(docker_backend, results)
    _wait_for_container(docker_backend, first)
    second = _start_run(docker_backend, results)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 2, stdout + stderr
    [line] = stderr.strip().splitlines()
    assert f"--results {results} is in use by pid {first.pid}" in line and "--wait" in line
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert docker_backend.leftovers() == []


@pytest.mark.parametrize("manifest", ["intact", "missing", "garbage"])
def test_a_docker_run_into_a_local_folder_does_not_overwrite_it(docker_backend, image, tmp_path, tf_python, manifest):
    tf_python(NEWEST_TF)
    path = tmp_path / "matrix.toml"
    path.write_text(f'[matrix]\ntf = ["{NEWEST_TF}"]\n[run]\nscenarios = ["seeded_init"]\nrepeats = 1\n')
    results = tmp_path / "r"
    local = repromatrix_cli("run", "--matrix", str(path), "--backend", "local", "--results", str(results))
    assert local.returncode == 0, local.stdout + local.stderr
    layout = Layout(results)
    if manifest == "missing":
        layout.manifest.unlink()
    elif manifest == "garbage":
        layout.manifest.write_bytes(b"\x00\xffnot a manifest")
    before = {p: p.read_bytes() for _, p in layout.record_files()}
    docker = repromatrix_cli("run", "--matrix", str(path), "--backend", "docker", "--results", str(results),
                             env=_env(docker_backend))  # fmt: skip
    assert docker.returncode == 2, docker.stdout + docker.stderr
    assert "holds records made by the local backend and this run uses docker" in docker.stderr
    assert {p: p.read_bytes() for _, p in layout.record_files()} == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_an_image_build_exits_at_once_and_leaves_nothing(docker_backend, tmp_path, signum):
    building = Cell("2.20.0", "cpu")  # an image no other test builds, so it is not in the cache
    with contextlib.suppress(Exception):
        docker_backend.api.remove_image(docker_backend.image_tag(building), force=True)
    small = tmp_path / "small.toml"
    small.write_text(SMALL.replace(NEWEST_TF, "2.20.0"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "repromatrix", "run", "--backend", "docker", "--matrix", str(small),
         "--results", str(tmp_path / "r")],
        cwd=REPO_ROOT, env={**_env(docker_backend), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "building" in line:
            break
    time.sleep(2)
    process.send_signal(signum)
    process.communicate(timeout=60)
    assert process.returncode == 130
    # It did not wait for the build (which installs TensorFlow): no image was finished when it left.
    assert docker_backend.api.images(name=docker_backend.image_tag(building)) == []
    assert docker_backend.leftovers() == []
    assert list(Layout(tmp_path / "r").record_files()) == []
    # No copy of the build context (the lock, the proxy's CA) in the temporary folder, no attempt folder.
    assert list(scratch.iterdir()) == []
    assert_no_litter(tmp_path / "r")


def test_a_base_image_the_engine_cannot_pull_is_one_line_and_exit_3_before_any_build(docker_backend, tmp_path):
    absent = "repromatrix-test/no-such-base:never"
    done = repromatrix_cli("run", "--backend", "auto", "--tf", NEWEST_TF, "--device", "cpu", "--scenario",
                           "seeded_init", "--results", str(tmp_path / "r"),
                           env={"REPROMATRIX_BASE_IMAGE": absent})  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: the base image {absent} cannot be had: this engine does not have it and cannot")
    assert "nox -s base_image" in line and "REPROMATRIX_BASE_IMAGE" in line and "--backend local" in line
    assert "building" not in done.stdout and not list(Layout(tmp_path / "r").record_files())
    assert docker_backend.leftovers() == []


def test_two_jobs_and_one_cell_whose_build_fails_measure_the_other(docker_backend, image, tmp_path, monkeypatch):
    broken = Cell(OLDEST_TF, "cpu")
    files = docker_backend.context_files

    def broken_recipe(cell):  # its image build fails in the engine, after the base image
        made = files(cell)
        if cell == broken:  # right after FROM: it fails in seconds, before TensorFlow is installed
            label = b'LABEL org.repromatrix.managed="true"\n'
            made["Dockerfile"] = made["Dockerfile"].replace(label, label + b"RUN echo 'a step that fails' && exit 3\n")
        return made

    monkeypatch.setattr(docker_backend, "context_files", broken_recipe)
    loaded = matrix.load()
    loaded = type(loaded)(**{**loaded.__dict__, "repeats": 2, "scenarios": ("seeded_init",),
                             "docker": docker_backend.settings})  # fmt: skip
    outcomes = runner.run_matrix(docker_backend, loaded, [broken, CELL], runner.RunOptions(tmp_path, jobs=2))
    assert [o.state for o in outcomes] == ["error", "ran"], outcomes
    # The step's exit code, in the engine's words: Docker's "returned a non-zero code: 3", Podman's "exit status 3".
    message = outcomes[0].message
    assert "image build failed" in message and ("non-zero code: 3" in message or "exit status 3" in message), message
    failed = [records.Record.read(CellLayout(tmp_path / broken.id).record("seeded_init", "seeded", i)) for i in (0, 1)]
    assert {r.status for r in failed} == {"error"} and "a step that fails" in failed[0].stderr_tail
    good = [records.Record.read(CellLayout(tmp_path / CELL.id).record("seeded_init", "seeded", i)) for i in (0, 1)]
    assert {r.status for r in good} == {"ok"}
    assert docker_backend.leftovers() == []
    assert_no_litter(tmp_path)


def test_a_fork_parent_killed_for_memory_is_said_so_and_leaves_nothing_running(docker_backend, image, tmp_path):
    loaded = matrix.load()
    settings = type(docker_backend.settings)(**{**docker_backend.settings.__dict__, "memory": "160m"})
    tight = type(docker_backend)(settings=settings)
    loaded = type(loaded)(**{**loaded.__dict__, "repeats": 2, "scenarios": ("seeded_init",), "docker": settings,
                             "isolation": "fork"})  # fmt: skip
    [outcome] = runner.run_matrix(tight, loaded, [CELL], runner.RunOptions(tmp_path))
    assert outcome.state == "error", outcome
    for i in (0, 1):
        record = records.Record.read(CellLayout(tmp_path / CELL.id).record("seeded_init", "seeded", i))
        assert record.status == "error" and "out of memory (raise [docker].memory)" in record.message, record.message
    assert docker_backend.leftovers() == []
    assert_no_litter(tmp_path)


def test_a_run_as_another_user_writes_records_that_user_owns(docker_backend, image):
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("running as another user needs root here")
    uid = gid = 4242  # no account needed: the process takes the ids, and the engine's group for its socket
    socket_path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    socket_group = os.stat(socket_path).st_gid
    home = Path(tempfile.mkdtemp(prefix="repromatrix-user-test-"))
    try:
        os.chmod(home, 0o755)
        os.chown(home, uid, gid)

        def become() -> None:
            os.setgroups([socket_group])
            os.setgid(gid)
            os.setuid(uid)

        small = home / "small.toml"
        small.write_text(SMALL)
        os.chown(small, uid, gid)
        # This interpreter may live in root's home, which another user cannot enter: the user gets a
        # virtualenv of its own (the system's Python, or this one where others may run it) with this
        # package installed from the checkout, as a user who installed repromatrix would have it.
        system = next((p for p in ("/usr/bin/python3.11", "/usr/local/bin/python3.11") if os.access(p, os.X_OK)),
                      sys.executable)  # fmt: skip
        venv = home / "venv"
        uv = locks.uv_binary()
        for step in (
            [uv, "venv", "--quiet", "--python", system, str(venv)],
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(REPO_ROOT)],
        ):
            made = subprocess.run(step, capture_output=True, text=True, env=locks.uv_env(), timeout=600)
            assert made.returncode == 0, made.stderr[-2000:]
        for path in [home, *home.rglob("*")]:
            os.chown(path, uid, gid, follow_symlinks=False)
        env = {**_env(docker_backend), "HOME": str(home), "REPROMATRIX_CACHE": str(home / "cache"),
               "TMPDIR": str(home)}  # fmt: skip
        python = str(venv / "bin" / "python")
        done = subprocess.run(
            [python, "-m", "repromatrix", "run", "--backend", "docker", "--matrix", str(small),
             "--results", str(home / "r")],
            cwd=home, env=env, capture_output=True, text=True, timeout=900, preexec_fn=become,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "building" not in done.stdout  # the same image as root's: its tag is its content
        made = [p for p in (home / "r").rglob("*")]
        assert len([p for _, p in Layout(home / "r").record_files()]) == 4
        assert {(p.stat().st_uid, p.stat().st_gid) for p in made} == {(uid, gid)}
        assert docker_backend.leftovers() == []
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- both backends, one path ----------------------------------------------------------------------

# A harness that writes an error record for the first planned repeat, says so in its summary, leaves
# the rest undone and exits with the code it is given: what the runner makes of that must not depend
# on where the harness ran.
FAKE_HARNESS = """
import sys
from pathlib import Path
from .exchange import Plan, Summary
from .layout import CellLayout
from .records import Record, Status

argv = sys.argv
out, attempt = CellLayout(Path(argv[argv.index("--out") + 1])), argv[argv.index("--attempt") + 1]
first, *_ = specs = Plan.read(out.plan_file(attempt)).repeats
Record.failed(Status.ERROR, "the fake harness failed it", **first.record_fields()).write(
    out.record(first.scenario, first.variant, first.repeat))
Summary(attempt=attempt, planned=len(specs), started=1, error=1, done=[first.label]).write(out.summary_file(attempt))
print("fake harness: leaving", len(specs) - 1, "repeats undone", file=sys.stderr)
sys.exit(EXIT_CODE)
"""


@pytest.mark.parametrize("exit_code", [1, 3])
def test_both_backends_make_the_same_records_of_the_same_failing_harness(
    docker_backend, image, tmp_path, tf_python, monkeypatch, exit_code
):
    import shutil

    from repromatrix.backends import code_root, container, local

    fake = tmp_path / "code"
    shutil.copytree(code_root(), fake, ignore=shutil.ignore_patterns("__pycache__"))
    (fake / "repromatrix" / "harness" / "__main__.py").write_text(FAKE_HARNESS.replace("EXIT_CODE", str(exit_code)))
    for path in [fake, *fake.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by the container's user
    for module in (container, local):
        monkeypatch.setattr(module, "code_root", lambda *args, **kwargs: fake)
    tf_python(NEWEST_TF)
    loaded = matrix.load()
    loaded = type(loaded)(
        **{
            **loaded.__dict__,
            "repeats": 2,
            "scenarios": ("seeded_init",),
            "docker": docker_backend.settings,
            "spread_seeds": 0,
        }
    )
    made = {}
    for backend in (docker_backend, LocalBackend()):
        [outcome] = runner.run_matrix(backend, loaded, [CELL], runner.RunOptions(tmp_path / backend.name))
        assert outcome.state == "error", outcome
        cell = CellLayout(tmp_path / backend.name / CELL.id)
        made[backend.name] = [
            (r.status, r.message, r.stderr_tail, r.repeat)
            for r in (records.Record.read(cell.record("seeded_init", "seeded", i)) for i in range(2))
        ]
    assert made["docker"] == made["local"]
    (first, second) = made["docker"]
    assert first[:2] == ("error", "the fake harness failed it")
    assert second[0] == "error" and "left no record" in second[1] and f"exit code {exit_code}" in second[1]
    assert "fake harness: leaving 1 repeats undone" in second[2]
