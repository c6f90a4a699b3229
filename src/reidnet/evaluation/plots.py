"""Evaluation plots: the CMC curve and a grid of sampled query results.

matplotlib is imported inside the functions (with the Agg backend), so importing reidnet stays light
and plotting works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reidnet.errors import ReidnetError
from reidnet.evaluation.distance import ArrayLike

DPI = 100
# Each image of the sampled-matches grid takes a cell of this many pixels: a 2:1 (256 x 128 crop)
# image area on top and a text band with the rank and distance below. The PNG is exactly
# (max_rank + 1) * CELL_WIDTH_PX wide and num_query * CELL_HEIGHT_PX high.
CELL_WIDTH_PX = 100
CELL_HEIGHT_PX = 250
_IMAGE_HEIGHT_PX = 200
_BORDER_WIDTH_PT = 3.0
QUERY_COLOR = "#1f5fd6"
MATCH_COLOR = "#17a34a"
MISMATCH_COLOR = "#d62728"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cmc(cmc: ArrayLike, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write the CMC curve (rank k vs. fraction of queries matched within k) as a PNG.

    Args:
        cmc: CMC values in [0, 1], ``cmc[k - 1]`` for rank k (``RankResult.cmc``).
        path: output file; its folder is created.
        title: plot title; default "CMC".

    Returns:
        The written path.
    """
    values = np.asarray(cmc.cpu() if isinstance(cmc, torch.Tensor) else cmc, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ReidnetError(f"cmc must be a non-empty 1-D array; got shape {values.shape}")
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ranks = np.arange(1, len(values) + 1)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=DPI)
    try:
        axes.plot(ranks, 100 * values, marker="o" if len(values) <= 50 else None, markersize=3)
        axes.set_xlabel("rank")
        axes.set_ylabel("matching rate (%)")
        axes.set_title(title or "CMC")
        axes.set_xlim(1, max(len(values), 2))
        axes.set_ylim(max(0.0, 100 * values.min() - 5), 100.5)
        axes.grid(True, alpha=0.3)
        axes.annotate(
            f"rank-1 {100 * values[0]:.1f}%",
            (1, 100 * values[0]),
            textcoords="offset points",
            xytext=(8, -12),
        )
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def plot_sampled_matches(
    query_paths: Sequence[str | os.PathLike],
    gallery_paths: Sequence[str | os.PathLike],
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    path: str | os.PathLike,
    num_query: int = 10,
    max_rank: int = 10,
    query_camids: ArrayLike | None = None,
    gallery_camids: ArrayLike | None = None,
    same_camera_filter: bool = True,
    seed: int = 0,
) -> Path:
    """Write a grid of sampled queries and their top-ranked gallery images as a PNG.

    One row per query: the query image (blue border), then its ``max_rank`` nearest gallery images
    after the same filtering as :func:`~reidnet.evaluation.rank_metrics`, bordered green for a true
    match and red otherwise, each labelled with its rank and distance. Rows with fewer gallery
    images leave the remaining cells blank, so the PNG is always
    ``(max_rank + 1) * CELL_WIDTH_PX`` x ``min(num_query, Q) * CELL_HEIGHT_PX`` pixels.

    Args:
        query_paths, gallery_paths: image files of the distance matrix's rows and columns.
        distmat: Q x G distances (numpy or torch).
        query_pids, gallery_pids: identities, to colour the matches.
        path: output PNG; its folder is created.
        num_query: rows of the grid; the queries are drawn at random (without replacement).
        max_rank: gallery images per row.
        query_camids, gallery_camids: cameras; with ``same_camera_filter`` the gallery images of
            the query's identity and camera are skipped. Without camera ids (or without the filter)
            only the query image itself is skipped.
        same_camera_filter: apply the Market-1501 same-camera rule.
        seed: the same seed draws the same queries.

    Returns:
        The written path.
    """
    distances = distmat.detach() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
    num_rows_total, num_gallery = distances.shape
    q_pids, g_pids = _ids(query_pids, num_rows_total), _ids(gallery_pids, num_gallery)
    if len(query_paths) != num_rows_total or len(gallery_paths) != num_gallery:
        raise ReidnetError(
            f"got {len(query_paths)} query and {len(gallery_paths)} gallery paths for a "
            f"{num_rows_total} x {num_gallery} distance matrix; pass one path per row and column"
        )
    if num_query < 1 or max_rank < 1:
        raise ReidnetError(f"num_query and max_rank must be >= 1; got {num_query}, {max_rank}")
    use_cameras = same_camera_filter and query_camids is not None and gallery_camids is not None
    q_cams = _ids(query_camids, num_rows_total) if use_cameras else None
    g_cams = _ids(gallery_camids, num_gallery) if use_cameras else None
    gallery_names = [os.path.normpath(os.fspath(p)) for p in gallery_paths]

    rng = np.random.default_rng(seed)
    queries = np.sort(
        rng.choice(num_rows_total, size=min(num_query, num_rows_total), replace=False)
    )
    rows = []
    for query in queries:
        row = distances[query]
        row = row.float().cpu().numpy() if isinstance(row, torch.Tensor) else row
        order = np.argsort(row, kind="stable")
        if q_cams is not None:
            dropped = (g_pids[order] == q_pids[query]) & (g_cams[order] == q_cams[query])
        else:
            own = os.path.normpath(os.fspath(query_paths[query]))
            dropped = np.array([gallery_names[index] == own for index in order], dtype=bool)
        ranked = order[~dropped][:max_rank]
        rows.append((query, ranked, row[ranked]))
    return _draw_grid(rows, query_paths, gallery_paths, q_pids, g_pids, max_rank, Path(path))


