"""Hardware axes with real TensorFlow: cores and oneDNN's instruction set, in force and in the bits."""

from __future__ import annotations

import pytest

from repromatrix import runner
from repromatrix.backends import ISA_FLAGS, host_cpu_flags, isa_lacking
from repromatrix.backends.local import LocalBackend
from repromatrix.harness import records
from repromatrix.harness.axes import Cell
from repromatrix.harness.hosts import usable_cores
from repromatrix.harness.layout import CellLayout
from repromatrix.matrix import DockerSettings, Matrix
from tests.conftest import NEWEST_TF, harness

pytestmark = pytest.mark.tf


def read(out, scenario, variant, repeat=0) -> records.Record:
    return records.Record.read(CellLayout(out).record(scenario, variant, repeat))


@pytest.fixture(scope="module")
def cnn_by_cores(tf_python, tmp_path_factory):
    """cnn_training seeded, oneDNN off, twice on 1 core and twice on 2."""
    if usable_cores() < 2:
        pytest.skip(f"needs 2 usable cores to compare 1 with 2, this host has {usable_cores()}")
    outs = {}
    for cpus in (1, 2):
        out = tmp_path_factory.mktemp(f"cpus{cpus}")
        done = harness(
            tf_python(NEWEST_TF), "cnn_training", "--variant", "seeded", "--repeat", "2", "--onednn", "off",
            "--cpus", str(cpus), "--out", str(out),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        outs[cpus] = out
    return outs


def test_cores_are_recorded_as_in_force(cnn_by_cores):
    pools = {}
    for cpus, out in cnn_by_cores.items():
        record = read(out, "cnn_training", "seeded")
        assert record.knobs["usable_cores"] == cpus
        assert record.environment["cpu"]["usable_cpus"] == cpus
        pools[cpus] = record.knobs["thread_pools"]["tf_Compute"]
    # TF sized its pools (its tf_Compute threads) from the cores it could use.
    assert pools[1] < pools[2]


def test_cnn_training_bits_follow_the_core_count_and_are_stable_within_each(cnn_by_cores):
    digests = {}
    for cpus, out in cnn_by_cores.items():
        both = [read(out, "cnn_training", "seeded", r).outputs["model1.weights"].sha256 for r in (0, 1)]
        assert both[0] == both[1], f"cpus={cpus} varied run to run"
        digests[cpus] = both[0]
    assert digests[1] != digests[2]


def test_a_capped_isa_is_recorded_as_what_onednn_reports(tf_python, tmp_path):
    done = harness(
        tf_python(NEWEST_TF), "seeded_init", "--repeat", "1", "--cpu-isa", "avx", "--out", str(tmp_path)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    knobs = read(tmp_path, "seeded_init", "seeded").knobs
    assert knobs["ONEDNN_MAX_CPU_ISA"] == "AVX"
    assert knobs["onednn_isa"] == "Intel AVX"  # oneDNN's own words, not what was asked


def test_hardware_the_host_lacks_is_skipped_with_the_reason(tmp_path, tf_python):
    # What this host lacks is read from this host: a core count above its own, and an ISA whose
    # flags its /proc/cpuinfo does not list (an AMD EPYC lacks AMX; an Intel Xeon with AMX may lack none).
    tf_python(NEWEST_TF)
    too_many = usable_cores() + 1
    lacking = isa_lacking(host_cpu_flags())
    cells = [Cell(NEWEST_TF, "cpu", cpus=too_many)]
    if lacking is not None:
        cells.append(Cell(NEWEST_TF, "cpu", cpu_isa=lacking))
    loaded = Matrix(cells=tuple(cells), scenarios=("seeded_init",), repeats=1, seed=42, timeout=300.0,
                    docker=DockerSettings(), source=tmp_path / "matrix.toml")  # fmt: skip
    outcomes = runner.run_matrix(LocalBackend(), loaded, cells, runner.RunOptions(tmp_path / "r"))
    assert [o.state for o in outcomes] == ["skipped"] * len(cells)
    assert outcomes[0].message == f"needs {too_many} cores, this host has {usable_cores()}"
    skipped = read(tmp_path / "r" / cells[0].id, "seeded_init", "seeded")
    assert skipped.status == "skipped" and skipped.message == outcomes[0].message
    if lacking is None:
        pytest.skip("this host's CPU has every instruction set the cpu_isa axis knows: no ISA cap to refuse")
    missing = [flag for flag in ISA_FLAGS[lacking] if flag not in host_cpu_flags()]
    assert outcomes[1].message == f"needs a CPU with {lacking} ({', '.join(missing)} missing on this host)"
