"""The axes of the matrix: one table, read by everything that plans, applies, records or reports a cell.

The planner validates matrix.toml against it; `Cell` holds a value of each; the runner hands the
harness a cell's run-time values as `Knobs`; the harness parses its own flags with it; the worker
and a shell in a cell set the environment variables it names and make the TF calls it names; the
reporter takes its labels and value order from it. Each row says how it reaches a cell (`Reach`) and
carries the hook that applies it there, so adding an axis is a row here (plus its `Cell` field).

Standard library only: imported inside every cell as well as on the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from . import hosts


class Reach(StrEnum):
    """How an axis reaches a cell."""

    IMAGE = "image"  # the environment is built for it (an image or virtualenv per value)
    ENV = "environment variable"  # set before TensorFlow loads
    TF_CALL = "TF call"  # made after import, before TF creates its runtime
    AFFINITY = "CPU affinity"  # the harness, and so every scenario process, runs on that many cores


# The cpu_isa value that caps nothing: oneDNN dispatches to whatever the CPU has.
NO_ISA_CAP = "native"
# The highest instruction set oneDNN may dispatch to (ONEDNN_MAX_CPU_ISA), oldest first; no cap last.
CPU_ISAS = ("sse41", "avx", "avx2", "avx2_vnni", "avx512_core", "avx512_core_vnni", "avx512_core_bf16",
            "avx512_core_amx", NO_ISA_CAP)  # fmt: skip
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
_VERSION = re.compile(r"^\d+(\.\d+)*(\.post\d+|\.dev\d+)?$")
# tf = "nightly": the newest tf-nightly, pinned by version when the matrix is loaded (repromatrix/nightly.py).
NIGHTLY = "nightly"
# keras: "3" is tf.keras as the release ships it (Keras 3 from TF 2.16, Keras 2 before); "tf-keras" is
# Keras 2 through the tf-keras package of the matching release, with TF_USE_LEGACY_KERAS=1.
KERAS_AS_SHIPPED, LEGACY_KERAS = "3", "tf-keras"
# The Python the committed locks are made for, and every cell runs on unless it says otherwise.
DEFAULT_PYTHON = "3.11"


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


def _no_env(value: Any) -> dict[str, str]:
    return {}


def _allowed(value: Any) -> str:
    return ""


@dataclass(frozen=True)
class Axis:
    """One axis: what values it takes, in which order, how it is named and how it reaches a cell."""

    name: str
    kind: type  # of each value: str, bool or int
    label: str  # how a person reads the axis
    reaches: frozenset[Reach]
    help: str
    # Allowed values in their order (oldest, fewest, off first); () : any value `check` accepts, in
    # numeric or version order.
    values: tuple[Any, ...] = ()
    default: Any = None  # what a cell has when matrix.toml does not say; None: matrix.toml must say
    planned: tuple[Any, ...] = ()  # what matrix.toml gets when it leaves the axis out
    check: Callable[[Any], str] = _allowed  # why a value is not allowed, or ""
    # How the value appears in a cell id; None: left out (at its default, so ids made before the
    # axis existed stay valid).
    in_id: Callable[[Any], str | None] = str
    # How the value reads in a report.
    show: Callable[[Any], str] = str
    # Reach.ENV: the environment variables the value sets, before TensorFlow loads.
    env: Callable[[Any], dict[str, str]] = _no_env
    # Reach.TF_CALL: the call made with (tf, value) after import, before TF creates its runtime.
    tf_call: Callable[[Any, Any], None] | None = None
    # Reach.AFFINITY: applied to the harness's own process (so to every process it starts) before any
    # starts; returns why it cannot be, or "".
    in_harness: Callable[[Any], str] | None = None

    @property
    def flag(self) -> str:
        """The harness's flag, for axes applied at run time."""
        return "--" + self.name.replace("_", "-")

    @property
    def at_run_time(self) -> bool:
        """Applied by the harness (cells differing only in it share an environment)."""
        return Reach.IMAGE not in self.reaches

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
        if isinstance(value, list | tuple):  # package pins: by name, then version
            return (0, tuple((str(pin[0]), self.order(pin[1])) for pin in value))
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


def is_nightly(tf: str) -> bool:
    """A tf-nightly version (2.23.0.dev20261026), as `nightly` is pinned to."""
    return ".dev" in tf


def _tf_version(value: str) -> str:
    if value == NIGHTLY or re.match(r"^2\.\d+\.\d+(\.post\d+|\.dev\d{8})?$", value):
        return ""
    return 'write a full TensorFlow 2 release, e.g. "2.16.2", or "nightly"'


