"""The host probe with real TensorFlow on this machine: what a plain run gets, and what the host computes (#29)."""

from __future__ import annotations

import os

import pytest

from repromatrix.backends import code_root
from repromatrix.harness import hostprobe, hosts
from tests.conftest import NEWEST_TF

pytestmark = pytest.mark.tf

# TF (2.9 and later) turns oneDNN on by itself only on CPUs with newer AI instructions: never on one with none of these.
NEWER_THAN_AVX2 = {"avx512f", "avx_vnni", "amx_tile"}


def test_the_probe_says_what_tf_picks_on_this_host_and_is_measured_once(tf_python, tmp_path):
    command = [tf_python(NEWEST_TF), "-P", "-m", "repromatrix.harness.worker", "--probe-host"]
    # Set in the user's shell: the plain run is measured without it all the same.
    env = {**os.environ, "PYTHONPATH": str(code_root()), "TF_ENABLE_ONEDNN_OPTS": "1"}
    host = hosts.fingerprint()
    cell = {"id": f"tf{NEWEST_TF}-cpu-onednn1-det0", "tf": NEWEST_TF, "device": "cpu"}
    answer = hostprobe.measure(command, env, host, cell, tmp_path, shared=False)
    assert "error" not in answer, answer
    plain = answer["plain_run"]
    assert isinstance(plain["onednn"], bool)
    if not NEWER_THAN_AVX2 & set(host.isa):  # an AVX2-only part (this project's AMD EPYC): off by default
        assert plain["onednn"] is False, (host.isa, plain)
    assert plain["usable_cores"] == hosts.usable_cores() and plain["thread_pools"]
    assert answer["tf"] == NEWEST_TF
    for mode in ("onednn0", "onednn1"):
        assert set(answer["probe"][mode]) == set(hostprobe.KERNELS)
        assert all(len(digest) == 64 for digest in answer["probe"][mode].values())
    assert not list(tmp_path.glob(".host-probe-*.tmp"))  # the probe processes' answers are gone
    assert hostprobe.measure(["/nonexistent"], env, host, cell, tmp_path, shared=False) == answer  # cached
