"""matrix.toml: the default matrix, filters, and clear errors for malformed files."""

from __future__ import annotations

import pytest

from repromatrix import matrix
from repromatrix.errors import ConfigurationError
from tests.conftest import repromatrix_cli


def test_default_matrix_spans_keras_2_to_3_on_cpu_and_cuda():
    loaded = matrix.load()
    assert {"2.15.1", "2.16.2", "2.21.0"} <= {c.tf for c in loaded.cells}
    assert {c.device for c in loaded.cells} == {"cpu", "cuda"}
    assert {c.onednn for c in loaded.cells} == {True, False}
    assert loaded.repeats == 3
    ids = [c.id for c in loaded.cells]
    assert len(ids) == len(set(ids))
    assert "tf2.16.2-cpu-onednn1-det0" in ids


def test_cell_id_names_every_non_default_axis():
    cell = matrix.Cell("2.16.2", "cuda", "official", False, True, 4, 2)
    assert cell.id == "tf2.16.2-cuda-official-onednn0-det1-intra4-inter2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[matrix]\ndevice = ["cpu", "tpu"]\n', "[matrix].device = 'tpu' is not valid; allowed: cpu, cuda"),
        ('[matrix]\ntf = ["2.16"]\n', "[matrix].tf = '2.16' is not valid; write a full TensorFlow 2 release"),
        ("[run]\nrepeats = 0\n", "[run].repeats = 0 is not valid; at least 1"),
        ("[matrix]\ntf_versions = []\n", "[matrix].tf_versions = [] is not valid; allowed keys: tf, device"),
        ("[matrix]\nonednn = [1, 0]\n", "[matrix].onednn = 1 is not valid; each value must be true/false"),
        ("[matrix\n", "not valid TOML"),
        ('[run]\nscenarios = ["init", "nope"]\n', "[run].scenarios = 'nope' is not valid; known scenarios:"),
    ],
)
def test_malformed_matrix_gives_a_clear_error(tmp_path, text, expected):
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        matrix.load(path, known_scenarios=["init", "seeded_init", "dropout_training"])
    assert expected in caught.value.message
    assert caught.value.message.startswith("matrix.toml: ") or "TOML" in caught.value.message


def test_malformed_matrix_is_one_line_and_exit_code_2_from_the_command(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text('[matrix]\ndevice = ["tpu"]\n')
    done = repromatrix_cli("run", "--matrix", str(path), "--backend", "local", "--results", str(tmp_path / "r"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: matrix.toml: [matrix].device = 'tpu' is not valid; allowed: cpu, cuda"
    ]


def test_filters_narrow_and_reject_unknown_values():
    cells = matrix.load().cells
    chosen = matrix.select(cells, tf=["2.21.0"], device=["cpu"])
    assert {c.id for c in chosen} == {"tf2.21.0-cpu-onednn1-det0", "tf2.21.0-cpu-onednn0-det0"}
    with pytest.raises(ConfigurationError, match=r"--tf 9\.9\.9: not in the matrix; available: 2\.15\.1"):
        matrix.select(cells, tf=["9.9.9"])


def test_environment_overrides_machine_specific_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROMATRIX_BASE_IMAGE", "local/base:1")
    path = tmp_path / "m.toml"
    path.write_text('[docker]\nbase_image = "python:3.11-slim"\nmemory = "2g"\n')
    loaded = matrix.load(path)
    assert loaded.docker.base_image == "local/base:1"
    assert loaded.docker.memory == "2g"
