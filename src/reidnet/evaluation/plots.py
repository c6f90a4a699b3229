"""Evaluation and training plots: the CMC curve, a grid of sampled query results, and the
training curves (loss, learning rate, validation mAP per epoch) of a train folder.

matplotlib is imported inside the functions (with the Agg backend), so importing reidnet stays light
and plotting works without a display. The `*_figure` functions return the matplotlib Figure (for a
notebook); the `plot_*` functions write it as a PNG.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from reidnet.contracts import LOSS_PREFIX, METRICS_FILE
from reidnet.errors import ReidnetError
from reidnet.evaluation.distance import ArrayLike
from reidnet.protocol import image_key, same_camera_ignored

logger = logging.getLogger(__name__)

DPI = 100
# Each image of the sampled-matches grid takes a cell of this many pixels: a 2:1 image area on top
# (the crop at the 64 x 128 it is resized to, so no upsampling blur) and a three-line text band
# (rank, camera, distance) below. A band with the legend of the border colours runs along the
# bottom. The PNG is exactly (max_rank + 1) * CELL_WIDTH_PX wide and
# num_query * CELL_HEIGHT_PX + LEGEND_HEIGHT_PX high, stored with a 256-colour palette.
CELL_WIDTH_PX = 72
CELL_HEIGHT_PX = 172
LEGEND_HEIGHT_PX = 28
_IMAGE_HEIGHT_PX = 136
_TILE_SIZE = (64, 128)  # (width, height) every crop is resized to
_BORDER_WIDTH_PT = 2.5
QUERY_COLOR = "#1f5fd6"
MATCH_COLOR = "#17a34a"
MISMATCH_COLOR = "#d62728"
LEGEND_LABELS = {
    QUERY_COLOR: "query",
    MATCH_COLOR: "same identity (true match)",
    MISMATCH_COLOR: "other identity",
}
TRAINING_CURVES_FILE = "training_curves.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cmc_title(
    title: str | None,
    rank1: float,
    model: str | None = None,
    dataset: str | None = None,
    mean_ap: float | None = None,
) -> str:
    """'CMC: <model> on <dataset>' over 'mAP x%, rank-1 y%' (parts that are not given left out)."""
    heading = title or "CMC"
    described = " on ".join(part for part in (model, dataset) if part)
    if described:
        heading += f": {described}"
    scores = f"rank-1 {100 * rank1:.1f}%"
    if mean_ap is not None:
        scores = f"mAP {100 * mean_ap:.1f}%, " + scores
    return f"{heading}\n{scores}"


def cmc_figure(
    cmc: ArrayLike,
    title: str | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    mean_ap: float | None = None,
):
    """The CMC curve (rank k vs. fraction of queries matched within k) as a matplotlib Figure.

    Args:
        cmc: CMC values in [0, 1], ``cmc[k - 1]`` for rank k (``RankResult.cmc``).
        title: first words of the title; default "CMC".
        model, dataset, mean_ap: named in the title when given (with rank-1 = ``cmc[0]``).
    """
    values = np.asarray(cmc.cpu() if isinstance(cmc, torch.Tensor) else cmc, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ReidnetError(f"cmc must be a non-empty 1-D array; got shape {values.shape}")
    plt = _pyplot()
    ranks = np.arange(1, len(values) + 1)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=DPI)
    axes.plot(ranks, 100 * values, marker="o" if len(values) <= 50 else None, markersize=3)
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_title(cmc_title(title, values[0], model, dataset, mean_ap), fontsize=10)
    axes.set_xlim(1, max(len(values), 2))
    bottom = max(0.0, 100 * values.min() - 5)
    axes.set_ylim(bottom, 100.5)
    axes.grid(True, alpha=0.3)
    # Rank-1 is the curve's lowest point: its label goes above it when the point sits in the
    # lower half of the axes (else it would cross the x axis), below it otherwise.
    low = (100 * values[0] - bottom) / (100.5 - bottom) < 0.5
    axes.annotate(
        f"rank-1 {100 * values[0]:.1f}%",
        (1, 100 * values[0]),
        textcoords="offset points",
        xytext=(8, 8 if low else -8),
        va="bottom" if low else "top",
        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"},
    )
    figure.tight_layout()
    return figure


def plot_cmc(
    cmc: ArrayLike,
    path: str | os.PathLike,
    title: str | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    mean_ap: float | None = None,
) -> Path:
    """Write :func:`cmc_figure` as a PNG (its folder is created) and return the path."""
    figure = cmc_figure(cmc, title, model=model, dataset=dataset, mean_ap=mean_ap)
    return _save(figure, Path(path))


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
    match and red otherwise, each labelled with its rank, camera and distance; a legend of the
    colours runs along the bottom. Rows with fewer gallery images leave the remaining cells blank,
    so the PNG is always ``(max_rank + 1) * CELL_WIDTH_PX`` x
    ``min(num_query, Q) * CELL_HEIGHT_PX + LEGEND_HEIGHT_PX`` pixels, with a 256-colour palette
    (a tenth of the size of full-colour RGBA for the same picture).

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
    figure = sampled_matches_figure(
        query_paths,
        gallery_paths,
        distmat,
        query_pids,
        gallery_pids,
        num_query,
        max_rank,
        query_camids,
        gallery_camids,
        same_camera_filter,
        seed,
    )
    return _save(figure, Path(path), palette=True)


def sampled_matches_figure(
    query_paths: Sequence[str | os.PathLike],
    gallery_paths: Sequence[str | os.PathLike],
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    num_query: int = 10,
    max_rank: int = 10,
    query_camids: ArrayLike | None = None,
    gallery_camids: ArrayLike | None = None,
    same_camera_filter: bool = True,
    seed: int = 0,
):
    """The figure :func:`plot_sampled_matches` writes (same arguments, without ``path``)."""
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
    has_cameras = query_camids is not None and gallery_camids is not None
    q_cams = _ids(query_camids, num_rows_total) if has_cameras else None
    g_cams = _ids(gallery_camids, num_gallery) if has_cameras else None
    gallery_names = [image_key(p) for p in gallery_paths]

    rng = np.random.default_rng(seed)
    queries = np.sort(
        rng.choice(num_rows_total, size=min(num_query, num_rows_total), replace=False)
    )
    rows = []
    for query in queries:
        row = distances[query]
        row = row.float().cpu().numpy() if isinstance(row, torch.Tensor) else row
        order = np.argsort(row, kind="stable")
        if same_camera_filter and has_cameras:
            dropped = same_camera_ignored(
                q_pids[query], q_cams[query], g_pids[order], g_cams[order]
            )
        else:
            own = image_key(query_paths[query])
            dropped = np.array([gallery_names[index] == own for index in order], dtype=bool)
        ranked = order[~dropped][:max_rank]
        rows.append((query, ranked, row[ranked]))
    labels = _Labels(q_pids, g_pids, q_cams, g_cams)
    return _grid_figure(rows, query_paths, gallery_paths, labels, max_rank)


class _Labels:
    """Identities and (optional) cameras of the grid's images, and the text under each tile."""

    def __init__(self, query_pids, gallery_pids, query_cams, gallery_cams) -> None:
        self.query_pids, self.gallery_pids = query_pids, gallery_pids
        self.query_cams, self.gallery_cams = query_cams, gallery_cams

    def query(self, index: int) -> str:
        camera = "" if self.query_cams is None else f"\ncam {self.query_cams[index]}"
        return f"query\nid {self.query_pids[index]}{camera}"

    def gallery(self, index: int, rank: int, distance: float) -> str:
        camera = "" if self.gallery_cams is None else f"\ncam {self.gallery_cams[index]}"
        return f"rank {rank}{camera}\nd={distance:.3f}"


