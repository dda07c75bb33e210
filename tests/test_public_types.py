"""udt ships its annotations (PEP 561) and a user's code calling the public API passes
``mypy --strict``: tests/typecheck_public_api.py, checked against the installed package as a
user's project would see it (errors inside udt itself are mypy's business in the lint step)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import udt

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = Path(__file__).with_name("typecheck_public_api.py")


def test_py_typed_is_package_data():
    assert (Path(udt.__file__).parent / "py.typed").is_file()
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert "py.typed" in tomllib.load(f)["tool"]["setuptools"]["package-data"]["udt"]


def test_every_option_constant_is_exported():
    names = set(udt.__all__)
    assert {option.name for option in udt.SocketOption} <= names
    assert {"SOL_UDT", "socket", "create_connection", "PerfMon"} <= names


@pytest.mark.slow
def test_public_api_passes_mypy_strict(tmp_path):
    api = pytest.importorskip("mypy.api", reason="mypy is the lint extra (pyproject's 'lint')")
    # run outside the tree so udt resolves to the installed package (its py.typed, its exports)
    stdout, stderr, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path), "--config-file", "", str(SNIPPET)]
    )
    assert status == 0, stdout + stderr
