"""The axes of the matrix: one table, read by everything that plans, applies, records or reports a cell.

The planner validates matrix.toml against it and builds `Cell` from it; the runner turns a cell into
harness flags with it; the harness parses those flags with it; the worker and a shell in a cell set
the environment variables it names; the reporter takes its labels and value order from it. Adding
an axis means a row here and the code that applies it (a TF call in the worker, a container setting).

Standard library only: imported inside every cell as well as on the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How an axis reaches a cell.
IMAGE = "image"  # the environment is built for it (an image or virtualenv per value)
ENV = "environment variable"  # set before TensorFlow loads
TF_CALL = "TF call"  # made after import, before TF creates its runtime
AFFINITY = "CPU affinity"  # the harness, and so every scenario process, runs on that many cores

# The highest instruction set oneDNN may dispatch to (ONEDNN_MAX_CPU_ISA), oldest first; "native": no cap.
CPU_ISAS = ("sse41", "avx", "avx2", "avx2_vnni", "avx512_core", "avx512_core_vnni", "avx512_core_bf16",
            "avx512_core_amx", "native")  # fmt: skip
# The CPU flags (/proc/cpuinfo) each cap needs from the host: a cap above what the CPU has cannot
# emulate anything, so such a cell is skipped rather than silently uncapped.
_AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "sse41": ("sse4_1",),
    "avx": ("avx",),
    "avx2": ("avx2",),
    "avx2_vnni": ("avx2", "avx_vnni"),
    "avx512_core": _AVX512,
    "avx512_core_vnni": (*_AVX512, "avx512_vnni"),
    "avx512_core_bf16": (*_AVX512, "avx512_vnni", "avx512_bf16"),
    "avx512_core_amx": (*_AVX512, "amx_tile", "amx_bf16", "amx_int8"),
}
_VERSION = re.compile(r"^\d+(\.\d+)*(\.post\d+)?$")


def is_of(value: Any, kind: type | tuple[type, ...]) -> bool:
    """`isinstance`, except that true is not 1: bool is an int in Python, not in a config file."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _on_off(value: bool) -> str:
    return "on" if value else "off"


@dataclass(frozen=True)
class Axis:
    """One axis: what values it takes, in which order, how it is named and how it reaches a cell."""

    name: str
    kind: type  # of each value: str, bool or int
    label: str  # how a person reads the axis
    reaches: str  # IMAGE, ENV, TF_CALL, AFFINITY, or several joined by " + "
    help: str
    # Allowed values in their order (oldest, fewest, off first); () : any value `check` accepts, in
    # numeric or version order.
    values: tuple[Any, ...] = ()
    default: Any = None  # what a cell has when matrix.toml does not say; None: matrix.toml must say
    planned: tuple[Any, ...] = ()  # what matrix.toml gets when it leaves the axis out
    check: Callable[[Any], str] = lambda value: ""  # why a value is not allowed, or ""
    # How the value appears in a cell id; None: left out (at its default, so ids made before the
    # axis existed stay valid).
    in_id: Callable[[Any], str | None] = str
    # How the value reads in a report.
    show: Callable[[Any], str] = str
    # The environment variables the value sets (ENV axes).
    env: Callable[[Any], dict[str, str]] = lambda value: {}

    @property
    def flag(self) -> str:
        """The harness's flag, for axes applied at run time."""
        return "--" + self.name.replace("_", "-")

    @property
    def at_run_time(self) -> bool:
        """Applied by the harness from its flags (cells differing only in it share an environment)."""
        return IMAGE not in self.reaches

    def order(self, value: Any) -> tuple[int, Any]:
        """Where a value sits on the axis, for pairing neighbours and ordering tables."""
        if self.values and value in self.values:
            return (0, self.values.index(value))
        if isinstance(value, bool):
            return (0, int(value))
        if isinstance(value, int | float):
            return (0, value)
        if isinstance(value, str) and _VERSION.match(value):
            return (0, tuple(int(part) for part in re.findall(r"\d+", value)))
        return (1, str(value))

    def to_text(self, value: Any) -> str:
        """The value as a harness flag carries it."""
        return _on_off(value) if self.kind is bool else str(value)

    def from_text(self, text: str) -> Any:
        """A harness flag's value back; ValueError saying what was expected."""
        if self.kind is bool:
            if text.lower() in ("1", "on", "true", "yes"):
                return True
            if text.lower() in ("0", "off", "false", "no"):
                return False
            raise ValueError(f"expected on or off, got {text!r}")
        value = self.kind(text)
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def problem(self, value: Any) -> str:
        """Why `value` is not allowed on this axis, or ""."""
        if not is_of(value, self.kind):
            return f"each value must be {type_name(self.kind)}"
        if self.values and value not in self.values:
            return f"allowed: {', '.join(map(str, self.values))}"
        return self.check(value)


