"""One repeat in one fresh process: apply the knobs, import TF, run, fingerprint, write the record.

Started by the harness as `python -m repromatrix.harness.worker SPEC_JSON` (launch.py). A failure
exits non-zero with the traceback on stderr; the harness turns that into an
`error` record, so only measured outputs are ever written from here.
"""

from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()

import contextlib  # noqa: E402
import hashlib  # noqa: E402  (the clock above must start first)
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from . import command, exchange, forkserver, hosts, lease, records  # noqa: E402
from .axes import Knobs  # noqa: E402
from .catalog import SCENARIOS_PACKAGE as SCENARIOS  # noqa: E402
from .catalog import builtin_dir  # noqa: E402
from .forkserver import die_with_parent  # noqa: E402


def apply_env_knobs(knobs: Knobs) -> None:
    """Knobs TF reads from the environment while it loads: must run before `import tensorflow`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.update(knobs.env())


def thread_pools() -> dict[str, int]:
    """TF's threads by name, counted after the scenario ran: the pools TF actually made.

    Unset pool sizes follow the usable cores (tf_Compute: 2 threads on 1 core, 3 on 2, for a Keras fit).
    """
    names: dict[str, int] = {}
    for task in Path("/proc/self/task").glob("*/comm"):
        with contextlib.suppress(OSError):
            name = task.read_text().strip()
            if name.startswith("tf_"):
                names[name] = names.get(name, 0) + 1
    return dict(sorted(names.items()))


def knobs_in_force(tf: Any, requested: Knobs, onednn_isa: str | None = None) -> dict[str, Any]:
    """What TF reports back, which is what the record trusts, beside what was asked for."""
    in_force: dict[str, Any] = {
        "requested": requested.to_json(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        # What oneDNN said it dispatches to under these knobs (the harness's probe), where it said it.
        "onednn_isa": onednn_isa,
        "usable_cores": hosts.usable_cores(),
        "thread_pools": thread_pools(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    try:  # private module, present in every TF 2.x
        from tensorflow.python.util import _pywrap_util_port

        in_force["onednn"] = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        in_force["onednn"] = None
    try:
        from tensorflow.python.framework import config as tf_framework_config

        in_force["op_determinism"] = bool(tf_framework_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        in_force["op_determinism"] = os.environ.get("TF_DETERMINISTIC_OPS") == "1"
    return in_force


def _cpu() -> dict[str, Any]:
    cpu = hosts.cpuinfo()
    return {
        "model": cpu["model"],
        "vendor": cpu["vendor"],
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": hosts.usable_cores(),
        "isa": cpu["isa"],
        "flags_sha256": cpu["flags_sha256"],
    }


def _gpus(tf: Any) -> list[dict[str, Any]]:
    driver = None
    with contextlib.suppress(OSError, IndexError):
        driver = Path("/proc/driver/nvidia/version").read_text().splitlines()[0].strip()
    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        found.append(
            {
                "name": details.get("device_name", device.name),
                "compute_capability": ".".join(map(str, capability)) if capability else None,
                "driver": driver,
            }
        )
    return found


def _packages() -> dict[str, Any]:
    names = sorted({f"{dist.metadata['Name']}=={dist.version}".lower() for dist in importlib.metadata.distributions()})
    return {"count": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def _extras() -> list[str]:
    """What the user's project and [run] requirements installed here, on top of the TF lock."""
    try:
        return [
            line.strip()
            for line in (Path(sys.prefix) / records.EXTRAS_PINS_FILE).read_text().splitlines()
            if line.strip()
        ]
    except OSError:
        return []


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _keras_version(tf: Any) -> str | None:
    """The Keras tf.keras is: with TF_USE_LEGACY_KERAS=1 on TF 2.16+ it is tf_keras (Keras 2), whose
    tf.keras has no __version__, and the installed `keras` (3) is not the one that ran."""
    if getattr(tf.keras, "__name__", "").startswith("tf_keras"):
        tf_keras = importlib.import_module("tf_keras")  # only in a tf-keras cell: no stubs, no import here
        return getattr(tf_keras, "__version__", None) or _version("tf-keras")
    return getattr(tf.keras, "__version__", None) or _version("keras")


def fingerprint(tf: Any, np: Any, spec: exchange.RepeatSpec) -> dict[str, Any]:
    # Where TF places a fresh variable is where the scenario's models were placed.
    placement = tf.Variable(0.0).device or ""
    keras_version = _keras_version(tf)
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras_version,
        "numpy": np.__version__,
        "build_info": json.loads(json.dumps(dict(tf.sysconfig.get_build_info()), default=str)),
        "gpus": _gpus(tf),
        "ran_on": "gpu" if "GPU" in placement.upper() else "cpu",
        "cpu": _cpu(),
        "packages": _packages(),
        "image": spec.image,
        "libc": "-".join(platform.libc_ver()) or None,
        "extras": _extras(),
    }


