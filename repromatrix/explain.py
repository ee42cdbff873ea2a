"""`repromatrix explain`: from where, exactly, two results part — the training step, the variable, the op.

Both sides run again in their own cells (same environment, knobs and seed) through the normal
backend, once as they are and once traced (harness/trace.py). The two traces are lined up here:

- weights: snapshot by snapshot (start of each fit, after every training step, before each
  predict); the first snapshot where a variable's digest differs names the step and the variable.
  Different already at initialisation: the random stream or the initializer changed, not numerics.
- ops: by execution order and kind (type, layer, phase, step), tolerant of ops one side has and the
  other not (difflib's matching blocks); the cause is the first op whose output differs while every
  input (and attribute) matched. When the inputs did not match, the op that made the differing input
  on one side only, or the outside input (a data pipeline, Python) is named, and the answer is
  marked uncertain.

Pure Python: the traces are JSON lines, read without TensorFlow or NumPy.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import struct
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from repromatrix.errors import CellsFailedError, ConfigurationError
from repromatrix.harness.trace import META_FILE, OPS_FILE, WEIGHTS_FILE, Phase, trace_dir

# Past the common prefix, at most this many ops per side go into the sequence matcher (quadratic at worst).
ALIGN_WINDOW = 20_000
_NUMBERED = re.compile(r"_\d+(?=/|$)")  # Keras numbers layers per process: dense_3 is dense


class Verdict(StrEnum):
    SAME = "no difference"  # the traced sides are bit-identical
    INITIALISATION = "random stream or initializer changed"
    RANDOM_ATTRIBUTES = "random stream changed (an op's attributes, such as its seed, differ)"
    NUMERICS = "kernel numerics"
    OUTSIDE = "an input from outside the traced ops differs"
    STRUCTURE = "the two sides run different ops"


@dataclass(frozen=True)
class OpEvent:
    index: int
    type: str
    name: str
    scope: str
    phase: str
    call: int
    step: int
    attrs: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dtypes: tuple[str, ...] = ()
    shapes: tuple[Any, ...] = ()
    sums: tuple[float | None, ...] = ()
    heads: tuple[tuple[float, ...], ...] = ()
    small: tuple[tuple[float, ...] | None, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.type, _NUMBERED.sub("", self.scope), self.phase, self.call, self.step)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> OpEvent:
        return cls(
            index=int(raw["i"]), type=str(raw["type"]), name=str(raw.get("name") or ""),
            scope=str(raw.get("scope") or ""), phase=str(raw.get("phase") or Phase.OTHER),
            call=int(raw.get("call", -1)), step=int(raw.get("step", 0)), attrs=str(raw.get("attrs") or ""),
            inputs=tuple(raw.get("in") or ()), outputs=tuple(raw.get("out") or ()),
            dtypes=tuple(raw.get("dtype") or ()), shapes=tuple(raw.get("shape") or ()),
            sums=tuple(raw.get("sum") or ()), heads=tuple(tuple(h or ()) for h in raw.get("head") or ()),
            small=tuple(None if s is None else tuple(s) for s in raw.get("small") or ()),
        )  # fmt: skip


@dataclass(frozen=True)
class Variable:
    index: int
    name: str
    shape: tuple[int, ...]
    digest: str
    sample: tuple[float, ...] = ()
    total: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    call: int
    kind: str  # fit | predict
    model: int
    step: int
    after_op: int
    variables: tuple[Variable, ...]

    @property
    def label(self) -> str:
        if self.kind == "fit":
            return f"model {self.model + 1}, fit: initialisation" if self.step == 0 else (
                f"model {self.model + 1}, fit: after training step {self.step}")  # fmt: skip
        return f"model {self.model + 1}, before predict"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Snapshot:
        variables = tuple(
            Variable(
                int(v["index"]),
                str(v["name"]),
                tuple(v.get("shape") or ()),
                str(v["digest"]),
                tuple(v.get("sample") or ()),
                float(v.get("sum") or 0.0),
            )
            for v in raw.get("vars") or ()
        )
        return cls(int(raw["call"]), str(raw["kind"]), int(raw.get("model", -1)), int(raw.get("step", 0)),
                   int(raw.get("after_op", 0)), variables)  # fmt: skip


@dataclass(frozen=True)
class Trace:
    ops: tuple[OpEvent, ...]
    snapshots: tuple[Snapshot, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Trace:
        if not (folder / OPS_FILE).is_file():
            raise ConfigurationError(f"{folder}: no trace there ({OPS_FILE} missing); the traced repeat did not run")

        def lines(name: str) -> list[dict[str, Any]]:
            with (folder / name).open() as handle:
                return [json.loads(line) for line in handle if line.strip()]

        meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
        return cls(tuple(OpEvent.from_json(r) for r in lines(OPS_FILE)),
                   tuple(Snapshot.from_json(r) for r in lines(WEIGHTS_FILE)), meta)  # fmt: skip


@dataclass(frozen=True)
class WeightDifference:
    snapshot: str  # "model 1, fit: after training step 3"
    call: int
    kind: str
    model: int
    step: int
    at_initialisation: bool
    variable: int
    name_a: str
    name_b: str
    shape: tuple[int, ...]
    max_abs_sampled: float | None  # over the stored sample positions (a lower bound on the whole array's)
    sum_delta: float


@dataclass(frozen=True)
class OpDifference:
    index_a: int
    index_b: int | None  # None: an op side A has and side B does not
    type: str
    type_b: str
    name: str
    layer: str
    phase: str
    call: int
    step: int
    inputs_matched: bool
    attrs_differ: bool
    certain: bool
    why: str
    size: dict[str, Any] = field(default_factory=dict)
    kernel: str = ""


@dataclass(frozen=True)
class Alignment:
    ops_a: int
    ops_b: int
    matched: int
    exact: bool  # the two streams have the same ops in the same order
    unmatched_before_cause: int = 0


@dataclass(frozen=True)
class Explanation:
    verdict: Verdict
    weights: WeightDifference | None
    op: OpDifference | None
    alignment: Alignment
    notes: tuple[str, ...] = ()
    sides: tuple[dict[str, Any], ...] = ()
    outputs: dict[str, Any] = field(default_factory=dict)  # which record outputs differ, traced and not

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["verdict"] = str(self.verdict)
        return raw


# --- sizes ---------------------------------------------------------------------------------------
def _ordered(value: float, dtype: str) -> int | None:
    """The float's position on the number line in ulps (float32/64), so a difference counts ulps."""
    if dtype == "float32":
        bits = struct.unpack("<i", struct.pack("<f", value))[0]
    elif dtype == "float64":
        bits = struct.unpack("<q", struct.pack("<d", value))[0]
    else:
        return None
    return bits if bits >= 0 else -(bits & (2 ** (31 if dtype == "float32" else 63) - 1))


