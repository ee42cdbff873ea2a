"""Image recipes as data: build arguments and content-addressed tags (no engine needed)."""

from __future__ import annotations

import pytest

from repromatrix.backends.container import DockerBackend
from repromatrix.errors import CellError
from repromatrix.harness.axes import Cell
from repromatrix.matrix import DockerSettings


def tag(cell: Cell, **settings: str) -> str:
    return DockerBackend(settings=DockerSettings(**settings)).image_tag(cell)


def test_tag_is_stable_and_follows_every_input(tmp_path):
    cell = Cell("2.16.2", "cpu")
    assert tag(cell) == tag(cell)
    assert tag(cell).startswith("repromatrix/tf:2.16.2-cpu-pip-")
    assert tag(cell) != tag(cell, base_image="debian-python:local")  # base image
    assert tag(cell) != tag(Cell("2.16.2", "cuda"))  # lock
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tag(cell) != tag(cell, extra_ca=str(ca))  # extra CA bundle
    # Knobs are applied at run time: cells differing only in knobs share the image.
    assert tag(cell) == tag(Cell("2.16.2", "cpu", onednn=False, op_determinism=True, intra_op_threads=2))


def test_official_recipe_uses_the_tensorflow_images():
    backend = DockerBackend()
    assert backend.build_args(Cell("2.16.2", "cuda", "official")) == {"TF_IMAGE": "tensorflow/tensorflow:2.16.2-gpu"}
    assert backend.build_args(Cell("2.16.2", "cpu", "official")) == {"TF_IMAGE": "tensorflow/tensorflow:2.16.2"}
    assert "requirements.lock" not in backend.context_files(Cell("2.16.2", "cpu", "official"))


def test_missing_extra_ca_bundle_names_the_setting(tmp_path):
    with pytest.raises(
        CellError, match=r"extra CA bundle .*nope\.pem: No such file or directory; fix \[docker\]\.extra_ca"
    ):
        tag(Cell("2.16.2", "cpu"), extra_ca=str(tmp_path / "nope.pem"))
