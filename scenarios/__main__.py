"""The harness: `python -m scenarios NAME... --repeat R --out DIR`.

Every repeat runs in a fresh process (run-to-run reproducibility only means
something across processes) and leaves exactly one record, ok or error, so
one failing repeat never stops the others. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scenarios import SCENARIOS_DIR, Scenario, _records, discover, reuse_key


def _on_off(value: str) -> bool:
    if value.lower() in ("1", "on", "true", "yes"):
        return True
    if value.lower() in ("0", "off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return number


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scenarios", description="Run reproducibility scenarios, each repeat in a fresh process."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="scenarios to run (default: all)")
    parser.add_argument("--variant", choices=("unseeded", "seeded"), help="default: every variant a scenario has")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per variant (default: 3)")
    parser.add_argument("--out", type=Path, help="folder the records go to")
    parser.add_argument("--seed", type=int, default=42, help="seed of the seeded variants (default: 42)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one repeat may take (default: 600)")
    parser.add_argument("--onednn", type=_on_off, help="TF_ENABLE_ONEDNN_OPTS on/off (default: TF's own)")
    parser.add_argument("--op-determinism", type=_on_off, default=False, help="enable_op_determinism on/off")
    parser.add_argument("--intra-op-threads", type=_non_negative, default=0, help="0: TF's default")
    parser.add_argument("--inter-op-threads", type=_non_negative, default=0, help="0: TF's default")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    # Set by the runner: what the records say about where they ran, and what makes them reusable.
    parser.add_argument("--cell-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--image-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--environment-key", help=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true", help="rerun repeats whose records could be reused")
    args = parser.parse_args(argv)
    if not args.list and args.out is None:
        parser.error("--out DIR is required")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    return args


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_repeat(spec: dict[str, Any], timeout: float) -> tuple[str, str, str]:
    """Start one worker process; returns (status, message, stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SCENARIOS_DIR.parent), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "scenarios._worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return "error", f"timed out after {timeout:g} s (raise --timeout if it needs longer)", stderr
    if done.returncode != 0:
        return "error", f"exited with code {done.returncode}: {_last_line(done.stderr)}", done.stderr
    try:
        _records.read_record(Path(spec["record"]))
    except ValueError as exc:
        return "error", f"wrote no valid record: {exc}", done.stderr
    return "ok", "", done.stderr


def plan(args: argparse.Namespace, found: dict[str, Scenario]) -> list[tuple[str, str, Scenario | None, str]]:
    """(name, variant, scenario or None, problem) for every requested scenario variant."""
    names = args.names or [name for name, info in found.items() if info.problem is None]
    planned = []
    for name in names:
        info = found.get(name)
        if info is None:
            available = ", ".join(found) or "none"
            planned.append((name, args.variant or "unknown", None, f"unknown scenario (available: {available})"))
        elif info.problem:
            for variant in [args.variant] if args.variant else list(info.variants) or ["unknown"]:
                planned.append((name, variant, None, f"{info.path.name} {info.problem}"))
        elif args.variant and args.variant not in info.variants:
            planned.append((name, args.variant, None, f"has no {args.variant} variant (it has {info.variants})"))
        else:
            for variant in [args.variant] if args.variant else info.variants:
                planned.append((name, variant, info, ""))
    return planned


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    found = discover()
    if args.list:
        for info in found.values():
            state = f"BROKEN: {info.problem}" if info.problem else ", ".join(info.variants)
            print(f"{info.name:20} {state:28} {info.summary}")
        return 0
    cell = json.loads(args.cell_json)
    knobs = {
        "onednn": args.onednn,
        "op_determinism": args.op_determinism,
        "intra_op_threads": args.intra_op_threads,
        "inter_op_threads": args.inter_op_threads,
    }
    counts = {"started": 0, "ok": 0, "reused": 0, "error": 0}
    for name, variant, info, problem in plan(args, found):
        seed = args.seed if variant == "seeded" else None
        key = reuse_key(args.environment_key, info, variant, seed) if info and args.environment_key else None
        for repeat in range(args.repeat):
            path = _records.record_path(args.out, name, variant, repeat)
            label = f"{name}-{variant} #{repeat}"
            if key and not args.force and _records.is_reusable(path, key):
                counts["reused"] += 1
                continue
            if info is None:
                status, message, stderr = "error", problem, ""
            else:
                spec = {
                    "scenario": name,
                    "variant": variant,
                    "seed": seed,
                    "repeat": repeat,
                    "record": str(path),
                    "knobs": knobs,
                    "cell": cell,
                    "image": json.loads(args.image_json),
                    "reuse_key": key,
                }
                counts["started"] += 1
                started = time.perf_counter()
                status, message, stderr = run_repeat(spec, args.timeout)
                elapsed = time.perf_counter() - started
            if status == "ok":
                counts["ok"] += 1
                record = _records.read_record(path)
                print(f"{label}: ok in {elapsed:.1f} s, in-process identical: {record['in_process_identical']}")
                continue
            counts["error"] += 1
            print(f"error: {label}: {message}", file=sys.stderr, flush=True)
            _records.write_json(
                path,
                _records.status_record(
                    scenario=name,
                    variant=variant,
                    seed=seed,
                    repeat=repeat,
                    status="error",
                    message=message,
                    stderr=stderr,
                    cell=cell,
                    reuse_key=key,
                ),
            )
    print(
        f"scenario processes started: {counts['started']}; "
        f"{counts['ok']} ok, {counts['error']} errors, {counts['reused']} reused",
        flush=True,
    )
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
