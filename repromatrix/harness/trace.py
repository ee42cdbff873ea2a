"""Tracing inside a cell: the weights after every training step and every op's output, in order.

Used by the worker when a repeat's spec asks for it (`RepeatSpec.trace`, set by `repromatrix
explain`); the orchestrator lines two traces up (repromatrix/explain.py). Imports TensorFlow
only when tracing starts, so the harness stays standard library only.

What is recorded, beside the record (`<repeat>.trace/`):

- `weights.jsonl`: one line per weight snapshot — at the start of each `model.fit` (initialisation,
  step 0), after every training batch, and before each `model.predict` — with, per variable, the
  sha256 of the whole array and a fixed sample of its values (for the size of a difference);
- `ops.jsonl`: one line per op TensorFlow executes eagerly, in execution order: its type, name, the
  name scope it ran in (the Keras layer), the phase (forward, gradient, optimizer, predict, other),
  the fit/predict call and step, the digest of its attributes, of each input and of each output,
  and a few summary numbers per output (never whole tensors: the whole of an output is kept only
  when it has at most `SMALL_VALUES` values);
- `meta.json`: the caps, what was cut, and the ops TF built into graphs that tracing could not see.

Why eager: an op callback sees a graph op only while the graph is being built (symbolic tensors,
no values), so while tracing every `tf.function` runs eagerly (`tf.config.run_functions_eagerly`),
and every op executes one by one with its values in hand. The price: grappler never rewrites
the training step, so fused kernels that exist only in optimised graphs (oneDNN's `_MklFused…`,
`_FusedMatMul`, `_FusedConv2D`) do not run while tracing; eager ops still take oneDNN's kernels
where TF's eager rewrite sends them (MatMul, Conv2D and their gradients), and Eigen's otherwise.
The explain report says whether the traced sides still differ where the untraced ones did.
Keras callbacks give the step-level weights without touching the user's code: `fit` and
`predict` are wrapped to add one.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

TRACE_SUFFIX = ".trace"
OPS_FILE = "ops.jsonl"
WEIGHTS_FILE = "weights.jsonl"
META_FILE = "meta.json"
# Bounds per traced repeat (one side of an explain): past them tracing stops recording, and says so.
MAX_OPS = 400_000
MAX_BYTES = 256 * 1024 * 1024
SMALL_VALUES = 64  # an output this small is kept whole (for the size of its difference)
HEAD_VALUES = 8  # otherwise its first values
WEIGHT_SAMPLES = 16  # values kept per variable per snapshot, at fixed positions


class Phase:
    """Where in a training step an op ran (strings in the trace files)."""

    OTHER = "other"  # building, initialising, reading layers outside fit/predict
    FORWARD = "forward"
    GRADIENT = "gradient"
    OPTIMIZER = "optimizer"  # after the gradient, until the step ends (the update, the metrics)
    PREDICT = "predict"


def trace_dir(record: Path) -> Path:
    """The trace beside a record: `<variant dir>/<repeat>.trace/` (the reporter reads only `*.json` there)."""
    return record.with_suffix(TRACE_SUFFIX)


def _values(np: Any, array: Any, count: int) -> list[float]:
    flat = np.asarray(array).ravel()
    if flat.size == 0 or flat.dtype.kind not in "fiub":
        return []
    return [float(v) for v in flat[:count].astype(np.float64)]


# Attributes that name a process's own objects (a variable's uuid, a traced function's generated
# name): never the same on two sides, and no part of what the op computes.
_PER_PROCESS_ATTRS = frozenset({"shared_name", "debug_name", "container", "metadata"})
_PLAIN = (bool, int, float, str, bytes)


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN) or type(value).__name__ == "DType"


def _attrs_digest(attrs: Any) -> str:
    """The op's attributes that say what it computes (a seed, a transpose flag, a dtype)."""
    pairs = list(zip(attrs[::2], attrs[1::2], strict=False)) if attrs else []
    kept = [(str(name), repr(value)) for name, value in pairs
            if name not in _PER_PROCESS_ATTRS and _plain(value) and "__inference" not in repr(value)]  # fmt: skip
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:16]