def difference_size(a: OpEvent, b: OpEvent, output: int) -> dict[str, Any]:
    size: dict[str, Any] = {"output": output}
    dtype = a.dtypes[output] if output < len(a.dtypes) else ""
    small_a = a.small[output] if output < len(a.small) else None
    small_b = b.small[output] if output < len(b.small) else None
    if small_a is not None and small_b is not None and len(small_a) == len(small_b):
        deltas = [abs(x - y) for x, y in zip(small_a, small_b, strict=True)]
        size["max_abs"] = max(deltas, default=0.0)
        size["values_differing"] = sum(d > 0 for d in deltas)
        size["of"] = len(deltas)
        ulps = [
            abs(oa - ob)
            for x, y in zip(small_a, small_b, strict=True)
            if (oa := _ordered(x, dtype)) is not None and (ob := _ordered(y, dtype)) is not None
        ]
        if ulps:
            size["max_ulps"] = max(ulps)
        return size
    head_a = a.heads[output] if output < len(a.heads) else ()
    head_b = b.heads[output] if output < len(b.heads) else ()
    if head_a and len(head_a) == len(head_b):
        size["max_abs_first_values"] = max(abs(x - y) for x, y in zip(head_a, head_b, strict=True))
    sum_a = a.sums[output] if output < len(a.sums) else None
    sum_b = b.sums[output] if output < len(b.sums) else None
    if sum_a is not None and sum_b is not None:
        size["sum_delta"] = abs(sum_a - sum_b)
    return size


