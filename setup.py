"""Only what pyproject.toml cannot say: the repository's default matrix.toml goes into the package.

Everything else about the build is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """Copies ./matrix.toml to repromatrix/matrix.toml in the built package (wheel and sdist builds)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the repository's own file
            target = Path(self.build_lib, "repromatrix", "matrix.toml")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file("matrix.toml", str(target))


setup(cmdclass={"build_py": BuildPy})
