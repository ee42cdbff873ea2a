"""What a host computes, and what a plain run gets there: measured once per host and TF version.

Two machines with the same CPU model can give different bits (one VM exposes AVX-512, another
only AVX2), and two vendors' parts can give the same ones; the CPU fingerprint cannot tell. So
the harness runs, in the cell's environment, a small fixed probe — Dense layers' matrix products
(the article's model among them, also through Keras's predict), a convolution, a reduction and
`exp`, on fixed inputs, inside a `tf.function` as Keras runs them — under oneDNN on and off,
and records the digests beside the fingerprint (`Host.computes`). The report groups hosts that
compute alike before any model is compared.

The first of the two processes runs with every variable a cell's knobs set removed
(TF_ENABLE_ONEDNN_OPTS and the rest): what TF picks by itself on this host (oneDNN on or off, the
ISA oneDNN dispatches to, the thread pools) is what a user's plain `python train.py` gets there.

Each probe process is a worker process (`worker --probe-host OUT`) that writes its answer to a
file. The answer is cached per host id, TF version and device, in the user's cache folder when it
is writable (the local backend) and in the cell's folder otherwise (a container's only writable
mount). Standard library only here; TensorFlow is imported in the probe process alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import axes, fileio
from .hosts import Host, usable_cores

# Bumped when the kernels or their inputs change: a cached answer of another version is measured again.
PROBE_VERSION = 5
KERNELS = ("matmul", "conv", "reduction", "exp", "keras_dense")
# Everything a cell's knobs may set in the environment: removed for the plain run.
KNOB_VARIABLES = (
    "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_DETERMINISTIC_OPS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS",
)  # fmt: skip
CELL_CACHE = ".host-probe.json"  # hidden at the cell's root: never read as a record


def cache_files(host: Host, cell: dict[str, Any], cell_root: Path, shared: bool = True) -> list[Path]:
    """Where this host's answer for this TF version may be cached: the user's cache folder first (when
    `shared`: the real worker's answers only, never a test's stand-in's), then the cell's folder."""
    if not cell.get("tf"):
        return []  # a harness run by hand knows no TF version to cache the answer under: measured every time
    name = f"{host.id or 'unknown'}-tf{cell['tf']}-{cell.get('device') or 'cpu'}-{_environment(cell)}.json"
    base = os.environ.get("REPROMATRIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "repromatrix"
    )
    return [*([Path(base) / "host-probes" / name] if shared else []), cell_root / CELL_CACHE]


def _environment(cell: dict[str, Any]) -> str:
    """The cell's image axes (Keras, Python, pinned packages...): an answer is cached per environment."""
    image = {a.name: cell.get(a.name) for a in axes.AXES if not a.at_run_time}
    return hashlib.sha256(json.dumps(image, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_key(host: Host, cell: dict[str, Any]) -> dict[str, Any]:
    return {"probe_version": PROBE_VERSION, "host_id": host.id, "cell_tf": cell.get("tf"),
            "device": cell.get("device"), "environment": _environment(cell)}  # fmt: skip


def carry(host: Host, cell: dict[str, Any], cell_root: Path, into_cell: bool) -> None:
    """Between the user's cache and a cell's folder, for a harness that sees only the cell's folder (a
    container's only writable mount): each host and environment is probed once, not once per cell."""
    paths = cache_files(host, cell, cell_root)
    if len(paths) != 2:
        return
    source, target = paths[::-1] if not into_cell else paths
    found = _cached([source], host, cell)
    if found is not None and _cached([target], host, cell) is None:
        _store([target], found)


def _cached(paths: list[Path], host: Host, cell: dict[str, Any]) -> dict[str, Any] | None:
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(path.read_text())
            if isinstance(found, dict) and found.get("key") == cache_key(host, cell):
                return found
    return None


def _store(paths: list[Path], answer: dict[str, Any]) -> None:
    """Into each place it may be cached: a container's user cache folder may be writable and vanish with it."""
    for path in paths:
        with contextlib.suppress(OSError):
            fileio.write_json(path, answer)


def plain_env(base: dict[str, str], onednn: bool | None) -> dict[str, str]:
    """The probe process's environment: no knob set, except oneDNN when it is asked for."""
    env = {k: v for k, v in base.items() if k not in KNOB_VARIABLES}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if onednn is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    else:
        env["ONEDNN_VERBOSE"] = "1"  # names the ISA oneDNN dispatches to, when TF turned it on by itself
    return env


def _one(command: list[str], env: dict[str, str], scratch: Path, timeout: float) -> dict[str, Any]:
    """One probe process; its answer comes back through `scratch` (a `.tmp` file at the cell's root, which
    the next run removes as litter if this one is killed before it does)."""
    out = scratch / f".host-probe-{os.getpid()}-{env.get('TF_ENABLE_ONEDNN_OPTS', 'plain')}.tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([*command, str(out)], env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        return {"error": f"timed out after {timeout:g} s"}
    except OSError as exc:
        return {"error": f"could not start {command[0]}: {exc.strerror}"}
    try:
        answer = json.loads(out.read_text())
    except (OSError, ValueError):
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        return {"error": f"exited with code {done.returncode}: {tail[0].strip()}"}
    finally:
        out.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if ",info,cpu,isa:" in line:
            answer["onednn_isa"] = line.split("isa:", 1)[1].strip()
    return dict(answer)


def measure(command: list[str], base_env: dict[str, str], host: Host, cell: dict[str, Any], cell_root: Path,
            shared: bool = True, timeout: float = 180.0) -> dict[str, Any]:  # fmt: skip
    """This host's answer for the cell's TF: cached, or measured now in two probe processes.

    `command` starts a worker process (the cell's Python); the output file is appended to it.
    """
    paths = cache_files(host, cell, cell_root, shared)
    cached = _cached(paths, host, cell)
    if cached is not None:
        return cached
    started = time.perf_counter()
    plain = _one(command, plain_env(base_env, None), cell_root, timeout)
    answer: dict[str, Any] = {"key": cache_key(host, cell), "tf": cell.get("tf"), "device": cell.get("device")}
    if "error" in plain:
        return {**answer, "error": f"the host probe failed: {plain['error']}"}
    other = _one(command, plain_env(base_env, not plain.get("onednn")), cell_root, timeout)
    by_onednn = {bool(plain.get("onednn")): plain, bool(other.get("onednn")): other}
    answer |= {
        "tf": plain.get("tf") or cell.get("tf"),
        "plain_run": {
            "onednn": plain.get("onednn"),
            "onednn_isa": plain.get("onednn_isa"),
            "intra_op_threads": plain.get("intra_op_threads"),
            "inter_op_threads": plain.get("inter_op_threads"),
            "thread_pools": plain.get("thread_pools"),
            "usable_cores": plain.get("usable_cores"),
            "environment": "TF_ENABLE_ONEDNN_OPTS and every other knob variable unset",
        },
        "probe": {
            f"onednn{int(on)}": dict(by_onednn[on].get("kernels") or {})
            for on in (True, False)
            if on in by_onednn and "error" not in by_onednn[on]
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
    if "error" in other:
        answer["error"] = f"the probe with oneDNN {'off' if plain.get('onednn') else 'on'} failed: {other['error']}"
    else:  # a failure is measured again next time
        _store(paths, answer)
    return answer


def with_computes(host: Host, answer: dict[str, Any]) -> Host:
    """The host as records carry it: its fingerprint, and what it computes under this TF."""
    return replace(host, computes=answer)


# -- in the probe process (TensorFlow imported) ------------------------------------------------------


def _digest(array: Any) -> str:
    from .records import canonical_bytes

    return hashlib.sha256(canonical_bytes(array)).hexdigest()


def run_kernels(out: Path) -> int:
    """`worker --probe-host OUT`: the fixed kernels under whatever the environment set; the answer to OUT."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(20261203)

    def normal(*shape: int) -> Any:
        return rng.standard_normal(shape).astype(np.float32)

    # Dense layers as Keras runs them (matmul, add the bias, relu): the article's model (10 rows of 2 inputs in
    # [0, 1), Dense(10, relu), Dense(1), zero biases as Keras starts them: there oneDNN on and off part by a
    # few ULP) and a larger layer; Conv2D likewise.
    article = rng.random((10, 2), dtype=np.float32)
    hidden, last = normal(2, 10) * np.float32(0.7), normal(10, 1) * np.float32(0.5)
    zeros10, zeros1 = np.zeros(10, np.float32), np.zeros(1, np.float32)
    big = (normal(100, 384), normal(384, 64), normal(64))
    images, kernel, conv_bias = normal(4, 32, 32, 3), normal(3, 3, 3, 16), normal(16)
    values = normal(512, 512)
    small = rng.uniform(-8.0, 8.0, (4096,)).astype(np.float32)

    def matmul(x: Any, w1: Any, b1: Any, w2: Any, b2: Any, xl: Any, wl: Any, bl: Any) -> Any:
        second = tf.add(tf.linalg.matmul(tf.nn.relu(tf.add(tf.linalg.matmul(x, w1), b1)), w2), b2)
        larger = tf.nn.relu(tf.add(tf.linalg.matmul(xl, wl), bl))
        return tf.concat([tf.reshape(second, [-1]), tf.reshape(larger, [-1])], 0)

    def conv(x: Any, k: Any, b: Any) -> Any:
        return tf.nn.relu(tf.add(tf.nn.conv2d(x, k, strides=1, padding="SAME"), tf.reshape(b, [1, 1, 1, -1])))

    # In graph mode, as fit and predict run them (oneDNN's graph rewrites, its fused kernels, apply only there),
    # with the inputs as arguments: constants would be folded when the graph is optimised, by TF's own kernels
    # whatever oneDNN's setting.
    kernels = {
        "matmul": (tf.function(matmul), (article, hidden, zeros10, last, zeros1, *big)),
        "conv": (tf.function(conv), (images, kernel, conv_bias)),
        "reduction": (tf.function(lambda v: tf.stack([tf.reduce_sum(v), tf.reduce_mean(v, axis=0)[0]])), (values,)),
        "exp": (tf.function(tf.exp), (small,)),
    }
    digests = {name: _digest(fn(*(tf.constant(a) for a in args)).numpy()) for name, (fn, args) in kernels.items()}
    # The article's model itself, with fixed weights, through Keras's predict (its own graph, its own ops).
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(10, activation="relu"),
                                 tf.keras.layers.Dense(1)])  # fmt: skip
    model.set_weights([hidden, zeros10, last, zeros1])
    digests["keras_dense"] = _digest(np.asarray(model.predict(article, verbose=0)))
    from .worker import thread_pools

    try:  # private module, present in every TF 2.x
        from tensorflow.python.util import _pywrap_util_port

        onednn: bool | None = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = None
    answer = {
        "tf": tf.__version__,
        "onednn": onednn,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "thread_pools": thread_pools(),
        "usable_cores": usable_cores(),
        "kernels": digests,
    }
    fileio.write_json(out, answer)
    return 0