def _python_version(value: str) -> str:
    return "" if re.match(r"^3\.\d+$", value) else 'write a Python minor version, e.g. "3.13"'


def _packages_id(pins: tuple[tuple[str, str], ...]) -> str | None:
    return "-".join(f"{name}{version}" for name, version in pins) or None


def _packages_show(pins: Any) -> str:
    return ", ".join(f"{name} {version}" for name, version in pins) or "as locked"


def _keras_env(value: str) -> dict[str, str]:
    # Read by TensorFlow when `tf.keras` is first touched: tf.keras is then tf_keras (Keras 2).
    return {"TF_USE_LEGACY_KERAS": "1"} if value == LEGACY_KERAS else {}


def _cores(value: int) -> str:
    return "all cores" if value == 0 else f"{value} core{'s' if value != 1 else ''}"


def _intra_op_threads(tf: Any, count: int) -> None:
    if count:  # 0: TF's own default, so nothing is called
        tf.config.threading.set_intra_op_parallelism_threads(int(count))


def _inter_op_threads(tf: Any, count: int) -> None:
    if count:
        tf.config.threading.set_inter_op_parallelism_threads(int(count))


def _op_determinism(tf: Any, on: bool) -> None:
    # TF before 2.8 has no such call; it reads TF_DETERMINISTIC_OPS, which the axis also sets.
    if on and hasattr(tf.config.experimental, "enable_op_determinism"):
        tf.config.experimental.enable_op_determinism()


def _restrict_cores(count: int) -> str:
    return hosts.restrict_cores(count) if count else ""


def _isa_env(value: str) -> dict[str, str]:
    # oneDNN reads its dispatch cap once, when it first runs a kernel.
    return {} if value == NO_ISA_CAP else {"ONEDNN_MAX_CPU_ISA": value.upper()}