def _grid_figure(
    rows: list[tuple[int, np.ndarray, np.ndarray]],
    query_paths: Sequence[str | os.PathLike],
    gallery_paths: Sequence[str | os.PathLike],
    labels: _Labels,
    max_rank: int,
):
    plt = _pyplot()
    num_columns, num_rows = max_rank + 1, len(rows)
    grid_height = num_rows * CELL_HEIGHT_PX
    figure = plt.figure(
        figsize=(num_columns * CELL_WIDTH_PX / DPI, (grid_height + LEGEND_HEIGHT_PX) / DPI),
        dpi=DPI,
    )
    # Cells are laid out in a box above the legend band, in figure fractions.
    grid = (
        LEGEND_HEIGHT_PX / (grid_height + LEGEND_HEIGHT_PX),
        grid_height / (grid_height + LEGEND_HEIGHT_PX),
    )
    for row_index, (query, ranked, distances) in enumerate(rows):
        cell = _Cell(figure, grid, row_index, num_rows, num_columns)
        cell.draw(0, query_paths[query], QUERY_COLOR, labels.query(query))
        for rank, (gallery, distance) in enumerate(zip(ranked, distances, strict=True), 1):
            same = labels.gallery_pids[gallery] == labels.query_pids[query]
            color = MATCH_COLOR if same else MISMATCH_COLOR
            cell.draw(rank, gallery_paths[gallery], color, labels.gallery(gallery, rank, distance))
    _draw_legend(figure, grid[0])
    return figure


