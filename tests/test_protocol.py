"""The Market-1501 rule of which gallery images a query ignores, and the three places that use it
(metrics, match plots, dataset check) agreeing on one dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imagefiles import make_folder
from reidnet.data.market import scan_folder
from reidnet.datatools.validate import validate_dataset
from reidnet.evaluation.plots import sampled_matches_figure
from reidnet.evaluation.rank import rank_metrics
from reidnet.protocol import image_key, same_camera_ignored

# query pid, query camera, gallery pid, gallery camera -> ignored (written out by hand)
TABLE = [
    (1, 1, 1, 1, True),  # same identity, same camera
    (1, 1, 1, 2, False),  # same identity, another camera: a true match
    (1, 1, 2, 1, False),  # another identity through the same camera: a negative
    (1, 1, 2, 2, False),
]


def test_same_camera_rule_on_ints_arrays_and_tensors():
    q_pid, q_cam, g_pid, g_cam, expected = (list(column) for column in zip(*TABLE, strict=True))
    assert [same_camera_ignored(*row[:4]) for row in TABLE] == expected
    got = same_camera_ignored(np.array(q_pid), np.array(q_cam), np.array(g_pid), np.array(g_cam))
    assert got.tolist() == expected
    got = same_camera_ignored(*(torch.tensor(c) for c in (q_pid, q_cam, g_pid, g_cam)))
    assert got.tolist() == expected
    # one query against a gallery row broadcasts
    assert same_camera_ignored(1, 1, np.array(g_pid), np.array(g_cam)).tolist() == expected


def test_image_key_treats_spellings_of_one_path_alike(tmp_path):
    assert image_key(tmp_path / "q" / ".." / "g" / "a.jpg") == image_key(str(tmp_path / "g/a.jpg"))
    assert image_key("g/a.jpg") != image_key("g/b.jpg")


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    gallery = make_folder(
        tmp_path / "bounding_box_test",
        [
            "0001_c1s1_000001_00.jpg",  # identity 1 only through camera 1
            "0002_c1s1_000002_00.jpg",
            "0002_c2s1_000003_00.jpg",  # identity 2 also through camera 2
            "0003_c3s1_000004_00.jpg",
        ],
    )
    query = make_folder(
        tmp_path / "query",
        ["0001_c1s1_000010_00.jpg", "0002_c1s1_000011_00.jpg", "0003_c1s1_000012_00.jpg"],
    )
    return gallery, query


def test_metrics_plots_and_dataset_check_skip_the_same_queries(dataset):
    gallery_dir, query_dir = dataset
    gallery, queries = scan_folder(gallery_dir).records, scan_folder(query_dir).records
    # Only query 0 (identity 1) is matched by its own camera alone: all three must say so.
    report = validate_dataset(test_dir=gallery_dir, query_dir=query_dir)
    flagged = next(f for f in report.findings if f.code == "query_same_camera_only")
    assert [Path(p).name for p in flagged.paths] == ["0001_c1s1_000010_00.jpg"]

    distances = np.arange(len(queries) * len(gallery), dtype=np.float32).reshape(3, 4)
    ids = {
        "query_pids": [r.pid for r in queries],
        "gallery_pids": [r.pid for r in gallery],
        "query_camids": [r.camid for r in queries],
        "gallery_camids": [r.camid for r in gallery],
    }
    result = rank_metrics(distances, **ids, same_camera_filter=True)
    assert result.num_valid_queries == 2  # queries 1 and 2 count, query 0 is skipped

    figure = sampled_matches_figure(
        [r.path for r in queries], [r.path for r in gallery], distances, num_query=3, **ids
    )
    labels = [text.get_text() for text in figure.texts]
    # Query 0's row leaves out g0 (its identity, its camera; distance 0): ranks 1-3 are g1-g3.
    assert labels[:4] == [
        "query\nid 1\ncam 1",
        "rank 1\ncam 1\nd=1.000",
        "rank 2\ncam 2\nd=2.000",
        "rank 3\ncam 3\nd=3.000",
    ]
    # Query 1 (identity 2, camera 1) keeps g2 (camera 2) but not g1 (camera 1): 3 tiles again,
    # distances 4, 6, 7 (g0, g2, g3).
    row = labels[labels.index("query\nid 2\ncam 1") :][:4]
    assert [label.rsplit("=", 1)[1] for label in row[1:]] == ["4.000", "6.000", "7.000"]
