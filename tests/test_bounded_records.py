"""Records stay small whatever the model: whole-array digests, bounded keeping, estimated distances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from repromatrix import reporting
from repromatrix.harness import fileio, records
from repromatrix.harness.layout import CellLayout

BIG = (16, 224, 224, 16)  # a (16, 224, 224, 16) float32 activation: 51 MB whole


def big_arrays(nudge: int | None = None) -> dict[str, np.ndarray]:
    """A segmentation-sized prediction, small weights, and per-layer outputs of the same size."""
    values = np.linspace(0.25, 0.75, num=int(np.prod(BIG)), dtype=np.float32).reshape(BIG)
    if nudge is not None:  # one value one ulp up
        flat = values.reshape(-1)
        flat[nudge] = np.nextafter(flat[nudge], np.float32(np.inf))
    weights = np.arange(1000, dtype=np.float32) / 7
    arrays = {}
    for model in ("model1", "model2"):
        arrays[f"{model}.predictions"] = values
        arrays[f"{model}.weights"] = weights
        arrays[f"{model}.layer.00.conv2d"] = values
    return arrays


def write(root, cell_id: str, repeat: int, arrays: dict[str, np.ndarray]) -> records.Record:
    path = CellLayout(root / cell_id).record("seg", "seeded", repeat)
    record = records.Record.ok(arrays=arrays, in_process_identical=True, scenario="seg", variant="seeded", seed=42,
                               repeat=repeat, cell={"id": cell_id, "tf": cell_id.split("-")[0][2:], "device": "cpu",
                                     "onednn": "onednn1" in cell_id},
                               reuse_key="key")  # fmt: skip
    record.write(path, arrays)
    return record


@pytest.mark.slow  # tens of MB of arrays
def test_a_large_output_gives_a_small_record_whose_digest_still_tells_one_ulp(tmp_path):
    off_sample = int(np.setdiff1d(np.arange(5000), records.sample_positions(int(np.prod(BIG))))[0])
    first = write(tmp_path, "tf2.21.0-cpu-onednn1-det0", 0, big_arrays())
    second = write(tmp_path, "tf2.21.0-cpu-onednn0-det0", 0, big_arrays(nudge=off_sample))
    path = CellLayout(tmp_path / "tf2.21.0-cpu-onednn1-det0").record("seg", "seeded", 0)
    size = path.stat().st_size + records.arrays_path(path).stat().st_size
    assert size <= 2 * 1024 * 1024, size
    # The one-ulp change sits where no sample looks; the whole-array digest still sees it.
    assert first.outputs["model1.predictions"].sampled
    assert first.outputs["model1.predictions"] != second.outputs["model1.predictions"]
    assert first.outputs["model1.weights"] == second.outputs["model1.weights"]
    assert not first.outputs["model1.weights"].sampled  # compared outputs are kept whole while they fit
    layer = first.outputs["model1.layer.00.conv2d"]
    assert layer.sampled and layer.stats["nonfinite"] == 0 and layer.stats["max_abs"] == 0.75
    raw = json.loads(path.read_text())["outputs"]["model1.predictions"]
    assert raw["kept"]["values"] == records.SAMPLE_VALUES and raw["shape"] == list(BIG)


@pytest.mark.slow  # tens of MB of arrays
def test_the_report_labels_a_distance_read_on_a_sample_as_estimated(tmp_path):
    positions = records.sample_positions(int(np.prod(BIG)))
    write(tmp_path, "tf2.21.0-cpu-onednn1-det0", 0, big_arrays())
    write(tmp_path, "tf2.21.0-cpu-onednn1-det0", 1, big_arrays())
    write(tmp_path, "tf2.21.0-cpu-onednn0-det0", 0, big_arrays(nudge=int(positions[3])))
    write(tmp_path, "tf2.21.0-cpu-onednn0-det0", 1, big_arrays(nudge=int(positions[3])))
    report = reporting.build([tmp_path])
    table = next(t for t in report.tables if t.output == "model1.predictions")
    assert len(table.classes) == 2
    distance = table.pairs[0].distance
    assert distance.max_ulp == 1
    assert distance.estimated == f"estimated from {positions.size} of {int(np.prod(BIG))} values"
    assert "estimated from" in distance.brief()
    onednn = next(a for a in report.attribution if a.axis == "onednn" and a.output == "model1.predictions")
    assert onednn.differ == 1 and "estimated" in onednn.distance.brief()


@pytest.mark.slow  # tens of MB of arrays
def test_a_difference_outside_the_sample_is_said_to_lie_elsewhere(tmp_path):
    off_sample = int(np.setdiff1d(np.arange(5000), records.sample_positions(int(np.prod(BIG))))[0])
    write(tmp_path, "tf2.21.0-cpu-onednn1-det0", 0, big_arrays())
    write(tmp_path, "tf2.21.0-cpu-onednn0-det0", 0, big_arrays(nudge=off_sample))
    table = next(t for t in reporting.build([tmp_path]).tables if t.output == "model1.predictions")
    assert len(table.classes) == 2
    assert "the bits differ elsewhere" in table.pairs[0].distance.brief()


def test_a_tampered_sample_is_not_reused(tmp_path):
    record = write(tmp_path, "tf2.21.0-cpu-onednn1-det0", 0, big_arrays())
    path = CellLayout(tmp_path / "tf2.21.0-cpu-onednn1-det0").record("seg", "seeded", 0)
    assert records.is_reusable(path, "key")
    kept = records.load_arrays(records.arrays_path(path))
    kept["model1.predictions"] = kept["model1.predictions"].copy()
    kept["model1.predictions"][0] += 1
    fileio.write_npz(records.arrays_path(path), kept)
    assert not records.is_reusable(path, "key")
    assert record.outputs["model1.predictions"].sampled


def test_sample_positions_are_fixed_for_every_process_and_numpy_version():
    # Plain float64 arithmetic: these numbers may never change, or old records' samples stop comparing.
    positions = records.sample_positions(1_000_000)
    assert positions.size == records.SAMPLE_VALUES
    assert positions[:5].tolist() == [0, 1919, 3838, 5024, 6944]
    assert records.sample_positions(1_000_000).tolist() == positions.tolist()


def test_the_budget_keeps_predictions_first_then_weights_then_samples(tmp_path):
    arrays = {
        "model1.predictions": np.zeros(20_000, dtype=np.float32),  # 80 KB
        "model1.weights": np.zeros(20_000, dtype=np.float32),  # 80 KB
        "model2.predictions": np.zeros(20_000, dtype=np.float32),
        "model2.weights": np.zeros(20_000, dtype=np.float32),
        "model1.epoch.01.loss": np.float64(0.5),  # small arrays are always whole
    }
    outputs = records.bound(arrays, 200_000)
    kept_whole = sorted(name for name, output in outputs.items() if not output.sampled)
    assert kept_whole == ["model1.epoch.01.loss", "model1.predictions", "model1.weights"]
    assert all(output.sampled for output in records.bound(arrays, 0).values() if output.size > 512)


def test_the_bench_measures_record_sizes_and_report_scaling_on_synthetic_records(tmp_path):
    from repromatrix import bench

    [row] = bench.report_scaling(tmp_path / "scaling", counts=(6,))
    assert row[0] == "6" and float(row[1]) > 0 and float(row[3]) > 0
    bench.synthetic_records(tmp_path / "r", 6)
    sizes = bench.record_sizes(tmp_path / "r")
    assert sizes[0][:2] == ["cnn_training-seeded", "6"] and sizes[-1][0] == "all"
    assert int(sizes[0][3].replace(",", "")) < 300_000  # a CNN-shaped record stays within its budget
    assert callable(bench._per_scenario)
