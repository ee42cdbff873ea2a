"""The environment axes users change (issue 33): Keras 2 or 3, pinned packages, Python, tf-nightly.

What the planner needs to read them from matrix.toml, and why a cell of them cannot be made, which
both backends say the same way. How each reaches an environment is in locks.py (the lock of a cell)
and the backends (the interpreter, the base image). Standard library only: the noxfile's planner
imports it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repromatrix.errors import ConfigurationError
from repromatrix.harness import axes
from repromatrix.harness.axes import LEGACY_KERAS, NIGHTLY, Cell, is_nightly

if TYPE_CHECKING:
    from repromatrix.matrix import Matrix

# tf-keras (Keras 2 beside TF's Keras 3) is published from TF 2.16 on, one release per TF release.
FIRST_LEGACY_KERAS = (2, 16)
# What other axes own: pinning them under [matrix] packages would hide which axis changed.
_OWNED = {"tensorflow", "tensorflow-cpu", "tf-nightly", "tf-nightly-cpu", "tf-keras", "keras", "keras-nightly"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PIN = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")
# The Python of each Debian release docker/base/build-debian-base.sh can build a base image from.
DEBIAN_PYTHON = {"3.11": "bookworm", "3.13": "trixie"}


def release(tf: str) -> tuple[int, int]:
    major, minor = tf.split(".")[:2]
    return int(major), int(minor)


def normal_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_table(source: Path, raw: Any) -> dict[str, list[str]]:
    """[matrix] packages = { numpy = ["1.26.4", "2.1.3"] }: exact versions per package, checked."""
    key = "[matrix].packages"
    if not isinstance(raw, dict):
        raise ConfigurationError(f'{source.name}: {key} = {raw!r} is not valid; a table, e.g. {{ numpy = ["2.1.3"] }}')
    found: dict[str, list[str]] = {}
    for name, given in raw.items():
        versions = given if isinstance(given, list) else [given]
        where = f"{key}.{name}"
        if not _NAME.match(name) or normal_name(name) in axes.BY_NAME:
            raise ConfigurationError(f"{source.name}: {where} is not valid; a PyPI project name (not an axis name)")
        if normal_name(name) in _OWNED:
            raise ConfigurationError(
                f"{source.name}: {where} is not valid; TensorFlow and Keras are the tf and keras axes, not pins"
            )
        if not versions or not all(isinstance(v, str) and _PIN.match(v) for v in versions):
            raise ConfigurationError(
                f'{source.name}: {where} = {given!r} is not valid; a list of exact versions, e.g. ["1.26.4", "2.1.3"]'
            )
        if len(set(versions)) != len(versions):
            raise ConfigurationError(f"{source.name}: {where} = {given!r} is not valid; values must not repeat")
        found[normal_name(name)] = list(versions)
    return found


def pin_nightly(source: Path, tf_values: list[str]) -> list[str]:
    """tf = ["2.21.0", "nightly"] → ["2.21.0", "2.23.0.dev20261026"]: pinned once, when the matrix is loaded."""
    if NIGHTLY not in tf_values:
        return tf_values
    from repromatrix import nightly
    from repromatrix.backends import cache_dir

    pin = nightly.resolve(cache_dir())
    if pin.version in tf_values:
        raise ConfigurationError(f'{source.name}: [matrix].tf lists "nightly" and {pin.version}, which it stands for')
    return [pin.version if value == NIGHTLY else value for value in tf_values]


def newest_release(cells: list[Cell] | tuple[Cell, ...]) -> str | None:
    tf = axes.BY_NAME["tf"]
    releases = sorted({c.tf for c in cells if not is_nightly(c.tf)}, key=tf.order)
    return releases[-1] if releases else None


def beside_newest(loaded: Matrix, version: str) -> Matrix:
    """The matrix with one more cell: the newest release's first cell (its baseline), on the nightly `version`.

    What CI's weekly run adds, so the published table says whether the next TF changes bits."""
    newest = newest_release(loaded.cells)
    if newest is None:
        raise ConfigurationError("--nightly: the matrix has no TensorFlow release to put the nightly beside")
    base = next(c for c in loaded.cells if c.tf == newest)
    cell = replace(base, tf=version, keras=axes.KERAS_AS_SHIPPED)
    if cell in loaded.cells:
        return loaded
    why = f"nightly beside {newest} ({loaded.reasons.get(base.id, 'its first cell')}, tf {newest}→{version})"
    return replace(loaded, cells=(*loaded.cells, cell), reasons={**loaded.reasons, cell.id: why})


def skip_reason(cell: Cell) -> str | None:
    """Why the cell's combination of environment axes does not exist, or None (either backend)."""
    if cell.recipe != "pip" and (cell.keras != axes.KERAS_AS_SHIPPED or cell.python != axes.DEFAULT_PYTHON
                                 or cell.packages):  # fmt: skip
        own = "its own Keras, Python and packages"
        return f"the {cell.recipe!r} recipe is TF's own image, with {own}; use recipe = pip for this axis"
    if cell.keras == LEGACY_KERAS:
        if is_nightly(cell.tf):
            return (f'keras = "tf-keras" needs a TensorFlow release: tf-keras is published per release, '
                    f"and none matches the nightly {cell.tf}")  # fmt: skip
        if release(cell.tf) < FIRST_LEGACY_KERAS:
            return (f"TF {cell.tf} ships Keras 2 as tf.keras itself: tf-keras with TF_USE_LEGACY_KERAS=1 exists "
                    'from TF 2.16 on (keras = "3" is this release\'s own tf.keras)')  # fmt: skip
    return None


def docker_base(cell: Cell, base_image: str) -> tuple[str, str]:
    """The base image for the cell's Python from the configured one, or ("", why there is none).

    python:3.11-slim → python:3.13-slim; repromatrix/debian-python:bookworm → :trixie for 3.13."""
    if cell.python == axes.DEFAULT_PYTHON:
        return base_image, ""
    official = re.match(r"^((?:docker\.io/)?(?:library/)?python):3\.\d+(.*)$", base_image)
    if official:
        return f"{official.group(1)}:{cell.python}{official.group(2)}", ""
    repository, _, tag = base_image.rpartition(":")
    if repository and tag in DEBIAN_PYTHON.values():
        suite = DEBIAN_PYTHON.get(cell.python)
        if suite is None:
            known = ", ".join(f"{p} ({s})" for p, s in DEBIAN_PYTHON.items())
            return "", (f"no Debian base image has Python {cell.python}: Debian's releases ship {known}; "
                        "use a python:X-slim base image or another Python")  # fmt: skip
        return f"{repository}:{suite}", ""
    return "", (
        f"the base image {base_image} has Python {axes.DEFAULT_PYTHON}; for Python {cell.python} set "
        "[docker].base_image to python:3.11-slim (each Python gets its own tag) or a Debian base image"
    )
