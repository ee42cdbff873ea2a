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
    chosen = matrix.select(cells, tf=["2.15.1"], device=["cpu"])
    assert {c.id for c in chosen} == {"tf2.15.1-cpu-onednn1-det0", "tf2.15.1-cpu-onednn0-det0"}
    with pytest.raises(ConfigurationError, match=r"--tf 9\.9\.9: not in the matrix; available: 2\.15\.1"):
        matrix.select(cells, tf=["9.9.9"])


def test_environment_overrides_machine_specific_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("REPROMATRIX_BASE_IMAGE", "local/base:1")
    path = tmp_path / "m.toml"
    path.write_text('[docker]\nbase_image = "python:3.11-slim"\nmemory = "2g"\n')
    loaded = matrix.load(path)
    assert loaded.docker.base_image == "local/base:1"
    assert loaded.docker.memory == "2g"


def test_hardware_axes_join_the_id_only_when_not_at_their_default():
    assert matrix.Cell("2.21.0", "cpu").id == "tf2.21.0-cpu-onednn1-det0"  # ids from before the axes
    assert matrix.Cell("2.21.0", "cpu", cpus=1, cpu_isa="avx512_core").id == (
        "tf2.21.0-cpu-onednn1-det0-cpus1-isa-avx512core"
    )


ONE_AT_A_TIME = """
[matrix]
design = "one-at-a-time"
tf = ["2.21.0", "2.15.1"]
onednn = [true, false]
cpus = [0, 1, 2]
cpu_isa = ["native", "avx"]
"""


def test_one_at_a_time_is_a_baseline_plus_every_single_change(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(ONE_AT_A_TIME)
    loaded = matrix.load(path)
    assert {c.id: loaded.reasons[c.id] for c in loaded.cells} == {
        "tf2.21.0-cpu-onednn1-det0": "baseline",
        "tf2.15.1-cpu-onednn1-det0": "changes tf to 2.15.1",
        "tf2.21.0-cpu-onednn0-det0": "changes onednn to off",
        "tf2.21.0-cpu-onednn1-det0-cpus1": "changes cpus to 1 core",
        "tf2.21.0-cpu-onednn1-det0-cpus2": "changes cpus to 2 cores",
        "tf2.21.0-cpu-onednn1-det0-isa-avx": "changes cpu_isa to avx",
    }


def test_one_at_a_time_with_crossed_axes_varies_the_others_at_every_crossed_point(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text(
        ONE_AT_A_TIME.replace('design = "one-at-a-time"', 'design = "one-at-a-time"\ncrossed = ["tf", "onednn"]')
    )
    loaded = matrix.load(path)
    ids = [c.id for c in loaded.cells]
    crossed_points = [(tf, o) for tf in ("2.21.0", "2.15.1") for o in (1, 0)]
    expected = []
    for tf, onednn in crossed_points:
        base = f"tf{tf}-cpu-onednn{onednn}-det0"
        expected += [base, f"{base}-cpus1", f"{base}-cpus2", f"{base}-isa-avx"]
    assert ids == expected
    assert loaded.reasons["tf2.15.1-cpu-onednn0-det0-cpus1"] == "changes cpus to 1 core (at tf=2.15.1, onednn=off)"
    assert loaded.reasons["tf2.15.1-cpu-onednn0-det0"] == "baseline (tf=2.15.1, onednn=off)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[matrix]\ncpu_isa = ["native", "avx3"]\n',
            "[matrix].cpu_isa = 'avx3' is not valid; allowed: sse41, avx, avx2,",
        ),
        ("[matrix]\ncpus = [0, -1]\n", "[matrix].cpus = -1 is not valid; 0 (every core the host offers)"),
        ('[matrix]\ndesign = "latin-square"\n', "[matrix].design = 'latin-square' is not valid; allowed: factorial"),
        (
            '[matrix]\ndesign = "one-at-a-time"\ncrossed = ["tf", "gpu"]\n',
            "[matrix].crossed = ['gpu'] is not valid; a list of axes from: tf, device",
        ),
    ],
)
def test_hardware_and_design_mistakes_name_the_key_and_the_allowed_values(tmp_path, text, expected):
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        matrix.load(path)
    assert expected in caught.value.message