class Tracer:
    """Installed for one scenario run (`with Tracer(tf, np, folder): module.run(...)`)."""

    def __init__(self, tf: Any, np: Any, folder: Path, max_ops: int = MAX_OPS, max_bytes: int = MAX_BYTES) -> None:
        self.tf, self.np, self.folder = tf, np, folder
        self.max_ops, self.max_bytes = max_ops, max_bytes
        self.ops_written = 0
        self.bytes_written = 0
        self.truncated = ""
        self.graph_ops = 0  # ops seen only at graph-building time: no values, not traced
        self.graph_op_types: dict[str, int] = {}
        self.phase = Phase.OTHER
        self.call = -1  # the fit/predict call in progress (or the last one)
        self.step = 0
        self.calls: list[dict[str, Any]] = []
        self.models: dict[int, int] = {}  # id(model) → the order models first appeared in
        self.states: dict[int, str] = {}  # a variable handle's id → the digest of its last value seen
        self._local = threading.local()
        self._restore: list[tuple[Any, str, Any]] = []

    # --- digests ---------------------------------------------------------------------------------
    def _digest_array(self, array: Any) -> str:
        array = self.np.asarray(array)
        sha = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        if array.dtype.kind == "O":  # strings
            sha.update(repr(array.tolist()).encode())
        else:
            sha.update(self.np.ascontiguousarray(array).tobytes())
        return sha.hexdigest()[:24]

    def _tensor(self, tensor: Any) -> tuple[str, Any]:
        """(digest, numpy value or None) of an eager tensor; resource handles by the last value seen."""
        dtype = getattr(tensor, "dtype", None)
        name = getattr(dtype, "name", "")
        if name == "resource":
            return "state:" + self.states.get(id(tensor), "?"), None
        if name == "variant":
            return "variant", None
        try:
            value = tensor.numpy()
        except Exception:  # a symbolic or exotic tensor: no value to digest
            return "?", None
        return self._digest_array(value), value

    # --- the op callback -------------------------------------------------------------------------
    def _paused(self) -> bool:
        return bool(getattr(self._local, "paused", False))

    def _pause(self, value: bool) -> None:
        self._local.paused = value

    def on_op(
        self, op_type: Any, inputs: Any, attrs: Any, outputs: Any, op_name: Any = None, graph: Any = None
    ) -> None:
        if graph is not None or self._paused():
            if graph is not None:
                self.graph_ops += 1
                kind = op_type.decode() if isinstance(op_type, bytes) else str(op_type)
                self.graph_op_types[kind] = self.graph_op_types.get(kind, 0) + 1
            return None
        if self.truncated:
            return None
        self._pause(True)
        try:
            self._record(op_type, inputs or (), attrs or (), outputs or (), op_name)
        finally:
            self._pause(False)
        return None

    def _record(self, op_type: Any, inputs: Any, attrs: Any, outputs: Any, op_name: Any) -> None:
        np = self.np
        kind = op_type.decode() if isinstance(op_type, bytes) else str(op_type)
        ins = [self._tensor(t)[0] for t in inputs]
        outs: list[str] = []
        dtypes: list[str] = []
        shapes: list[list[int] | None] = []
        sums: list[float | None] = []
        heads: list[list[float]] = []
        small: list[list[float] | None] = []
        for tensor in outputs:
            digest, value = self._tensor(tensor)
            outs.append(digest)
            if value is None:
                dtypes.append(getattr(getattr(tensor, "dtype", None), "name", "?"))
                shapes.append(None)
                sums.append(None)
                heads.append([])
                small.append(None)
                continue
            array = np.asarray(value)
            dtypes.append(array.dtype.name)
            shapes.append(list(array.shape))
            numeric = array.dtype.kind in "fiub"
            sums.append(float(array.astype(np.float64).sum()) if numeric and array.size else None)
            heads.append(_values(np, array, HEAD_VALUES))
            small.append(_values(np, array, SMALL_VALUES) if numeric and array.size <= SMALL_VALUES else None)
            if kind == "ReadVariableOp" and inputs:
                self.states[id(inputs[0])] = digest
        if not outputs and inputs:
            self._after_update(kind, inputs, attrs)
        scope = ""
        try:
            scope = self.tf.get_current_name_scope()
        except Exception:  # older TF without it: the layer stays unknown
            scope = ""
        line = {
            "i": self.ops_written, "type": kind,
            "name": op_name.decode() if isinstance(op_name, bytes) else op_name or "",
            "scope": scope, "phase": self.phase, "call": self.call, "step": self.step,
            "attrs": _attrs_digest(attrs), "in": ins, "out": outs,
            "dtype": dtypes, "shape": shapes, "sum": sums, "head": heads, "small": small,
        }  # fmt: skip
        self._write(self._ops, line, count=True)

    def _after_update(self, kind: str, inputs: Any, attrs: Any) -> None:
        """An op that writes a variable (AssignVariableOp, AssignSubVariableOp, ResourceApply…): read it back,
        so the next op reading that variable knows whether its state matched."""
        raw = dict(zip(attrs[::2], attrs[1::2], strict=False)) if attrs else {}
        dtype = raw.get("dtype", raw.get("T"))
        handle = inputs[0]
        if getattr(getattr(handle, "dtype", None), "name", "") != "resource" or dtype is None:
            return
        try:
            from tensorflow.python.ops import gen_resource_variable_ops

            value = gen_resource_variable_ops.read_variable_op(handle, self.tf.dtypes.as_dtype(dtype))
            self.states[id(handle)] = self._digest_array(value.numpy())
        except Exception:  # a variable that cannot be read back: its state stays unknown
            self.states[id(handle)] = f"?{kind}"

    def _write(self, handle: Any, line: dict[str, Any], count: bool = False) -> None:
        text = json.dumps(line, separators=(",", ":"), allow_nan=True) + "\n"
        if self.bytes_written + len(text) > self.max_bytes or (count and self.ops_written >= self.max_ops):
            self.truncated = self.truncated or (
                f"stopped at {self.ops_written} ops / {self.bytes_written} bytes "
                f"(caps: {self.max_ops} ops, {self.max_bytes} bytes per side)"
            )
            return
        handle.write(text)
        self.bytes_written += len(text)
        if count:
            self.ops_written += 1

    # --- weights ---------------------------------------------------------------------------------
    def snapshot(self, model: Any, kind: str) -> None:
        np = self.np
        self._pause(True)
        try:
            variables = []
            for index, variable in enumerate(model.weights):
                value = np.asarray(variable.numpy())
                flat = value.ravel()
                count = min(WEIGHT_SAMPLES, flat.size)
                positions = np.linspace(0, flat.size - 1, count).astype(np.int64) if count else np.array([], np.int64)
                variables.append({
                    "index": index, "name": str(getattr(variable, "path", None) or variable.name),
                    "shape": list(value.shape), "dtype": value.dtype.name, "digest": self._digest_array(value),
                    "positions": positions.tolist(), "sample": [float(v) for v in flat[positions].astype(np.float64)],
                    "sum": float(value.astype(np.float64).sum()) if value.size else 0.0,
                })  # fmt: skip
            line = {"call": self.call, "kind": kind, "model": self.models.get(id(model), -1), "step": self.step,
                    "after_op": self.ops_written, "vars": variables}  # fmt: skip
            self._write(self._weights, line)
        finally:
            self._pause(False)

    def _callback(self, kind: str) -> Any:
        tracer = self

        class Watch(self.tf.keras.callbacks.Callback):  # type: ignore[name-defined]
            """Step-level weights and phases, added to the user's own callbacks."""

            def on_train_begin(self, logs: Any = None) -> None:
                tracer.step = 0
                tracer.snapshot(self.model, "fit")

            def on_train_batch_begin(self, batch: Any, logs: Any = None) -> None:
                tracer.step += 1
                tracer.phase = Phase.FORWARD

            def on_train_batch_end(self, batch: Any, logs: Any = None) -> None:
                tracer.phase = Phase.OTHER
                tracer.snapshot(self.model, "fit")

            def on_train_end(self, logs: Any = None) -> None:
                tracer.phase = Phase.OTHER

            def on_predict_begin(self, logs: Any = None) -> None:
                tracer.step = 0
                tracer.snapshot(self.model, "predict")

            def on_predict_batch_begin(self, batch: Any, logs: Any = None) -> None:
                tracer.step += 1
                tracer.phase = Phase.PREDICT

            def on_predict_end(self, logs: Any = None) -> None:
                tracer.phase = Phase.OTHER

        return Watch()

    def _begin_call(self, model: Any, kind: str) -> None:
        self.models.setdefault(id(model), len(self.models))
        self.call += 1
        self.step = 0
        self.calls.append({"call": self.call, "kind": kind, "model": self.models[id(model)]})

    # --- installing ------------------------------------------------------------------------------
    def _patch(self, owner: Any, name: str, make: Any) -> None:
        """Replace `owner.name` by `make(current)`; undone on exit (an inherited one by removing ours)."""
        self._restore.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, make(getattr(owner, name)))

    def __enter__(self) -> Tracer:
        tf = self.tf
        from tensorflow.python.framework import op_callbacks

        self.folder.mkdir(parents=True, exist_ok=True)
        self._ops = (self.folder / OPS_FILE).open("w")
        self._weights = (self.folder / WEIGHTS_FILE).open("w")
        tracer = self

        def wrap_call(kind: str, position: int) -> Any:
            def make(bound: Any) -> Any:
                def traced(model: Any, *args: Any, **kwargs: Any) -> Any:
                    if len(args) > position:  # callbacks given by position
                        args = (
                            *args[:position],
                            [*(args[position] or []), tracer._callback(kind)],
                            *args[position + 1 :],
                        )
                    else:
                        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), tracer._callback(kind)]
                    tracer._begin_call(model, kind)
                    return bound(model, *args, **kwargs)

                return traced

            return make

        def wrap_gradient(bound: Any) -> Any:
            def gradient(tape: Any, *args: Any, **kwargs: Any) -> Any:
                before = tracer.phase
                tracer.phase = Phase.GRADIENT
                try:
                    return bound(tape, *args, **kwargs)
                finally:
                    tracer.phase = Phase.OPTIMIZER if before == Phase.FORWARD else before

            return gradient

        model_class = tf.keras.Model
        # fit(x, y, batch_size, epochs, verbose, callbacks, ...); predict(x, batch_size, verbose, steps, callbacks)
        self._patch(model_class, "fit", wrap_call("fit", 5))
        self._patch(model_class, "predict", wrap_call("predict", 4))
        self._patch(tf.GradientTape, "gradient", wrap_gradient)
        self._eager_before = tf.config.functions_run_eagerly()
        tf.config.run_functions_eagerly(True)
        op_callbacks.add_op_callback(self.on_op)
        return self

    def __exit__(self, *exc: Any) -> None:
        from tensorflow.python.framework import op_callbacks

        op_callbacks.remove_op_callback(self.on_op)
        self.tf.config.run_functions_eagerly(self._eager_before)
        for owner, name, value in reversed(self._restore):
            if value is None:
                delattr(owner, name)
            else:
                setattr(owner, name, value)
        self._ops.close()
        self._weights.close()
        meta = {
            "ops": self.ops_written, "bytes": self.bytes_written, "truncated": self.truncated,
            "caps": {"ops": self.max_ops, "bytes": self.max_bytes},
            "graph_ops_not_traced": self.graph_ops, "graph_op_types": self.graph_op_types,
            "calls": self.calls, "eager": True,
            "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        }  # fmt: skip
        (self.folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
