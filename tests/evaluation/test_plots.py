"""Evaluation plots: valid PNGs with a predictable grid size, correct colours, light imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from reidnet.errors import ReidnetError
from reidnet.evaluation.plots import (
    CELL_HEIGHT_PX,
    CELL_WIDTH_PX,
    MATCH_COLOR,
    MISMATCH_COLOR,
    QUERY_COLOR,
    plot_cmc,
    plot_sampled_matches,
)


@pytest.fixture()
def images(tmp_path):
    """4 query and 8 gallery crops (grey, 256 x 128) on disk."""
    paths = []
    for index in range(12):
        path = tmp_path / "images" / f"{index:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (128, 256), (120 + 10 * index, 120, 120)).save(path)
        paths.append(str(path))
    return paths[:4], paths[4:]


QUERY_PIDS = np.array([1, 2, 3, 4])
QUERY_CAMS = np.array([1, 1, 1, 1])
GALLERY_PIDS = np.array([1, 1, 2, 5, 3, 4, 4, 9])
GALLERY_CAMS = np.array([1, 2, 2, 2, 2, 2, 2, 2])


def color_fraction(pixels: np.ndarray, hex_color: str) -> float:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(pixels[..., :3].astype(int) - rgb).sum(-1) < 60).mean())


def cell(pixels: np.ndarray, row: int, column: int) -> np.ndarray:
    return pixels[
        row * CELL_HEIGHT_PX : (row + 1) * CELL_HEIGHT_PX,
        column * CELL_WIDTH_PX : (column + 1) * CELL_WIDTH_PX,
    ]


def test_sampled_matches_grid_size_and_colours(images, tmp_path):
    query_paths, gallery_paths = images
    distmat = np.tile(np.arange(8, dtype=float), (4, 1))  # gallery order g0, g1, ... for all
    path = plot_sampled_matches(
        query_paths,
        gallery_paths,
        distmat,
        QUERY_PIDS,
        GALLERY_PIDS,
        tmp_path / "out" / "m.png",
        num_query=4,
        max_rank=5,
        query_camids=QUERY_CAMS,
        gallery_camids=GALLERY_CAMS,
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (6 * CELL_WIDTH_PX, 4 * CELL_HEIGHT_PX)
        pixels = np.asarray(image.convert("RGB"))
    # Row 0 is query pid 1 (camera 1): g0 (pid 1, camera 1) is skipped, so rank 1 is g1, a true
    # match (green), and rank 2 is g2 (pid 2, red).
    assert color_fraction(cell(pixels, 0, 0), QUERY_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 1), MATCH_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 1), MISMATCH_COLOR) == 0
    assert color_fraction(cell(pixels, 0, 2), MISMATCH_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 2), MATCH_COLOR) == 0


def test_short_rows_keep_the_grid_size(images, tmp_path):
    query_paths, gallery_paths = images
    path = plot_sampled_matches(
        query_paths,
        gallery_paths,
        np.random.default_rng(0).random((4, 8)),
        QUERY_PIDS,
        GALLERY_PIDS,
        tmp_path / "m.png",
        num_query=2,
        max_rank=12,
        same_camera_filter=False,
    )
    with Image.open(path) as image:
        assert image.size == (13 * CELL_WIDTH_PX, 2 * CELL_HEIGHT_PX)


def test_same_seed_draws_the_same_queries(images, tmp_path):
    query_paths, gallery_paths = images
    distmat = np.random.default_rng(1).random((4, 8))
    drawn = []
    for name in ("a.png", "b.png"):
        path = plot_sampled_matches(
            query_paths,
            gallery_paths,
            distmat,
            QUERY_PIDS,
            GALLERY_PIDS,
            tmp_path / name,
            num_query=2,
            max_rank=3,
            seed=7,
        )
        with Image.open(path) as image:
            drawn.append(np.asarray(image))
    np.testing.assert_array_equal(drawn[0], drawn[1])


def test_missing_image_names_the_file(images, tmp_path):
    query_paths, gallery_paths = images
    missing = [*query_paths[:3], str(tmp_path / "gone.jpg")]
    with pytest.raises(ReidnetError, match=r"gone\.jpg"):
        plot_sampled_matches(
            missing,
            gallery_paths,
            np.zeros((4, 8)),
            QUERY_PIDS,
            GALLERY_PIDS,
            tmp_path / "m.png",
            num_query=4,
            max_rank=2,
        )


def test_cmc_plot_is_a_png(tmp_path):
    path = plot_cmc(np.linspace(0.6, 1.0, 50), tmp_path / "plots" / "cmc.png", title="CMC")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (600, 400)


def test_importing_evaluation_does_not_import_matplotlib():
    code = "import sys, reidnet.evaluation; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
