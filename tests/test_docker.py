"""The Docker backend on a real engine: a real CPU image, the scenarios inside it, the hardening.

Skipped without an engine, except when CI=true: there a missing engine fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from repromatrix import matrix, runner
from repromatrix.backends.container import CONTAINER_RESULTS
from repromatrix.backends.local import LocalBackend
from repromatrix.errors import CellError
from repromatrix.matrix import REPO_ROOT, Cell
from repromatrix.scenarios import records
from tests.conftest import NEWEST_TF, repromatrix_cli

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


def test_all_three_scenarios_run_inside_the_image_to_valid_records(docker_backend, image, tmp_path):
    loaded = matrix.load()
    loaded = type(loaded)(**{**loaded.__dict__, "repeats": 2, "docker": docker_backend.settings})
    [outcome] = runner.run_matrix(docker_backend, loaded, [CELL], runner.RunOptions(tmp_path, jobs=1))
    assert outcome.state == "ran", outcome
    assert outcome.counts == {"ok": 8}
    for scenario, variant in [("init", "unseeded"), ("seeded_init", "seeded"), ("dropout_training", "unseeded"),
                              ("dropout_training", "seeded")]:  # fmt: skip
        for repeat in range(2):
            record = records.Record.read(records.CellLayout(tmp_path / CELL.id).record(scenario, variant, repeat))
            assert record.status == "ok"
            assert record.environment["image"]["id"] == image.key
            assert record.environment["tensorflow"] == NEWEST_TF
            assert record.cell_id == CELL.id
    layout = records.CellLayout(tmp_path / CELL.id)
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
    for _, path in records.Layout(results).record_files():
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
        records.Record.read(records.CellLayout(tmp_path / folder / CELL.id).record("seeded_init", "seeded", 0))
        for folder in ("docker", "local")
    )
    assert docker_record.environment["image"]["backend"] == "docker"
    assert local_record.environment["image"]["backend"] == "local"
    assert docker_record.outputs == local_record.outputs