# --- weights -------------------------------------------------------------------------------------
def first_weight_difference(a: Trace, b: Trace) -> tuple[WeightDifference | None, list[str]]:
    """The first snapshot (in order) where a variable differs, and notes on what could not be compared."""
    notes: list[str] = []
    by_key = {(s.call, s.kind, s.step): s for s in b.snapshots}
    if len(a.snapshots) != len(b.snapshots):
        notes.append(f"weight snapshots: {len(a.snapshots)} on side A, {len(b.snapshots)} on side B")
    fitted: set[int] = set()
    for snap in a.snapshots:
        other = by_key.get((snap.call, snap.kind, snap.step))
        at_init = snap.model not in fitted and (snap.kind == "predict" or snap.step == 0)
        if snap.kind == "fit" and snap.step > 0:
            fitted.add(snap.model)
        if other is None:
            continue
        if len(snap.variables) != len(other.variables):
            notes.append(f"{snap.label}: {len(snap.variables)} variables on side A, {len(other.variables)} on B")
        for va, vb in zip(snap.variables, other.variables, strict=False):
            if va.digest == vb.digest:
                continue
            sampled = (
                max(abs(x - y) for x, y in zip(va.sample, vb.sample, strict=True))
                if va.sample and len(va.sample) == len(vb.sample)
                else None
            )
            return WeightDifference(snap.label, snap.call, snap.kind, snap.model, snap.step, at_init, va.index,
                                    va.name, vb.name, va.shape, sampled, abs(va.total - vb.total)), notes  # fmt: skip
    return None, notes


# --- ops -----------------------------------------------------------------------------------------
def align(a: tuple[OpEvent, ...], b: tuple[OpEvent, ...]) -> list[tuple[int, int]]:
    """Pairs (index in a, index in b) of ops matched by kind and order, in order."""
    prefix = 0
    while prefix < len(a) and prefix < len(b) and a[prefix].key == b[prefix].key:
        prefix += 1
    pairs = [(i, i) for i in range(prefix)]
    if prefix == len(a) and prefix == len(b):
        return pairs
    codes: dict[tuple[str, str, str, int, int], int] = {}
    rest_a = [codes.setdefault(op.key, len(codes)) for op in a[prefix : prefix + ALIGN_WINDOW]]
    rest_b = [codes.setdefault(op.key, len(codes)) for op in b[prefix : prefix + ALIGN_WINDOW]]
    matcher = difflib.SequenceMatcher(None, rest_a, rest_b, autojunk=False)
    for block in matcher.get_matching_blocks():
        pairs.extend((prefix + block.a + k, prefix + block.b + k) for k in range(block.size))
    return pairs


def _layer(op: OpEvent, producers: dict[str, OpEvent]) -> str:
    """The Keras layer an op ran in: its name scope; a gradient op (no scope): the forward op whose output it reads."""
    if op.scope:
        return op.scope
    for digest in op.inputs:
        source = producers.get(digest)
        if source is not None and source.phase == Phase.FORWARD and source.scope:
            return f"{source.scope} (inferred from its forward input)"
    return ""


