"""repromatrix: which TensorFlow environments give bit-identical outputs.

Data flow: matrix.toml → plan (`matrix`), build and run (`backends`, `runner`) → docker/ recipes →
inside every cell the harness (`harness`) runs the scenarios (`scenarios`) → records → `reporting`.

The top-level scenarios/ and reporting/ folders of a checkout are this package's `repromatrix.scenarios`
and `repromatrix.reporting` (pyproject.toml's package-dir). An editable install lays the whole package
out as the wheel does, as a tree of links (setup.py makes it a strict one); `extend_path` lets the
checkout's own folder, first on the path when Python starts there, find the rest in that tree.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