IMAGE, ENV, TF_CALL, AFFINITY = (frozenset({reach}) for reach in Reach)


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
    Axis("op_determinism", bool, "op determinism", ENV | TF_CALL,
         "tf.config.experimental.enable_op_determinism (and TF_DETERMINISTIC_OPS, which TF before 2.8 reads)",
         values=(False, True), default=False, planned=(False,), in_id=lambda v: f"det{int(v)}", show=_on_off,
         env=lambda v: {"TF_DETERMINISTIC_OPS": "1"} if v else {}, tf_call=_op_determinism),
    Axis("intra_op_threads", int, "intra-op threads", TF_CALL,
         "tf.config.threading.set_intra_op_parallelism_threads (0: TF's default)",
         default=0, planned=(0,), check=_count("TF's default"), in_id=lambda v: f"intra{v}" if v else None,
         show=lambda v: "TF default" if v == 0 else str(v), tf_call=_intra_op_threads),
    Axis("inter_op_threads", int, "inter-op threads", TF_CALL,
         "tf.config.threading.set_inter_op_parallelism_threads (0: TF's default)",
         default=0, planned=(0,), check=_count("TF's default"), in_id=lambda v: f"inter{v}" if v else None,
         show=lambda v: "TF default" if v == 0 else str(v), tf_call=_inter_op_threads),
    Axis("cpus", int, "cores", AFFINITY, "cores the scenario processes may run on (0: every core the host offers)",
         default=0, planned=(0,), check=_count("every core the host offers"),
         in_id=lambda v: f"cpus{v}" if v else None, show=_cores, in_harness=_restrict_cores),
    Axis("cpu_isa", str, "CPU instruction set", ENV,
         "the newest instruction set oneDNN may dispatch to (ONEDNN_MAX_CPU_ISA); native: no cap",
         values=CPU_ISAS, default=NO_ISA_CAP, planned=(NO_ISA_CAP,),
         in_id=lambda v: None if v == NO_ISA_CAP else f"isa-{v.replace('_', '')}",
         show=lambda v: "native (no cap)" if v == NO_ISA_CAP else v, env=_isa_env),
    # Environment axes (issue 33): each is left out of the cell id at its default, so older ids stay valid.
    Axis("keras", str, "Keras", IMAGE | ENV,
         '"3": tf.keras as the release ships it; "tf-keras": Keras 2 from tf-keras with TF_USE_LEGACY_KERAS=1 '
         "(TF 2.16 and later)", values=(KERAS_AS_SHIPPED, LEGACY_KERAS), default=KERAS_AS_SHIPPED,
         planned=(KERAS_AS_SHIPPED,), in_id=lambda v: None if v == KERAS_AS_SHIPPED else "tfkeras", env=_keras_env),
    Axis("python", str, "Python", IMAGE, "the Python minor version the cell's environment is built on",
         default=DEFAULT_PYTHON, planned=(DEFAULT_PYTHON,), check=_python_version,
         in_id=lambda v: None if v == DEFAULT_PYTHON else f"py{v}"),
    # Not listed in matrix.toml as values: [matrix] packages = { numpy = ["1.26.4", "2.1.3"] } makes them.
    Axis("packages", tuple, "package pins", IMAGE,
         "packages pinned on top of the cell's lock ([matrix] packages = { numpy = [...] })",
         default=(), planned=((),), in_id=_packages_id, show=_packages_show),
)  # fmt: skip
BY_NAME: dict[str, Axis] = {axis.name: axis for axis in AXES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
AT_RUN_TIME: tuple[Axis, ...] = tuple(axis for axis in AXES if axis.at_run_time)
# Not planned: the machine the records come from, an axis of the report when several meet in one.
HOST = Axis("host", str, "host", frozenset(), "the machine the records come from")


def axis(name: str) -> Axis:
    """The axis of that name (the host too); an unknown name, from a newer record, reads as itself."""
    if name == HOST.name:
        return HOST
    return BY_NAME.get(name) or Axis(name, str, name, frozenset(), "")


def defaults() -> dict[str, Any]:
    """Axis values a record made before that axis existed stands for."""
    return {a.name: a.default for a in AXES if a.default is not None}


def cell_id(values: dict[str, Any]) -> str:
    return "-".join(part for a in AXES if (part := a.in_id(values[a.name])) is not None)


@dataclass(frozen=True, order=True)
class Cell:
    """One environment: a value of every axis (TF version × device × recipe × knobs × emulated hardware).

    Its fields are the table's names with the table's defaults (a test holds them to it)."""

    tf: str
    device: str
    recipe: str = "pip"
    onednn: bool = True
    op_determinism: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    cpus: int = 0
    cpu_isa: str = NO_ISA_CAP
    keras: str = KERAS_AS_SHIPPED
    python: str = DEFAULT_PYTHON
    # (name, version) pins over the lock, sorted by name.
    packages: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        """Axes at their defaults are left out, so ids made before an axis existed stay valid."""
        return cell_id(asdict(self))

    @property
    def environment(self) -> tuple[Any, ...]:
        """Cells that differ only in run-time axes share one image or virtualenv."""
        return tuple(getattr(self, a.name) for a in AXES if not a.at_run_time)

    @property
    def knobs(self) -> Knobs:
        return Knobs(**{a.name: getattr(self, a.name) for a in AT_RUN_TIME})

    def params(self) -> dict[str, Any]:
        """As a record's `cell` says it: the id and every axis value."""
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> Cell:
        """The cell a record's `cell` names; axes the record predates take their defaults."""
        given = {k: v for k, v in values.items() if k in BY_NAME}
        if "packages" in given:  # JSON's lists back to the cell's tuples
            given["packages"] = tuple(tuple(pin) for pin in given["packages"])
        return cls(**{**defaults(), **given})


@dataclass(frozen=True)
class Knobs:
    """The run-time axes' values a harness applies (None: TensorFlow's own default, as when the harness
    is run by hand without the flag). Its fields are the run-time axes' names (a test holds them to it)."""

    onednn: bool | None = None
    op_determinism: bool | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    cpus: int | None = None
    cpu_isa: str | None = None

    def given(self) -> dict[str, Any]:
        """The values set, by axis name."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    def env(self) -> dict[str, str]:
        """The environment variables the set values put in force (before TensorFlow loads)."""
        found: dict[str, str] = {}
        for name, value in self.given().items():
            found.update(BY_NAME[name].env(value))
        return found

    def configure(self, tf: Any) -> None:
        """The TF calls the set values make, after import and before TF creates its runtime."""
        for name, value in self.given().items():
            call = BY_NAME[name].tf_call
            if call is not None:
                call(tf, value)

    def restrict_harness(self) -> str:
        """What applies to the harness's own process (its cores): why it cannot be, or ''."""
        for name, value in self.given().items():
            hook = BY_NAME[name].in_harness
            if hook is not None and (problem := hook(value)):
                return problem
        return ""

    def to_json(self) -> dict[str, Any]:
        return self.given()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Knobs:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