def _draw_legend(figure, height: float) -> None:
    """The border colours explained, in the band of figure height `height` at the bottom."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="none", edgecolor=color, linewidth=_BORDER_WIDTH_PT, label=label)
        for color, label in LEGEND_LABELS.items()
    ]
    figure.legend(
        handles=handles,
        loc="center",
        bbox_to_anchor=(0.5, height / 2),
        ncol=len(handles),
        frameon=False,
        fontsize=7,
        handlelength=1.2,
        columnspacing=1.0,
    )


class _Cell:
    """Draws the tiles of one grid row: an image with a coloured border, its label underneath."""

    def __init__(self, figure, grid: tuple[float, float], row: int, rows: int, columns: int):
        self.figure = figure
        self.width, self.height = 1 / columns, grid[1] / rows
        self.bottom = grid[0] + grid[1] - (row + 1) * self.height

    def draw(self, column: int, image_path: str | os.PathLike, color: str, label: str) -> None:
        left, width, height = column * self.width, self.width, self.height
        margin = 0.06 * width
        image_height = height * _IMAGE_HEIGHT_PX / CELL_HEIGHT_PX
        label_height = height - image_height
        axes = self.figure.add_axes(
            (left + margin, self.bottom + label_height, width - 2 * margin, image_height - margin)
        )
        axes.imshow(_load_image(image_path), aspect="auto", interpolation="nearest")
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(_BORDER_WIDTH_PT)
        self.figure.text(
            left + width / 2,
            self.bottom + label_height / 2,
            label,
            ha="center",
            va="center",
            fontsize=6.5,
        )


def _load_image(image_path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(image_path) as image:
            return np.asarray(image.convert("RGB").resize(_TILE_SIZE))
    except OSError as error:
        raise ReidnetError(
            f"cannot read image {image_path} for the sampled-matches plot: {error}; check that "
            "the query and gallery folders are still in place"
        ) from error


def _save(figure, path: Path, palette: bool = False) -> Path:
    """Write a figure as a PNG (folder created) and close it; `palette`: 256 colours, no alpha."""
    plt = _pyplot()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not palette:
            figure.savefig(path, dpi=DPI)
            return path
        from PIL import Image

        figure.canvas.draw()
        rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3]
        image = Image.fromarray(rgb).quantize(256, dither=Image.Dither.NONE)
        image.save(path, format="PNG", optimize=True)
        return path
    finally:
        plt.close(figure)


def _ids(values: ArrayLike, length: int) -> np.ndarray:
    array = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.shape != (length,):
        raise ReidnetError(
            f"expected {length} ids, one per distance-matrix row or column; got shape {array.shape}"
        )
    return array


# ---------------------------------------------------------------------------------------------
# Training curves


def read_training_records(results_dir: str | os.PathLike) -> tuple[Path, list[dict]]:
    """The per-epoch records of a train folder (or of `<results_dir>/train`), one per epoch.

    A resumed run appends to metrics.jsonl; when an epoch was logged twice the last record wins.
    """
    folder = Path(results_dir)
    candidates = [folder / METRICS_FILE, folder / "train" / METRICS_FILE]
    metrics_file = next((c for c in candidates if c.is_file()), None)
    if metrics_file is None:
        raise ReidnetError(
            f"no metrics.jsonl in {folder} or {folder / 'train'}: pass the results_dir of a "
            "training run (or its train folder) after at least one epoch"
        )
    by_epoch: dict[int, dict] = {}
    for number, line in enumerate(metrics_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError) as error:
            raise ReidnetError(
                f"{metrics_file} line {number} is not an epoch record ({error}); remove the line "
                "or rerun the training"
            ) from error
    if not by_epoch:
        raise ReidnetError(f"{metrics_file} holds no epoch yet: plot after the first epoch")
    logger.debug("read %d epoch records from %s", len(by_epoch), metrics_file)
    return metrics_file, [by_epoch[epoch] for epoch in sorted(by_epoch)]


def training_curves_figure(records: Sequence[dict], title: str | None = None):
    """Losses, learning rate and validation mAP / rank-1 per epoch, in three stacked panels.

    Every ``loss_*`` key of the records is one line of the loss panel; validation is drawn at the
    epochs that have it (``train.validation_interval``).
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [record["epoch"] for record in records]
    figure, (loss_axes, lr_axes, val_axes) = plt.subplots(
        3, 1, figsize=(7, 8), dpi=DPI, sharex=True
    )
    loss_keys = sorted({key for record in records for key in record if key.startswith(LOSS_PREFIX)})
    for key in loss_keys:
        label = key.removeprefix(LOSS_PREFIX)
        loss_axes.plot(epochs, [r.get(key, np.nan) for r in records], marker=".", label=label)
    loss_axes.set_ylabel("loss")
    if loss_keys:
        loss_axes.legend(fontsize=8)
    lr_axes.plot(epochs, [r.get("lr", np.nan) for r in records], marker=".", color="#555555")
    lr_axes.set_ylabel("learning rate")
    lr_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    validated = [r for r in records if "validation" in r]
    for key in ("mAP", "rank-1"):
        val_axes.plot(
            [r["epoch"] for r in validated],
            [100 * r["validation"][key] for r in validated],
            marker="o",
            markersize=4,
            label=key,
        )
    if validated:
        val_axes.legend(fontsize=8)
        best = max(validated, key=lambda r: r["validation"]["mAP"])
        val_axes.set_title(
            f"best mAP {100 * best['validation']['mAP']:.1f}% at epoch {best['epoch']}",
            fontsize=9,
        )
    else:
        val_axes.set_yticks([])
        val_axes.text(
            0.5,
            0.5,
            "no validation yet (train.validation_interval)",
            ha="center",
            transform=val_axes.transAxes,
        )
    val_axes.set_ylabel("validation (%)")
    val_axes.set_xlabel("epoch")
    val_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (loss_axes, lr_axes, val_axes):
        axes.grid(True, alpha=0.3)
    figure.suptitle(title or f"training: {len(records)} epochs", fontsize=11)
    figure.tight_layout()
    return figure


def plot_training_curves(
    results_dir: str | os.PathLike, path: str | os.PathLike | None = None
) -> Path:
    """Write the training curves of a run as a PNG (default: training_curves.png beside its
    metrics.jsonl) and return the path."""
    metrics_file, records = read_training_records(results_dir)
    figure = training_curves_figure(records, f"training curves: {metrics_file.parent}")
    return _save(figure, Path(path) if path else metrics_file.parent / TRAINING_CURVES_FILE)
