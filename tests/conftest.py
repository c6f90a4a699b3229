"""Shared fixtures. Image-writing helpers live in tests/imagefiles.py (import them from there:
several conftest modules exist, so importing helpers from conftest is ambiguous)."""

from __future__ import annotations

from pathlib import Path

import pytest

CUHK03 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03"


@pytest.fixture
def cuhk03() -> Path:
    if not (CUHK03 / "bounding_box_train").is_dir():
        pytest.skip("the shared CUHK03 data is not on this machine")
    return CUHK03