def test_hardware_the_host_lacks_is_a_skip_with_the_reason():
    from repromatrix.backends import hardware_skip_reason

    flags = {"sse4_1", "avx", "avx2"}
    assert hardware_skip_reason(matrix.Cell("2.21.0", "cpu", cpus=4), 2, flags) == "needs 4 cores, this host has 2"
    assert hardware_skip_reason(matrix.Cell("2.21.0", "cpu", cpus=2), 2, flags) is None
    reason = hardware_skip_reason(matrix.Cell("2.21.0", "cpu", cpu_isa="avx512_core"), 2, flags)
    assert reason is not None and reason.startswith("needs a CPU with avx512_core (avx512f")
    assert hardware_skip_reason(matrix.Cell("2.21.0", "cpu", cpu_isa="avx"), 2, flags) is None


# /proc/cpuinfo flags of the two kinds of host this project runs on (abridged to what oneDNN's caps read).
AMD_EPYC_FLAGS = {
    "sse4_1", "sse4_2", "fma", "f16c", "avx", "avx2", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16",
}  # fmt: skip
INTEL_AMX_FLAGS = AMD_EPYC_FLAGS | {"avx_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}


def test_what_a_host_lacks_is_read_from_its_flags():
    from repromatrix.backends import hardware_skip_reason, isa_lacking

    # On an AMD EPYC the oldest cap it cannot run is avx2_vnni (no avx_vnni); AMX is missing too.
    assert isa_lacking(AMD_EPYC_FLAGS) == "avx2_vnni"
    amx = matrix.Cell("2.21.0", "cpu", cpu_isa="avx512_core_amx")
    assert "amx_tile" in (hardware_skip_reason(amx, 2, AMD_EPYC_FLAGS) or "")
    # An Intel Xeon with AMX has every cap the axis knows: nothing to refuse, and the test says so.
    assert isa_lacking(INTEL_AMX_FLAGS) is None
    assert hardware_skip_reason(amx, 2, INTEL_AMX_FLAGS) is None
    # An old AVX2-only machine lacks the first AVX-512 cap.
    assert isa_lacking({"sse4_1", "avx", "avx2"}) == "avx2_vnni"
    assert isa_lacking({"sse4_1", "avx", "avx2", "avx_vnni"}) == "avx512_core"


def test_every_command_the_parser_declares_is_dispatched_by_the_table():
    from repromatrix import cli

    [commands] = [a for a in cli.parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert sorted(commands.choices) == sorted(cli.COMMANDS)


def test_the_documented_matrix_names_every_axis_and_setting_and_loads():
    """docs/matrix.md's example is the reference: it names every key the table declares, and it is valid."""
    import tomllib

    from repromatrix import options
    from repromatrix.harness import axes

    doc = (matrix.REPO_ROOT / "docs" / "matrix.md").read_text()
    example = tomllib.loads(doc.split("```toml\n", 1)[1].split("```", 1)[0])
    assert set(example["matrix"]) - {"design", "crossed"} == set(axes.NAMES)
    for table in ("run", "docker"):
        assert set(example[table]) == {option.toml_key.split(".", 1)[1] for option in options.in_table(table)}


def test_a_command_line_override_is_checked_like_the_key_it_overrides(tmp_path, capsys):
    from repromatrix import cli

    code = cli.main(["run", "--matrix", str(matrix.PACKAGED_MATRIX), "--repeats", "0", "--results", str(tmp_path)])
    assert code == 2
    assert "--repeats 0: not valid; at least 1 (2 or more to test run-to-run)" in capsys.readouterr().err


def test_scenario_takes_a_comma_separated_list_and_repeats(tmp_path):
    from repromatrix import cli

    args = cli.parser().parse_args(["run", "--scenario", "init,seeded_init", "--scenario", "cnn_training",
                                    "--tf", "2.15.1", "--tf", "2.21.0,2.16.2"])  # fmt: skip
    assert args.scenarios == ["init", "seeded_init", "cnn_training"]
    assert args.tf == ["2.15.1", "2.21.0", "2.16.2"]
    loaded, _, _ = cli.load_plan(args)
    assert loaded.scenarios == ("init", "seeded_init", "cnn_training")


def test_an_unknown_scenario_flag_blames_the_flag_not_the_matrix_file():
    from repromatrix import cli

    with pytest.raises(ConfigurationError) as raised:
        cli.load_plan(cli.parser().parse_args(["run", "--scenario", "init,nope"]))
    assert raised.value.message.startswith("--scenario nope: not a known scenario; known scenarios: ")
    assert "matrix.toml" not in raised.value.message


def test_the_staging_limit_names_the_largest_file_by_its_path_in_the_folder(tmp_path):
    from repromatrix.harness.catalog import ScenarioClash, staged_files

    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "blob.bin", "wb") as handle:
        handle.truncate(51 * 1024 * 1024)
    with pytest.raises(ScenarioClash, match=r"\(largest: data/blob\.bin, 51 MiB\)"):
        staged_files([tmp_path])
