"""`tf = "nightly"`: the newest tf-nightly, pinned by version when the matrix is loaded.

A run must be reproducible, so "nightly" never reaches a cell: the planner replaces it by one version
(`2.23.0.dev20261026`), which is in the cell id, its lock and its records. Which version: the
`REPROMATRIX_TF_NIGHTLY` environment variable when it is set (CI's plan job resolves once and hands the
pin to every job), else the newest the index has, asked once a day per cache and remembered.

The CPU build: `tf-nightly-cpu` where it is current, else `tf-nightly` (whose Linux wheel runs on the CPU
without CUDA unless `[and-cuda]` is asked for). Both are resolved and the newer is taken.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from pathlib import Path

from repromatrix import cleanup
from repromatrix.errors import ConfigurationError
from repromatrix.guards import exclusive
from repromatrix.harness import fileio

NIGHTLY_ENV = "REPROMATRIX_TF_NIGHTLY"
PACKAGES = ("tf-nightly-cpu", "tf-nightly")
_PIN = re.compile(r"^2\.\d+\.\d+\.dev\d{8}$")


@dataclass(frozen=True)
class Pin:
    package: str  # tf-nightly-cpu or tf-nightly
    version: str  # 2.23.0.dev20261026

    @property
    def date(self) -> str:
        return self.version.rpartition(".dev")[2]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def package_for(version: str) -> str:
    """Which nightly package a pinned version comes from: recorded when it was resolved, else tf-nightly."""
    return _known.get(version, "tf-nightly")


_known: dict[str, str] = {}


def newest(cache: Path, index_url: str = "", today: str | None = None) -> Pin:
    """The newest CPU-capable nightly on the index, asked once a day (UTC) per cache."""
    from repromatrix import locks  # locks imports the planner's module: not at import time

    today = today or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    remembered = cache / "nightly" / f"{today}.json"
    with exclusive(remembered):
        if remembered.is_file():
            raw = json.loads(remembered.read_text())
            pin = Pin(raw["package"], raw["version"])
        else:
            found: list[Pin] = []
            reasons = []
            for package in PACKAGES:
                command = [locks.uv_binary(), "pip", "compile", "-", "--quiet", "--no-deps", "--no-header",
                           "--python-version", locks.PYTHON_VERSION, "--python-platform", locks.PYTHON_PLATFORM,
                           "--prerelease", "allow", *(["--index-url", index_url] if index_url else [])]  # fmt: skip
                done = cleanup.run(command, stdin=f"{package}\n", env=locks.uv_env())
                match = re.search(rf"^{re.escape(package)}==(\S+)", done.stdout, re.MULTILINE)
                if done.returncode == 0 and match:
                    found.append(Pin(package, match.group(1)))
                else:
                    reasons.append(f"{package}: {' '.join(done.stderr.split())[-200:] or 'not found'}")
            if not found:
                raise ConfigurationError(f'tf = "nightly": no nightly found on the index ({"; ".join(reasons)}); '
                                         f"set {NIGHTLY_ENV}=2.X.Y.devYYYYMMDD or drop nightly")  # fmt: skip
            # Newest first; on a tie the CPU package.
            pin = max(found, key=lambda p: (_key(p.version), p.package == "tf-nightly-cpu"))
            fileio.write_text(remembered, json.dumps({"package": pin.package, "version": pin.version}) + "\n")
    _known[pin.version] = pin.package
    return pin


def resolve(cache: Path, index_url: str = "", environ: dict[str, str] | None = None) -> Pin:
    """The pin "nightly" stands for in this run: $REPROMATRIX_TF_NIGHTLY, else the newest on the index."""
    import os

    given = (environ if environ is not None else os.environ).get(NIGHTLY_ENV, "").strip()
    if given:
        package, _, version = given.rpartition("==")
        package = package or "tf-nightly"
        if not _PIN.match(version) or package not in PACKAGES:
            raise ConfigurationError(
                f"${NIGHTLY_ENV}={given}: not a nightly pin; write 2.X.Y.devYYYYMMDD or "
                "tf-nightly-cpu==2.X.Y.devYYYYMMDD"
            )
        _known[version] = package
        return Pin(package, version)
    return newest(cache, index_url)
