"""The README's exit codes come back from `nox -s matrix` itself, not only from `python -m repromatrix`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from repromatrix.matrix import REPO_ROOT


def nox_matrix(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nox", "-s", "matrix", "--", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=900, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.slow  # it starts nox, which installs this package into a session virtualenv
@pytest.mark.parametrize(
    ("matrix_text", "options", "code", "line"),
    [
        ('[matrix]\ndevice = ["tpu"]\n', ["--backend", "local"], 2, "[matrix].device = 'tpu' is not valid"),
        ('[matrix]\ntf = ["2.21.0"]\n', ["--backend", "docker"], 3, "no Docker engine answers at unix://"),
        (
            '[matrix]\ntf = ["2.99.0"]\n[run]\nscenarios = ["init"]\n',
            ["--backend", "local"],
            4,
            "1 of 1 cells had errors",
        ),
    ],
)
def test_nox_passes_the_exit_code_through(tmp_path, matrix_text, options, code, line):
    path = tmp_path / "matrix.toml"
    path.write_text(matrix_text)
    done = nox_matrix("--matrix", str(path), "--results", str(tmp_path / "r"), "--out", str(tmp_path / "report"),
                      *options, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})  # fmt: skip
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-2000:]
    assert line in done.stdout + done.stderr  # nox merges the command's stderr into its stdout