def first_op_difference(
    a: Trace, b: Trace, kernels: tuple[str, str] = ("", "")
) -> tuple[OpDifference | None, Alignment]:  # fmt: skip
    pairs = align(a.ops, b.ops)
    matched_a = {i for i, _ in pairs}
    exact = len(pairs) == len(a.ops) == len(b.ops)
    producers_a: dict[str, OpEvent] = {}
    producers_b: dict[str, OpEvent] = {}
    last_a = last_b = -1
    for i, j in pairs:
        # What each side computed before this pair (matched or not): where a differing input came from.
        for k in range(last_a + 1, i + 1):
            for digest in a.ops[k].outputs:
                producers_a.setdefault(digest, a.ops[k])
        for k in range(last_b + 1, j + 1):
            for digest in b.ops[k].outputs:
                producers_b.setdefault(digest, b.ops[k])
        last_a, last_b = i, j
        op_a, op_b = a.ops[i], b.ops[j]
        differing = [n for n, (x, y) in enumerate(zip(op_a.outputs, op_b.outputs, strict=False)) if x != y]
        # A dataset's or handle's attributes name functions and objects of its process: only ops with values count.
        valued = any(dtype not in ("variant", "resource") for dtype in op_a.dtypes)
        attrs_differ = op_a.attrs != op_b.attrs and valued
        if not differing and not attrs_differ:
            continue
        unmatched_before = sum(1 for k in range(i) if k not in matched_a) + (j - sum(1 for p in pairs if p[1] < j))
        alignment = Alignment(len(a.ops), len(b.ops), len(pairs), exact, unmatched_before)
        inputs_matched = op_a.inputs == op_b.inputs
        output = differing[0] if differing else 0
        size = difference_size(op_a, op_b, output) if differing else {}
        common = dict(index_a=op_a.index, index_b=op_b.index, type=op_a.type, type_b=op_b.type, name=op_a.name,
                      layer=_layer(op_a, producers_a), phase=op_a.phase, call=op_a.call, step=op_a.step,
                      attrs_differ=attrs_differ, size=size, kernel=_kernel(op_a.type, kernels))  # fmt: skip
        if inputs_matched:
            # Equal inputs prove the pairing (the same computation on both sides), however the streams around it align.
            certain = True
            why = ("its attributes differ (a seed, say) while its inputs are equal" if attrs_differ
                   else "its inputs are equal on both sides and its output is not")  # fmt: skip
            return OpDifference(inputs_matched=True, certain=certain and not attrs_differ, why=why,
                                **common), alignment  # type: ignore[arg-type]  # fmt: skip
        # Its inputs differ already: the difference came from an op one side alone ran, or from outside.
        for digest_a, digest_b in zip(op_a.inputs, op_b.inputs, strict=False):
            if digest_a == digest_b:
                continue
            source = producers_a.get(digest_a) or producers_b.get(digest_b)
            if source is not None and source.index not in matched_a:
                why = (f"its input differs; it comes from {source.type} (op {source.index}), which only one side "
                       "runs: that op is the likely cause")  # fmt: skip
                return OpDifference(inputs_matched=False, certain=False, why=why, **common), alignment  # type: ignore[arg-type]
            why = ("its input differs and no traced op made it: it comes from outside the traced ops "
                   "(a tf.data pipeline, a NumPy array, a Python value)")  # fmt: skip
            return OpDifference(inputs_matched=False, certain=False, why=why, **common), alignment  # type: ignore[arg-type]
        why = "its inputs differ in number"
        return OpDifference(inputs_matched=False, certain=False, why=why, **common), alignment  # type: ignore[arg-type]
    return None, Alignment(len(a.ops), len(b.ops), len(pairs), exact)


# Ops TF's eager rewrite hands to oneDNN when it is on (the kernel is not named by the op callback).
_ONEDNN_EAGER = frozenset({
    "MatMul", "BatchMatMul", "BatchMatMulV2", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
    "Conv3D", "DepthwiseConv2dNative", "FusedBatchNorm", "FusedBatchNormV3", "FusedBatchNormGradV3", "Einsum",
    "AvgPool", "AvgPoolGrad", "MaxPool", "MaxPoolGrad",
})  # fmt: skip


def _kernel(op_type: str, onednn: tuple[str, str]) -> str:
    if op_type not in _ONEDNN_EAGER or onednn == ("", ""):
        return ""
    return " vs ".join(
        "oneDNN (eager rewrite)" if side == "on" else "Eigen" if side == "off" else "TF's default" for side in onednn
    )


def explain(a: Trace, b: Trace, onednn: tuple[str, str] = ("", "")) -> Explanation:
    weights, notes = first_weight_difference(a, b)
    op, alignment = first_op_difference(a, b, onednn)
    for side, trace in (("A", a), ("B", b)):
        if trace.meta.get("truncated"):
            notes.append(f"side {side}: trace {trace.meta['truncated']}; what follows was not traced")
        if trace.meta.get("graph_ops_not_traced"):
            notes.append(f"side {side}: {trace.meta['graph_ops_not_traced']} ops built into graphs (tf.data "
                         "functions) ran without values being traced")  # fmt: skip
    if alignment.matched < 0.5 * max(alignment.ops_a, alignment.ops_b, 1):
        notes.append(f"alignment uncertain: only {alignment.matched} of {alignment.ops_a}/{alignment.ops_b} ops "
                     "line up (another TF or Keras builds other ops)")  # fmt: skip
    if weights is not None and weights.at_initialisation:
        verdict = Verdict.INITIALISATION
    elif op is None and weights is None:
        verdict = Verdict.SAME
    elif op is not None and op.attrs_differ and op.inputs_matched:
        verdict = Verdict.RANDOM_ATTRIBUTES
    elif op is not None and op.inputs_matched:
        verdict = Verdict.NUMERICS
    elif alignment.matched < 0.5 * max(alignment.ops_a, alignment.ops_b, 1):
        verdict = Verdict.STRUCTURE
    else:
        verdict = Verdict.OUTSIDE
    if op is None and weights is not None:
        notes.append("no traced op differs: the fall-back is the step and variable above")
    return Explanation(verdict, weights, op, alignment, tuple(notes))