def _count(what: str) -> Callable[[Any], str]:
    return lambda value: "" if value >= 0 else f"0 ({what}) or a positive number"


def _tf_version(value: str) -> str:
    return "" if re.match(r"^2\.\d+\.\d+(\.post\d+)?$", value) else 'write a full TensorFlow 2 release, e.g. "2.16.2"'


def _cores(value: int) -> str:
    return "all cores" if value == 0 else f"{value} core{'s' if value != 1 else ''}"


AXES: tuple[Axis, ...] = (
    Axis("tf", str, "TensorFlow", IMAGE, "TensorFlow release the cell's environment is built with",
         planned=("2.15.1", "2.16.2", "2.21.0"), check=_tf_version, in_id=lambda v: f"tf{v}"),
    Axis("device", str, "device", IMAGE, "cpu, or cuda (needs an NVIDIA GPU and runtime)",
         values=("cpu", "cuda"), planned=("cpu",)),
    Axis("recipe", str, "image recipe", IMAGE, "pip: TF from PyPI on the base image; official: TF's own image",
         values=("pip", "official"), default="pip", planned=("pip",),
         in_id=lambda v: None if v == "pip" else v),
    Axis("onednn", bool, "oneDNN", ENV, "oneDNN's optimised CPU kernels (TF_ENABLE_ONEDNN_OPTS)",
         values=(False, True), default=True, planned=(True,), in_id=lambda v: f"onednn{int(v)}", show=_on_off,
         env=lambda v: {"TF_ENABLE_ONEDNN_OPTS": "1" if v else "0"}),
    Axis("op_determinism", bool, "op determinism", f"{ENV} + {TF_CALL}",
         "tf.config.experimental.enable_op_determinism (and TF_DETERMINISTIC_OPS, which TF before 2.8 reads)",
         values=(False, True), default=False, planned=(False,), in_id=lambda v: f"det{int(v)}", show=_on_off,
         env=lambda v: {"TF_DETERMINISTIC_OPS": "1"} if v else {}),
    Axis("intra_op_threads", int, "intra-op threads", TF_CALL,
         "tf.config.threading.set_intra_op_parallelism_threads (0: TF's default)",
         default=0, planned=(0,), check=_count("TF's default"), in_id=lambda v: f"intra{v}" if v else None,
         show=lambda v: "TF default" if v == 0 else str(v)),
    Axis("inter_op_threads", int, "inter-op threads", TF_CALL,
         "tf.config.threading.set_inter_op_parallelism_threads (0: TF's default)",
         default=0, planned=(0,), check=_count("TF's default"), in_id=lambda v: f"inter{v}" if v else None,
         show=lambda v: "TF default" if v == 0 else str(v)),
    Axis("cpus", int, "cores", AFFINITY, "cores the scenario processes may run on (0: every core the host offers)",
         default=0, planned=(0,), check=_count("every core the host offers"),
         in_id=lambda v: f"cpus{v}" if v else None, show=_cores),
    Axis("cpu_isa", str, "CPU instruction set", ENV,
         "the newest instruction set oneDNN may dispatch to (ONEDNN_MAX_CPU_ISA); native: no cap",
         values=CPU_ISAS, default="native", planned=("native",),
         in_id=lambda v: None if v == "native" else f"isa-{v.replace('_', '')}",
         show=lambda v: "native (no cap)" if v == "native" else v,
         # oneDNN reads its dispatch cap once, when it first runs a kernel.
         env=lambda v: {} if v == "native" else {"ONEDNN_MAX_CPU_ISA": v.upper()}),
)  # fmt: skip
BY_NAME: dict[str, Axis] = {axis.name: axis for axis in AXES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
AT_RUN_TIME: tuple[Axis, ...] = tuple(axis for axis in AXES if axis.at_run_time)
# Not planned: the machine the records come from, an axis of the report when several meet in one.
HOST = Axis("host", str, "host", "the machine", "the machine the records come from")


def axis(name: str) -> Axis:
    """The axis of that name (the host too); an unknown name, from a newer record, reads as itself."""
    if name == HOST.name:
        return HOST
    return BY_NAME.get(name) or Axis(name, str, name, "", "")


def defaults() -> dict[str, Any]:
    """Axis values a record made before that axis existed stands for."""
    return {a.name: a.default for a in AXES if a.default is not None}


def cell_id(values: dict[str, Any]) -> str:
    return "-".join(part for a in AXES if (part := a.in_id(values[a.name])) is not None)


def env(knobs: dict[str, Any]) -> dict[str, str]:
    """The environment variables the run-time axes set; a knob given as None is TF's own default."""
    found: dict[str, str] = {}
    for a in AT_RUN_TIME:
        if knobs.get(a.name) is not None:
            found.update(a.env(knobs[a.name]))
    return found
