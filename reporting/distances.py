"""How far apart two arrays are: the largest absolute gap, ULP distance and relative error, exact over whole
arrays or estimated over the sample a bounded record kept. Numbers only; the words are the report's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from repromatrix.harness import records
from repromatrix.reporting.load import Loaded

# "Numerically the same, not bit-identical": classes this close are grouped in the tolerance view.
TOLERANCE_ULP = 16
# Past this many ULP (different signs or magnitudes) a ULP count says nothing; relative error does.
HUGE_ULP = 10_000_000
# Values this small make large ULP counts from tiny differences (1e-7 and 1.3e-7 are 524288 ULP apart).
NEAR_ZERO = 1e-5
# A published report.json keeps digests, not arrays: what needs arrays says so.
UNAVAILABLE = (
    "arrays unavailable (one side is a published report: digests only)"  # records made before hosts were recorded
)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Largest number of representable floats between matching elements."""
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise TypeError(f"ULP distance needs two float arrays of one dtype, got {a.dtype} and {b.dtype}")
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x: np.ndarray) -> np.ndarray:
        # Map IEEE bit patterns onto a line where adjacent floats are adjacent integers (-0 == +0).
        raw = x.view(bits).astype(object) if bits is np.int64 else x.view(bits).astype(np.int64)
        low = -(2 ** (8 * a.dtype.itemsize - 1))
        return np.where(raw < 0, low - raw, raw)

    if a.size == 0:
        return 0
    return int(np.max(np.abs(ordered(a.ravel()) - ordered(b.ravel()))))


@dataclass(frozen=True)
class Distance:
    max_abs: float | None = None
    max_ulp: int | None = None
    max_rel: float | None = None
    near_zero: bool = False  # the largest ULP gap sits at values below NEAR_ZERO
    note: str = ""
    # (values compared, values in the array) when a record kept only a sample; None: exact
    sampled: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_ulp": self.max_ulp, "max_rel": self.max_rel,
                "near_zero": self.near_zero, "note": self.note, "estimated": self.estimated}  # fmt: skip

    @property
    def estimated(self) -> str:
        """'estimated from 512 of 802816 values' where a record kept a sample; '' when exact."""
        return f"estimated from {self.sampled[0]} of {self.sampled[1]} values" if self.sampled else ""

    @property
    def ulp_meaningful(self) -> bool:
        """Near zero a large count is explained (floats are dense there); elsewhere past HUGE_ULP it is noise."""
        return self.max_ulp is not None and (self.near_zero or self.max_ulp <= HUGE_ULP)

    def brief(self) -> str:
        """'|Δ| ≤ 3e-08, 4 ULP' — relative error instead of a meaningless ULP count."""
        if self.max_abs is None:
            return self.note or "not comparable"
        if self.max_abs == 0 and self.sampled:
            kept, size = self.sampled
            return f"no difference among the {kept} sampled values of {size} (the bits differ elsewhere)"
        if self.max_abs == 0:
            return "equal values, different bits (e.g. -0 and +0)"
        parts = [f"|Δ| {'≥' if self.sampled else '≤'} {self.max_abs:.2g}"]
        if self.ulp_meaningful:
            parts.append(f"{self.max_ulp} ULP" + (" near zero" if self.near_zero else ""))
        elif self.max_rel is not None:
            parts.append(f"relative {self.max_rel:.2g}")
        if self.sampled:
            parts.append(self.estimated)
        return ", ".join(parts)

    def ulp_cell(self) -> str:
        """The ULP column of a table: the count when it means something, else the relative error."""
        if self.max_ulp is None:
            return ""
        if self.ulp_meaningful:
            return f"{self.max_ulp}" + (" *" if self.near_zero else "")
        return f"rel {self.max_rel:.2g}" if self.max_rel is not None else "—"

    def worse(self, other: Distance) -> Distance:
        if other.max_abs is None:
            return self if self.max_abs is not None or self.note else other  # keep why it is not comparable
        if self.max_abs is None or (other.max_abs, other.max_ulp or 0) > (self.max_abs, self.max_ulp or 0):
            return other
        return self


def compare_arrays(a: np.ndarray, b: np.ndarray) -> Distance:
    if a.shape != b.shape:
        return Distance(note=f"shapes differ: {a.shape} vs {b.shape}")
    if a.dtype != b.dtype:
        return Distance(note=f"dtypes differ: {a.dtype} vs {b.dtype}")
    if a.dtype.kind not in "fiub" or a.size == 0:
        return Distance(max_abs=0.0 if a.size == 0 else None, note="" if a.size == 0 else f"{a.dtype} arrays")
    wide_a, wide_b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    gap = np.abs(wide_a - wide_b)
    scale = np.maximum(np.abs(wide_a), np.abs(wide_b))
    # Relative to the array's largest magnitude (norm-wise): element-wise ratios blow up at values near zero.
    largest = float(scale.max())
    rel = float(gap.max()) / largest if largest > 0 else 0.0
    ulp = ulp_distance(a, b) if a.dtype.kind == "f" else None
    near_zero = False
    if ulp is not None and a.dtype.kind == "f":
        bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
        steps = np.abs(a.ravel().view(bits).astype(np.float64) - b.ravel().view(bits).astype(np.float64))
        worst = int(np.argmax(steps))
        near_zero = bool(scale[worst] < NEAR_ZERO and ulp > TOLERANCE_ULP)
    return Distance(float(gap.max()), ulp, rel, near_zero)


class Arrays:
    """npz files loaded once per report."""

    def __init__(self) -> None:
        self._cache: dict[Path, dict[str, np.ndarray] | records.RecordError] = {}

    def get(self, loaded: Loaded) -> dict[str, np.ndarray]:
        if loaded.arrays_path not in self._cache:
            try:
                self._cache[loaded.arrays_path] = loaded.arrays()
            except records.RecordError as exc:
                self._cache[loaded.arrays_path] = exc
        value = self._cache[loaded.arrays_path]
        if isinstance(value, records.RecordError):
            raise value
        return value

    def distance(self, left: Loaded | None, right: Loaded | None, output: str) -> Distance:
        """Exact where both records kept the array whole; estimated on the shared sample positions otherwise."""
        if left is None or right is None:
            return Distance(note=UNAVAILABLE)
        try:
            a, b = self.get(left)[output], self.get(right)[output]
            kept_a, kept_b = left.record.outputs[output], right.record.outputs[output]
        except (records.RecordError, KeyError) as exc:
            return Distance(note=f"arrays unreadable: {exc}")
        if not (kept_a.sampled or kept_b.sampled):
            return compare_arrays(a, b)
        if kept_a.shape != kept_b.shape:
            return Distance(note=f"shapes differ: {kept_a.shape} vs {kept_b.shape}")
        # Both sides at the same positions: a whole array is read where the other kept its sample.
        a, b = (kept_b.kept_of(a) if not kept_a.sampled else a), (kept_a.kept_of(b) if not kept_b.sampled else b)
        if a.shape != b.shape:
            return Distance(note="samples of different sizes (records made with different SAMPLE_VALUES)")
        return replace(compare_arrays(a, b), sampled=(int(a.size), kept_a.size))
