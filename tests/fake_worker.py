"""A stand-in for `repromatrix.harness.worker`: no TensorFlow, made-up arrays, the real launchers around it.

`python -m tests.fake_worker --harness ARGS` is the real harness (`repromatrix.harness.__main__.main`)
handed this module as its worker; the harness then starts this module as it would start the real
worker: `SPEC_JSON` (a fresh process), `--serve KNOBS WARM` (a fork parent, the real fork server's
loop) or `--probe-isa KNOBS`. What to do per repeat comes from tests/fakes.py (BEHAVIOUR_ENV).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from repromatrix.harness import __main__ as harness
from repromatrix.harness import exchange, forkserver, records
from repromatrix.harness.axes import Knobs
from repromatrix.harness.launch import TF_REFUSES_UNSEEDED, Worker
from tests.fakes import BEHAVIOUR_ENV

HARNESS_PID = "REPROMATRIX_FAKE_HARNESS_PID"


def behaviour() -> dict[str, Any]:
    return json.loads(os.environ.get(BEHAVIOUR_ENV) or "{}")


def start(knobs: Knobs) -> tuple[Any, Any, float]:
    """What a fork parent imports: no TensorFlow here, NumPy for the children's global state."""
    return None, np, 0.0


def measure(spec: exchange.RepeatSpec, tf: Any, np_: Any, import_seconds: float, process_start: float) -> None:
    """One repeat: seeded variants the same bits every time, unseeded ones new bits per process."""
    wanted = behaviour()
    label = spec.label
    if wanted.get("started_log"):
        with open(wanted["started_log"], "a") as log:
            log.write(label + "\n")
    if label in wanted.get("lose", []):
        os.kill(int(os.environ[HARNESS_PID]), signal.SIGKILL)  # the harness dies mid-cell
        time.sleep(30)
    if label in wanted.get("refused", []):
        raise RuntimeError(f"{TF_REFUSES_UNSEEDED}.")
    if label in wanted.get("error", []):
        raise RuntimeError("boom")
    first = np.random.default_rng(spec.seed).random(4).astype(np.float32)
    arrays = {"model1.predictions": first, "model1.weights": first * 2,
              "model2.predictions": first, "model2.weights": first * 2}  # fmt: skip
    extra = {"fork_parent": spec.fork_parent} if spec.fork_parent else {}
    record = records.Record.ok(arrays=arrays, in_process_identical=True, environment={"image": spec.image},
                               extra=extra, **spec.record_fields())  # fmt: skip
    record.write(Path(spec.record), arrays)
    if label == wanted.get("abandon_after"):  # the run that started the harness ends now
        shutil.rmtree(Path(spec.record).parents[1] / ".attempts")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--harness"]:
        os.environ[HARNESS_PID] = str(os.getpid())
        return harness.main(argv[1:], worker=Worker(module="tests.fake_worker"))
    forkserver.die_with_parent()  # as the real worker: gone when the harness is
    if argv[:1] == ["--probe-isa"]:
        print("onednn_verbose,info,cpu,isa:Intel AVX2 (fake)")
        return 0
    if argv[:1] == ["--probe-host"]:  # what the real probe writes, made up: no TensorFlow here
        kernels = {name: f"fake-{name}" for name in ("matmul", "conv", "reduction", "exp")}
        payload = {"tf": "fake", "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1",
                   "intra_op_threads": 0, "inter_op_threads": 0, "thread_pools": {}, "usable_cores": 1,
                   "kernels": kernels}  # fmt: skip
        Path(argv[1]).write_text(json.dumps(payload))
        return 0
    if argv[:1] == ["--serve"]:
        return forkserver.serve(Knobs.from_json(json.loads(argv[1])), json.loads(argv[2]), start, measure, None)
    spec = exchange.RepeatSpec.from_json(json.loads(argv[0]))
    measure(spec, None, np, 0.0, time.perf_counter())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
