"""Shared fixtures: tiny Market-1501-layout folders written by the tests themselves."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CUHK03 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03"


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 8)) -> Path:
    """A small random JPEG (or PNG/BMP by suffix); `size` is (height, width)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_folder(folder: Path, names: list[str]) -> Path:
    """A flat folder holding one distinct random image per name."""
    for seed, name in enumerate(names):
        write_image(folder / name, seed=zlib.crc32(name.encode()) + seed)
    return folder


@pytest.fixture
def cuhk03() -> Path:
    if not (CUHK03 / "bounding_box_train").is_dir():
        pytest.skip("the shared CUHK03 data is not on this machine")
    return CUHK03
