"""The real machine a record was measured on: a fingerprint the report groups by, and a readable label.

The hardware axes *emulate* other machines on one host (cores, an instruction-set cap); the
host *is* one. Two CPUs with the same instruction sets can still give different bits (an AMD
EPYC and an Intel Xeon, both AVX-512, differ in seeded training under oneDNN), so results from
several hosts meet in one report with host as an axis, and run to run is judged within one host.

Standard library only: it runs in the orchestrator and inside any TensorFlow image.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# ISA extensions that decide which CPU kernels oneDNN and Eigen pick.
DECIDING_FLAGS = (
    "sse4_1", "sse4_2", "fma", "f16c", "avx", "avx2", "avx_vnni", "avx512f", "avx512dq", "avx512cd",
    "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
# Who names the host when the derived label will not do (`--host NAME` sets it for one run).
HOST_ENV = "REPROMATRIX_HOST"
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def cpuinfo(text: str | None = None) -> dict[str, Any]:
    """Vendor, model and the oneDNN-relevant ISA flags of the first CPU in /proc/cpuinfo."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("vendor_id", "model name", "flags") and key not in found:
            found[key] = value
    flags = set(found.get("flags", "").split())
    return {
        "vendor": VENDORS.get(found.get("vendor_id", ""), found.get("vendor_id") or platform.machine() or "unknown"),
        "model": found.get("model name") or platform.processor() or None,
        "isa": sorted(flag for flag in DECIDING_FLAGS if flag in flags),
        "flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest() if flags else None,
    }


def _gpus() -> list[str]:
    """NVIDIA GPUs the kernel driver lists (no TensorFlow needed), with the driver version."""
    driver = ""
    try:
        driver = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        match = re.search(r"Kernel Module\s+([\d.]+)", driver)
        driver = match.group(1) if match else driver.strip()
    except (OSError, IndexError):
        return []
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            model = next(line for line in info.read_text().splitlines() if line.startswith("Model:"))
            names.append(f"{model.split(':', 1)[1].strip()} (driver {driver})")
        except (OSError, StopIteration):
            continue
    return names


def _libc() -> str | None:
    return "-".join(part for part in platform.libc_ver() if part) or None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset or the cpus axis sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def first_cores(count: int) -> list[int]:
    """The first `count` of the cores this process may use: what the cpus axis gives a cell's processes."""
    return sorted(os.sched_getaffinity(0))[:count]


def restrict_cores(count: int) -> str:
    """Run this process, and so every process it starts, on `count` cores; '' or why it cannot."""
    allowed = usable_cores()
    if count > allowed:
        return f"needs {count} cores, this process may use {allowed}"
    os.sched_setaffinity(0, first_cores(count))
    return ""


@dataclass(frozen=True)
class Host:
    """A real machine: what decides the bits (CPU, cores, GPUs: its `id`), what is good to know (kernel,
    libc), and the label a person knows it by."""

    vendor: str = ""
    model: str | None = None
    isa: tuple[str, ...] = ()
    cores: int | None = None
    gpus: tuple[str, ...] = ()
    kernel: str | None = None
    libc: str | None = None
    id: str = ""
    label: str = ""
    # What this machine computes and what a plain run gets under the cell's TF (harness/hostprobe.py):
    # measured in the cell, beside the fingerprint, never part of its `id`.
    computes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        raw = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not raw["computes"]:
            del raw["computes"]  # records and reports that predate it keep their shape
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> Host:
        """A record's or report's host (fields it predates take their defaults, unknown ones are ignored)."""
        if not isinstance(raw, dict):
            return cls()
        values = {f.name: raw[f.name] for f in fields(cls) if raw.get(f.name) is not None}
        for name in ("isa", "gpus"):
            if name in values:
                values[name] = tuple(str(item) for item in values[name])
        return cls(**values)

    def with_label(self, label: str) -> Host:
        return Host(**{**asdict(self), "label": label})


def derived_label(host: Host) -> str:
    """`amd-epyc-avx512-2c`, `intel-xeon-avx512-amx-2c`: vendor, model family, ISA level, cores."""
    model = (host.model or "").lower()
    model = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", model)
    words = [w for w in re.split(r"[^a-z0-9]+", model) if w and w != host.vendor]
    isa = set(host.isa)
    level = "avx512" if "avx512f" in isa else "avx2" if "avx2" in isa else "avx" if "avx" in isa else "sse"
    if "amx_tile" in isa:
        level += "-amx"
    parts = [host.vendor or "cpu", *(words[:1]), level, f"{host.cores or '?'}c"]
    if host.gpus:
        parts.append("gpu")
    return "-".join(parts)


def fingerprint(label: str | None = None, text: str | None = None) -> Host:
    """This machine, labelled `label`, else $REPROMATRIX_HOST, else by a label derived from the rest."""
    cpu = cpuinfo(text)
    host = Host(vendor=cpu["vendor"], model=cpu["model"], isa=tuple(cpu["isa"]), cores=os.cpu_count(),
                gpus=tuple(_gpus()), kernel=platform.release() or None, libc=_libc())  # fmt: skip
    decides = {"vendor": host.vendor, "model": host.model, "isa": list(host.isa), "cores": host.cores,
               "gpus": list(host.gpus)}  # fmt: skip
    host_id = hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()[:12]
    host = Host(**{**asdict(host), "id": host_id})
    return host.with_label(label or os.environ.get(HOST_ENV) or derived_label(host))


def check_label(label: str) -> str | None:
    """Why a host label cannot be used (it names folders and report columns), or None."""
    if not LABEL.match(label):
        return "use letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit"
    return None


def describe(host: Host) -> str:
    """'amd-epyc-avx512-2c (AMD EPYC, 2 cores, avx512f…)' for headers and headlines."""
    level = next((flag for flag in ("amx_tile", "avx512f", "avx2", "avx") if flag in host.isa), "no AVX")
    gpus = f", {', '.join(host.gpus)}" if host.gpus else ""
    return f"{host.label} ({host.model or host.vendor}, {host.cores} cores, {level}{gpus})"
