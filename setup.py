"""Only what pyproject.toml cannot say: the repository's default matrix.toml goes into the package, and an
editable install is a strict one.

Everything else about the build is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel


class BuildPy(build_py):
    """Copies ./matrix.toml to repromatrix/matrix.toml in the built package (wheel and sdist builds)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the repository's own file
            target = Path(self.build_lib, "repromatrix", "matrix.toml")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file("matrix.toml", str(target))


class StrictEditable(editable_wheel):
    """`pip install -e .` as a tree of links to the checkout's files, laid out as the wheel lays them out.

    scenarios/ and reporting/ are `repromatrix.scenarios` and `repromatrix.reporting` (pyproject's
    package-dir). setuptools' default ("lenient") editable install maps those names with an import
    hook, which Python follows but type checkers, `pkgutil.walk_packages` and structure tools do not;
    the strict mode's link tree (in build/, never committed) is plain folders they all read. A file
    added to the checkout needs `pip install -e .` again (every nox session does it).
    """

    def initialize_options(self) -> None:
        super().initialize_options()
        self.mode = "strict"


setup(cmdclass={"build_py": BuildPy, "editable_wheel": StrictEditable})
