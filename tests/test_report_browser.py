"""End to end: real records → report.html → headless Chromium, which must show the tables and heatmap."""

from __future__ import annotations

import re
import subprocess

import pytest

from repromatrix import reporting
from tests.conftest import IN_CI, chromium

pytestmark = pytest.mark.browser
# Chromium as root, with nothing reaching for the network (the machine has none).
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        if IN_CI:
            pytest.fail("CI=true but no Chromium (apt-get install chromium)")
        pytest.skip("no Chromium")
    return found


def test_html_report_renders_tables_and_heatmap_in_chromium(browser, two_cell_run, tmp_path):
    _, results = two_cell_run
    reporting.render_all([results], tmp_path / "report")
    page = (tmp_path / "report" / "report.html").resolve()
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # self-contained
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    # A picture first (what changes the bits), then the headline, above every table.
    assert dom.stdout.index('id="figure"') < dom.stdout.index('id="headline"') < dom.stdout.index("<table")
    svg_height = int(re.search(r'<svg[^>]* height="(\d+)"', dom.stdout).group(1))
    assert svg_height + 100 < 900  # below the title, the whole figure is above the fold of a 1400×900 window
    assert "oneDNN off→on" in dom.stdout and (tmp_path / "report" / "figure.svg").is_file()
    assert "![What changes the bits" in (tmp_path / "report" / "report.md").read_text()
    assert "Every expectation held" in dom.stdout
    assert 'id="attribution"' in dom.stdout and 'id="run-to-run"' in dom.stdout
    assert dom.stdout.index('id="attribution"') < dom.stdout.index('id="run-to-run"')
    assert "<details><summary>Every cell × scenario variant" in dom.stdout
    # A heatmap for the seeded variant; the unseeded one has no stable result to compare, and says so.
    assert dom.stdout.count('class="heatmap"') == 1
    assert 'data-scenario="seeded_init-seeded"' in dom.stdout
    assert "No cell has one stable result to compare" in dom.stdout
    assert "tf2.21.0-cpu-onednn0-det0" in dom.stdout and "seeded_init-seeded" in dom.stdout

    screenshot = tmp_path / "report.png"
    shot = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900", f"--screenshot={screenshot}",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a 1400×900 first screen, headline at its top