# --- the command ---------------------------------------------------------------------------------
def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--cells", required=True, metavar="A,B",
                         help="two cell ids (or one: its repeats 0 and 1, for a variant that varies run to "
                         "run)")  # fmt: skip
    command.add_argument("--variant", required=True, help="the scenario's variant to explain")
    command.add_argument("--out", type=Path, default=Path("reports/explain"),
                         help="report folder: explain.md, explain.json, and the traced records "
                         "(default: %(default)s)")  # fmt: skip
    command.add_argument("--host", help="label this machine's records (default: derived from the CPU)")


def _on_off(value: Any) -> str:
    return "on" if value is True else "off" if value is False else "?"


def _side(record_path: Path, cell_id: str, repeat: int) -> dict[str, Any]:
    from repromatrix.harness import records

    record = records.Record.read(record_path)
    return {
        "cell": cell_id, "repeat": repeat, "tensorflow": record.environment.get("tensorflow"),
        "keras": record.environment.get("keras"), "onednn": _on_off(record.knobs.get("onednn")),
        "record": str(record_path),
    }  # fmt: skip


def _differing_outputs(left: Path, right: Path) -> list[str]:
    from repromatrix.harness import records

    a, b = records.Record.read(left), records.Record.read(right)
    return sorted(name for name in a.outputs if name in b.outputs and a.outputs[name].sha256 != b.outputs[name].sha256)


def _checked(args: argparse.Namespace) -> tuple[list[str], str]:
    ids = [c for c in args.cells.split(",") if c]
    if not 1 <= len(ids) <= 2 or len(set(ids)) != len(ids):
        raise ConfigurationError(f"--cells {args.cells}: give two different cell ids (A,B), or one for two repeats")
    scenarios = getattr(args, "scenarios", None) or []
    if len(scenarios) != 1:
        raise ConfigurationError("explain needs exactly one --scenario NAME (and --variant)")
    return ids, scenarios[0]


def explain_pair(args: argparse.Namespace, out: Path, results: Path) -> dict[str, Any]:
    """Both sides of args.cells run again in their cells, untraced and traced, into `results`; the two
    traces lined up; explain.json and explain.md written into `out`. Returns explain.json's content."""
    from repromatrix import cli, runner
    from repromatrix.harness import fileio
    from repromatrix.harness.layout import Layout
    from repromatrix.harness.records import Isolation
    from repromatrix.reporting import explained

    ids, scenario = _checked(args)
    args.cell = ids
    loaded, cells, found = cli.load_plan(args)
    by_id = {cell.id: cell for cell in cells}
    missing = [c for c in ids if c not in by_id]
    if missing:
        raise ConfigurationError(f"--cells: {', '.join(missing)} not in the matrix; see repromatrix plan")
    info = found[scenario]
    if args.variant not in info.variants:
        raise ConfigurationError(f"--variant {args.variant}: {scenario} has {', '.join(info.variants)}")
    loaded = replace(loaded, scenarios=(scenario,), repeats=2 if len(ids) == 1 else 1, isolation=Isolation.PROCESS,
                     spread_seeds=0)  # fmt: skip
    backend = cli.choose_backend(args, loaded, [by_id[c] for c in ids])
    host = cli.this_host(args.host)
    sides = [(ids[0], 0), (ids[-1], 1 if len(ids) == 1 else 0)]
    paths: dict[bool, list[Path]] = {}
    for traced in (False, True):
        folder = results / ("traced" if traced else "untraced")
        options = runner.RunOptions(results=folder, jobs=1, force=traced, host=host, trace=traced, variant=args.variant)
        outcomes = runner.run_matrix(backend, loaded, [by_id[c] for c in ids], options, found)
        cli._failed(outcomes)
        layout = Layout(folder)
        paths[traced] = [layout.cell(cell).record(scenario, args.variant, repeat) for cell, repeat in sides]
    a, b = (Trace.read(trace_dir(path)) for path in paths[True])
    side_info = tuple(_side(path, cell, repeat) for path, (cell, repeat) in zip(paths[True], sides, strict=True))
    onednn = (str(side_info[0]["onednn"]), str(side_info[1]["onednn"]))
    result = explain(a, b, onednn)
    outputs = {"untraced": _differing_outputs(*paths[False]), "traced": _differing_outputs(*paths[True])}
    notes = list(result.notes)
    if outputs["untraced"] and not outputs["traced"]:
        notes.append("tracing runs every op eagerly (no grappler, no fused kernels): here that removed the "
                     "difference, so the answer above is about the eager run only")  # fmt: skip
    result = replace(result, sides=side_info, outputs=outputs, notes=tuple(notes))
    title = f"{scenario}-{args.variant}: " + (f"{ids[0]} vs {ids[1]}" if len(ids) == 2 else f"{ids[0]}, repeat 0 vs 1")
    payload = {"title": title, **result.to_json(),
               "trace_bytes": [a.meta.get("bytes"), b.meta.get("bytes")], "ops": [len(a.ops), len(b.ops)]}  # fmt: skip
    payload = json.loads(json.dumps(payload, default=str))  # as a reader of explain.json will see it
    # Written whole or not at all, as the report's own files are (a signal mid-write leaves no half file).
    fileio.write_text(out / explained.EXPLAIN_JSON, json.dumps(payload, indent=1) + "\n")
    fileio.write_text(out / explained.EXPLAIN_MD, explained.markdown(payload))
    return payload