def _draw_grid(
    rows: list[tuple[int, np.ndarray, np.ndarray]],
    query_paths: Sequence[str | os.PathLike],
    gallery_paths: Sequence[str | os.PathLike],
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    max_rank: int,
    path: Path,
) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    num_columns, num_rows = max_rank + 1, len(rows)
    figure = plt.figure(
        figsize=(num_columns * CELL_WIDTH_PX / DPI, num_rows * CELL_HEIGHT_PX / DPI), dpi=DPI
    )
    try:
        for row_index, (query, ranked, distances) in enumerate(rows):
            _draw_cell(
                figure,
                row_index,
                0,
                num_rows,
                num_columns,
                query_paths[query],
                QUERY_COLOR,
                f"query\nid {query_pids[query]}",
            )
            for rank, (gallery, distance) in enumerate(zip(ranked, distances, strict=True), 1):
                color = (
                    MATCH_COLOR if gallery_pids[gallery] == query_pids[query] else MISMATCH_COLOR
                )
                _draw_cell(
                    figure,
                    row_index,
                    rank,
                    num_rows,
                    num_columns,
                    gallery_paths[gallery],
                    color,
                    f"rank {rank}\nd={distance:.3f}",
                )
        figure.savefig(path, dpi=DPI)
    finally:
        plt.close(figure)
    return path


def _draw_cell(
    figure,
    row: int,
    column: int,
    num_rows: int,
    num_columns: int,
    image_path: str | os.PathLike,
    color: str,
    label: str,
) -> None:
    """One image with a coloured border in its grid cell, and its label underneath."""
    width, height = 1 / num_columns, 1 / num_rows
    left, bottom = column * width, 1 - (row + 1) * height
    margin = 0.06 * width
    image_height = height * _IMAGE_HEIGHT_PX / CELL_HEIGHT_PX
    label_height = height - image_height
    axes = figure.add_axes(
        (left + margin, bottom + label_height, width - 2 * margin, image_height - margin)
    )
    axes.imshow(_load_image(image_path), aspect="auto")
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(_BORDER_WIDTH_PT)
    figure.text(
        left + width / 2, bottom + label_height / 2, label, ha="center", va="center", fontsize=7
    )


def _load_image(image_path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(image_path) as image:
            return np.asarray(image.convert("RGB").resize((64, 128)))
    except OSError as error:
        raise ReidnetError(
            f"cannot read image {image_path} for the sampled-matches plot: {error}; check that "
            "the query and gallery folders are still in place"
        ) from error


def _ids(values: ArrayLike, length: int) -> np.ndarray:
    array = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.shape != (length,):
        raise ReidnetError(
            f"expected {length} ids, one per distance-matrix row or column; got shape {array.shape}"
        )
    return array
