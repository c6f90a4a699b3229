"""Shared fixtures. Helpers a test imports live in plain modules: image files in
tests/imagefiles.py, the tiny training setup in tests/tiny_training.py (several conftest modules
exist, so importing helpers from a conftest is ambiguous)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real CUHK03 (Market-1501 layout) for the tests that read it; outside the repository, so
# its place is configurable and the tests skip when it is not there.
CUHK03_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03"


@pytest.fixture
def cuhk03() -> Path:
    root = Path(os.environ.get("REIDNET_CUHK03") or CUHK03_DEFAULT)
    if not (root / "bounding_box_train").is_dir():
        pytest.skip(
            "set REIDNET_CUHK03 to a CUHK03 folder in Market-1501 layout to run this test "
            f"(none found at {'REIDNET_CUHK03=' if os.environ.get('REIDNET_CUHK03') else ''}"
            f"{root}: no bounding_box_train folder)"
        )
    return root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """The tiny synthetic dataset of tests/tiny_training.py, made once per test session.

    Shared by every test that asks for it: read it, never change it (copy a folder first, as
    the tests of broken or grown training data do)."""
    from tiny_training import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synthetic") / "data")
