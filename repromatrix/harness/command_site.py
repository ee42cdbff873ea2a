"""The cell's knobs in a command's own Python processes: imported at start-up (a `sitecustomize` the
repeat generates), it makes the knobs that are TF calls (op determinism, thread pools) as soon as
TensorFlow has loaded, before the script can run an op — where a scenario's worker makes them.

The knobs that are environment variables need nothing: the command inherits them. Each process
that loads TensorFlow appends what TensorFlow then reports to a file the record keeps
(`knobs_seen`). Standard library only until TensorFlow itself is imported.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from types import ModuleType
from typing import Any

KNOBS_ENV = "REPROMATRIX_COMMAND_KNOBS"
SEEN_ENV = "REPROMATRIX_COMMAND_SEEN"


def configure(tf: Any) -> None:
    from .axes import Knobs

    knobs = Knobs.from_json(json.loads(os.environ.get(KNOBS_ENV) or "{}"))
    knobs.configure(tf)
    seen: dict[str, Any] = {"pid": os.getpid(), "argv": sys.argv[:1]}
    with contextlib.suppress(Exception):  # what this TF reports; a TF without a call simply says less
        seen["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        seen["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
        from tensorflow.python.framework import config as framework_config

        seen["op_determinism"] = bool(framework_config.is_op_determinism_enabled())
    seen["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    path = os.environ.get(SEEN_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "a") as handle:
            handle.write(json.dumps(seen) + "\n")


class AfterTensorFlow(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the import system would, and configures it once it has executed."""

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            configure(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    if KNOBS_ENV in os.environ and "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, AfterTensorFlow())


install()
