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
    LEGEND_HEIGHT_PX,
    LEGEND_LABELS,
    MATCH_COLOR,
    MISMATCH_COLOR,
    QUERY_COLOR,
    cmc_figure,
    plot_cmc,
    plot_sampled_matches,
    plot_training_curves,
    read_training_records,
    sampled_matches_figure,
    training_curves_figure,
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
        assert image.size == (6 * CELL_WIDTH_PX, 4 * CELL_HEIGHT_PX + LEGEND_HEIGHT_PX)
        pixels = np.asarray(image.convert("RGB"))
    # Row 0 is query pid 1 (camera 1): g0 (pid 1, camera 1) is skipped, so rank 1 is g1, a true
    # match (green), and rank 2 is g2 (pid 2, red).
    assert color_fraction(cell(pixels, 0, 0), QUERY_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 1), MATCH_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 1), MISMATCH_COLOR) == 0
    assert color_fraction(cell(pixels, 0, 2), MISMATCH_COLOR) > 0.01
    assert color_fraction(cell(pixels, 0, 2), MATCH_COLOR) == 0
    legend_band = pixels[4 * CELL_HEIGHT_PX :]
    for color in (QUERY_COLOR, MATCH_COLOR, MISMATCH_COLOR):
        assert color_fraction(legend_band, color) > 0.002, color


def test_sampled_matches_legend_names_the_border_colours_and_tiles_name_their_camera(images):
    import matplotlib.colors

    query_paths, gallery_paths = images
    distmat = np.tile(np.arange(8, dtype=float), (4, 1))
    figure = sampled_matches_figure(
        query_paths,
        gallery_paths,
        distmat,
        QUERY_PIDS,
        GALLERY_PIDS,
        num_query=4,
        max_rank=2,
        query_camids=QUERY_CAMS,
        gallery_camids=GALLERY_CAMS,
    )
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == list(LEGEND_LABELS.values())
    edges = [matplotlib.colors.to_hex(h.get_edgecolor()) for h in legend.legend_handles]
    assert edges == [QUERY_COLOR, MATCH_COLOR, MISMATCH_COLOR]
    labels = [text.get_text() for text in figure.texts]
    # Row 0, query pid 1 from camera 1: g0 (pid 1, camera 1) is filtered out, so rank 1 is g1
    # (camera 2, distance 1) and rank 2 is g2 (camera 2, distance 2).
    assert labels[:3] == ["query\nid 1\ncam 1", "rank 1\ncam 2\nd=1.000", "rank 2\ncam 2\nd=2.000"]


def test_sampled_matches_png_is_a_fraction_of_the_full_colour_figure(tmp_path):
    from reidnet.data.market import read_records
    from reidnet.datatools.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(
        tmp_path / "synth", identities=4, test_identities=2, cameras=2, images_per_identity=8
    )
    query = read_records(tmp_path / "synth" / "query")
    gallery = read_records(tmp_path / "synth" / "bounding_box_test")
    arguments = (
        [str(r.path) for r in query],
        [str(r.path) for r in gallery],
        np.random.default_rng(0).random((len(query), len(gallery))),
        np.array([r.pid for r in query]),
        np.array([r.pid for r in gallery]),
    )
    written = plot_sampled_matches(*arguments, tmp_path / "palette.png", num_query=3, max_rank=5)
    # The same figure written as the plot used to be: full-colour RGBA by savefig.
    full_colour = tmp_path / "rgba.png"
    sampled_matches_figure(*arguments, num_query=3, max_rank=5).savefig(full_colour)
    assert written.stat().st_size < full_colour.stat().st_size / 3
    with Image.open(written) as palette, Image.open(full_colour) as rgba:
        assert palette.mode == "P" and palette.size == rgba.size


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
        assert image.size == (13 * CELL_WIDTH_PX, 2 * CELL_HEIGHT_PX + LEGEND_HEIGHT_PX)


def _drawn_query_ids(images, distmat, seed: int) -> tuple[str, ...]:
    """The identities of the query rows a seed draws, read from the figure's query labels."""
    import matplotlib.pyplot as plt

    query_paths, gallery_paths = images
    figure = sampled_matches_figure(
        query_paths,
        gallery_paths,
        distmat,
        QUERY_PIDS,
        GALLERY_PIDS,
        num_query=2,
        max_rank=1,
        seed=seed,
    )
    labels = [text.get_text() for text in figure.texts]
    plt.close(figure)
    return tuple(label.split("\n")[1] for label in labels if label.startswith("query"))


def test_same_seed_draws_the_same_queries_and_other_seeds_other_ones(images, tmp_path):
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
    # 2 of 4 queries: 6 possible pairs. A seed that is ignored would draw one pair every time.
    pairs = [_drawn_query_ids(images, distmat, seed) for seed in range(6)]
    assert all(len(set(pair)) == 2 for pair in pairs)  # without replacement
    assert len(set(pairs)) >= 3, pairs
    assert {pid for pair in pairs for pid in pair} == {"id 1", "id 2", "id 3", "id 4"}


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


