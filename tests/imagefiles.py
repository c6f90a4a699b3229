"""Tiny image files for tests: random JPEG/PNG/BMP crops written into flat folders."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image


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