def check_outputs(outputs: Any) -> dict[str, Any]:
    """Flatten {"model1": {...}, "model2": {...}} to named arrays, or say what is wrong."""
    import numpy as np

    if not isinstance(outputs, dict) or set(outputs) != {"model1", "model2"}:
        raise TypeError("run() must return a dict with exactly the keys 'model1' and 'model2'")
    arrays = {}
    for model, named in outputs.items():
        if not isinstance(named, dict) or not named:
            raise TypeError(f"run()[{model!r}] must be a non-empty dict of arrays")
        for name, array in named.items():
            arrays[f"{model}.{name}"] = np.asarray(array)
    if set(outputs["model1"]) != set(outputs["model2"]):
        raise TypeError("model1 and model2 must return the same array names")
    return arrays


def probe_isa(knobs: Knobs) -> int:
    """`--probe-isa KNOBS`: one small matrix product with oneDNN's verbose output on (read by the harness)."""
    apply_env_knobs(knobs)
    os.environ["ONEDNN_VERBOSE"] = "1"
    import tensorflow as tf

    knobs.configure(tf)
    left = tf.random.stateless_uniform((64, 256), seed=(1, 2))
    right = tf.random.stateless_uniform((256, 64), seed=(3, 4))
    float(tf.reduce_sum(tf.matmul(left, right)))
    return 0


def importable_helpers() -> None:
    """A scenario imports its folder's helper modules as it would standalone (`import _peer`) as well
    as relative to the package (`from . import _peer`). Appended after site-packages: a helper never
    shadows an installed package."""
    folder = str(builtin_dir())
    if folder not in sys.path:
        sys.path.append(folder)


def measure(spec: exchange.RepeatSpec, tf: Any, np: Any, import_seconds: float, process_start: float) -> None:
    """Run one repeat in this process (TF already imported and configured) and write its record."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    extra: dict[str, Any] = {"fork_parent": spec.fork_parent} if spec.fork_parent else {}
    identical: bool | None = None  # a command has no model1 and model2: in-process does not exist for it
    if spec.command:
        arrays, extra["command"], scenario_seconds = command.measure(spec, np, tf)
    else:
        importable_helpers()
        module = importlib.import_module(f"{SCENARIOS}.{spec.scenario}")
        before_run = time.perf_counter()
        if spec.trace:  # `repromatrix explain`: the same run, with every op and step fingerprinted beside the record
            from .trace import Tracer, trace_dir

            with Tracer(tf, np, trace_dir(Path(spec.record))):
                arrays = check_outputs(module.run(spec.variant, spec.seed))
            extra["traced"] = True
        else:
            arrays = check_outputs(module.run(spec.variant, spec.seed))
        scenario_seconds = time.perf_counter() - before_run
        names = sorted({name.split(".", 1)[1] for name in arrays})
        identical = all(
            records.canonical_bytes(arrays[f"model1.{n}"]) == records.canonical_bytes(arrays[f"model2.{n}"])
            for n in names
        )
    record = records.Record.ok(
        arrays=arrays,
        in_process_identical=identical,
        record_bytes=spec.record_bytes,
        started_at=started,
        knobs=knobs_in_force(tf, spec.knobs, spec.onednn_isa),
        environment=fingerprint(tf, np, spec),
        timings={
            "tf_import_s": round(import_seconds, 4),
            "scenario_s": round(scenario_seconds, 4),
            "process_wall_s": round(time.perf_counter() - process_start, 4),
        },
        extra=extra,
        **spec.record_fields(),
    )
    if not lease.still_held(spec.lease):  # its run is gone: no record lands in a folder nobody holds
        raise SystemExit("not written: the run that started this repeat is gone")
    record.write(Path(spec.record), arrays)


def import_tf(knobs: Knobs) -> tuple[Any, Any, float]:
    """Knobs TF reads while loading, then the import itself, then the knobs it takes before its runtime starts."""
    apply_env_knobs(knobs)
    before_import = time.perf_counter()
    import numpy as np
    import tensorflow as tf

    import_seconds = time.perf_counter() - before_import
    knobs.configure(tf)
    return tf, np, import_seconds


def main(argv: list[str]) -> int:
    die_with_parent()
    if argv[:1] == ["--probe-isa"]:
        return probe_isa(Knobs.from_json(json.loads(argv[1])))
    if argv[:1] == ["--probe-host"]:
        from .hostprobe import run_kernels

        return run_kernels(Path(argv[1]))
    if argv[:1] == ["--serve"]:
        importable_helpers()
        return forkserver.serve(Knobs.from_json(json.loads(argv[1])), json.loads(argv[2]), import_tf, measure,
                                SCENARIOS)  # fmt: skip
    spec = exchange.RepeatSpec.from_json(json.loads(argv[0]))
    tf, np, import_seconds = import_tf(spec.knobs)
    measure(spec, tf, np, import_seconds, _PROCESS_START)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The record is fsynced and closed; skip TensorFlow's interpreter teardown,
    # which costs about half a second per process and decides nothing.
    os._exit(code)