def test_cmc_title_names_model_dataset_map_and_rank1():
    cmc = np.array([0.25, 0.5, 0.75, 1.0])
    figure = cmc_figure(
        cmc, model="resnet_18 (model_epoch_012.pth)", dataset="market", mean_ap=0.8187
    )
    title = figure.axes[0].get_title()
    assert "resnet_18 (model_epoch_012.pth) on market" in title
    assert "mAP 81.9%" in title and "rank-1 25.0%" in title


@pytest.mark.parametrize("rank1", [0.0, 0.02, 0.3, 0.6, 0.95, 1.0])
def test_rank1_label_stays_inside_the_axes(rank1):
    cmc = np.minimum(1.0, rank1 + np.linspace(0, 1, 50) ** 0.5)
    figure = cmc_figure(cmc)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    (label,) = [t for t in axes.texts if t.get_text().startswith("rank-1")]
    assert label.get_text() == f"rank-1 {100 * rank1:.1f}%"
    box, frame = label.get_window_extent(renderer), axes.get_window_extent(renderer)
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1
    assert frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_cmc_plot_is_a_png(tmp_path):
    path = plot_cmc(np.linspace(0.6, 1.0, 50), tmp_path / "plots" / "cmc.png", title="CMC")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (600, 400)


def test_importing_evaluation_does_not_import_matplotlib():
    code = "import sys, reidnet.evaluation; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def write_metrics(folder, records) -> None:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record) for record in records]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


EPOCHS = [
    {"epoch": 1, "lr": 1e-4, "loss_id": 4.0, "loss_triplet": 1.0},
    {"epoch": 2, "lr": 9e-4, "loss_id": 9.9, "loss_triplet": 9.9},  # replaced by the rerun below
    {
        "epoch": 2,
        "lr": 2e-4,
        "loss_id": 3.0,
        "loss_triplet": 0.8,
        "validation": {"mAP": 0.40, "rank-1": 0.50},
    },
    {
        "epoch": 3,
        "lr": 3e-4,
        "loss_id": 2.0,
        "loss_triplet": 0.5,
        "validation": {"mAP": 0.60, "rank-1": 0.70},
    },
]


def test_training_curves_draw_one_line_per_metric_with_a_point_per_epoch(tmp_path):
    write_metrics(tmp_path / "train", EPOCHS)
    metrics_file, records = read_training_records(tmp_path)  # results_dir: finds train/
    assert metrics_file == tmp_path / "train" / "metrics.jsonl"
    assert [r["epoch"] for r in records] == [1, 2, 3] and records[1]["lr"] == 2e-4
    loss_axes, lr_axes, val_axes = training_curves_figure(records).axes
    assert [line.get_label() for line in loss_axes.get_lines()] == ["id", "triplet"]
    np.testing.assert_allclose(loss_axes.get_lines()[0].get_ydata(), [4.0, 3.0, 2.0])
    np.testing.assert_allclose(loss_axes.get_lines()[1].get_ydata(), [1.0, 0.8, 0.5])
    (lr_line,) = lr_axes.get_lines()
    np.testing.assert_allclose(lr_line.get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lr_line.get_ydata(), [1e-4, 2e-4, 3e-4])
    map_line, rank1_line = val_axes.get_lines()
    np.testing.assert_allclose(map_line.get_xdata(), [2, 3])
    np.testing.assert_allclose(map_line.get_ydata(), [40.0, 60.0])
    np.testing.assert_allclose(rank1_line.get_ydata(), [50.0, 70.0])
    assert "best mAP 60.0% at epoch 3" in val_axes.get_title()


def test_training_curves_of_a_folder_without_metrics_name_the_folder(tmp_path):
    with pytest.raises(ReidnetError, match=r"no metrics\.jsonl in"):
        plot_training_curves(tmp_path)
    write_metrics(tmp_path, [{"epoch": 1}, {"lr": 1.0}])
    with pytest.raises(ReidnetError, match="line 2 is not an epoch record"):
        plot_training_curves(tmp_path)


def test_plot_command_writes_the_png_and_verbose_after_it_stays_free_of_matplotlib_debug(
    tmp_path,
):
    write_metrics(tmp_path / "run" / "train", EPOCHS)
    result = subprocess.run(
        [sys.executable, "-m", "reidnet", "plot", str(tmp_path / "run"), "-v"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    png = tmp_path / "run" / "train" / "training_curves.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (700, 800)
    assert "read 3 epoch records" in result.stderr  # reidnet's own DEBUG line: -v took effect
    for flood in ("findfont", "CONFIGDIR", "STREAM b'"):  # matplotlib's and PIL's DEBUG lines
        assert flood not in result.stderr