def command(args: argparse.Namespace) -> int:
    from repromatrix import progress
    from repromatrix.reporting import explained

    _checked(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    payload = explain_pair(args, out, out / "results")
    progress.say(explained.markdown(payload))
    progress.say(f"written to {out}/ ({explained.EXPLAIN_MD}, {explained.EXPLAIN_JSON})")
    return 0


def after_matrix(args: argparse.Namespace, report: Path) -> None:
    """`matrix --explain N`: the N pairs most worth explaining in what was just measured, each traced into
    report/explain/<pair>/ while the budget lasts (no pair starts that the last one's time says would
    overrun it); report/explain/index.json lists every pair chosen, explained or not and why."""
    import time
    import traceback

    from repromatrix import cli, progress
    from repromatrix.harness import fileio
    from repromatrix.harness.layout import Layout
    from repromatrix.reporting import build, explained

    measured = build([args.results])
    _, cells, _ = cli.load_plan(args)
    pairs = explained.pick(measured, args.explain, {cell.id for cell in cells})
    root = report / explained.EXPLAIN_DIR
    if not pairs:
        progress.say("--explain: no pair of this run's cells differs where it should not; nothing to explain")
        return
    progress.say(f"--explain: tracing {len(pairs)} pair{'s' if len(pairs) != 1 else ''} "
                 f"(budget {args.explain_budget:.0f} s): " + "; ".join(p.title for p in pairs))  # fmt: skip
    index: list[dict[str, Any]] = []
    started, last = time.monotonic(), 0.0
    for pair in pairs:
        entry = pair.to_json()
        index.append(entry)
        spent = time.monotonic() - started
        if spent + last > args.explain_budget:
            entry["not_explained"] = (f"the budget of {args.explain_budget:.0f} s was spent ({spent:.0f} s so far); "
                                      "raise --explain-budget, or run repromatrix explain on it")  # fmt: skip
            continue
        one = argparse.Namespace(**{**vars(args), "cells": ",".join(pair.cells), "scenarios": [pair.scenario],
                                    "variant": pair.variant})  # fmt: skip
        begun = time.monotonic()
        try:
            payload = explain_pair(one, root / pair.slug, Layout(args.results).explain_runs(pair.slug))
            progress.say(f"explained {pair.title}: {payload['verdict']}")
        except CellsFailedError as exc:
            entry["not_explained"] = f"a re-run failed: {exc.message}"
            progress.warn(f"--explain: {pair.title}: {entry['not_explained']}")
        except Exception as exc:  # one pair's failure is that pair's: the others and the report go on
            entry["not_explained"] = f"{type(exc).__name__}: {exc}"
            progress.warn(f"--explain: {pair.title}: {entry['not_explained']}\n{traceback.format_exc()}")
        last = time.monotonic() - begun
        entry["seconds"] = round(last, 1)
    fileio.write_text(root / explained.INDEX_JSON, json.dumps({"pairs": index}, indent=1) + "\n")
