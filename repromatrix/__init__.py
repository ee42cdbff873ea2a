"""repromatrix: which TensorFlow environments give bit-identical outputs.

Data flow: matrix.toml → runner (this package) → docker/ recipes → scenarios/
→ results → reporting/.

`scenarios/` and `reporting/` are this package's `repromatrix.scenarios` and
`repromatrix.reporting`: pyproject.toml's package-dir installs them so (and an
editable install maps them). A checkout imported without installing it — the
noxfile does, to name its per-cell sessions — gets the same mapping here.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
_FOLDERS = {"repromatrix.scenarios": "scenarios", "repromatrix.reporting": "reporting"}  # = pyproject's package-dir


class _CheckoutFinder:
    """Finds repromatrix.scenarios and repromatrix.reporting in a checkout's top-level folders."""

    @classmethod
    def find_spec(cls, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        folder = _FOLDERS.get(fullname)
        if folder is None:
            return None
        return spec_from_file_location(fullname, _CHECKOUT / folder / "__init__.py",
                                       submodule_search_locations=[str(_CHECKOUT / folder)])  # fmt: skip


if (_CHECKOUT / "scenarios" / "records.py").is_file() and not (Path(__file__).parent / "scenarios").exists():
    sys.meta_path.append(_CheckoutFinder())
