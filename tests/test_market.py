"""Market-1501 parsing, records, training identities and statistics."""

from pathlib import Path

import pytest

from imagefiles import make_folder
from reidnet.config import TrainFolder
from reidnet.data.market import (
    SYNTHETIC_MARKER,
    build_train_set,
    dataset_stats,
    find_split_folders,
    parse_market_name,
    read_records,
    scan_folder,
)
from reidnet.errors import ReidnetError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0002_c1s1_000451_03.jpg", (2, 1)),
        ("-1_c3s2_000100_00.jpg", (-1, 3)),
        ("0000_c6s4_001902_01.jpg", (0, 6)),
        ("1501_c12s1_000001_00.png", (1501, 12)),
        ("img_0001.jpg", None),
        ("0001.jpg", None),
    ],
)
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


def test_junk_skipped_distractor_kept_and_stray_files_counted(tmp_path):
    folder = make_folder(
        tmp_path / "bounding_box_test",
        [
            "-1_c1s1_000001_00.jpg",
            "0000_c1s1_000002_00.jpg",
            "0007_c12s1_000003_00.PNG",
            "0007_c2s1_000004_00.JPEG",
            "0008_c3s1_000005_00.bmp",
            "holiday.jpg",
        ],
    )
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0")
    scan = scan_folder(folder)
    assert [(r.pid, r.camid) for r in scan.records] == [(0, 1), (7, 12), (7, 2), (8, 3)]
    assert [p.name for p in scan.junk] == ["-1_c1s1_000001_00.jpg"]
    assert [p.name for p in scan.unparseable] == ["holiday.jpg"]
    assert sorted(p.name for p in scan.non_images) == ["Thumbs.db", "notes.txt"]


def test_parent_folder_name_does_not_affect_parsing(tmp_path):
    folder = make_folder(tmp_path / "run_2_c3" / "query", ["holiday.jpg", "0005_c1s1_0_00.jpg"])
    scan = scan_folder(folder)
    assert [(r.pid, r.camid) for r in scan.records] == [(5, 1)]
    assert [p.name for p in scan.unparseable] == ["holiday.jpg"]


def test_records_are_sorted_by_name(tmp_path):
    names = ["0003_c1s1_0_00.jpg", "0001_c2s1_0_00.jpg", "0002_c1s1_0_00.jpg"]
    records = read_records(make_folder(tmp_path / "q", names))
    assert [r.path.name for r in records] == sorted(names)


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReidnetError, match="does not exist"):
        read_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReidnetError, match="no usable image"):
        read_records(tmp_path / "empty")


def test_train_identities_from_two_folders_never_collide(tmp_path):
    a = make_folder(tmp_path / "a", ["0001_c1s1_0_00.jpg", "0001_c2s1_1_00.jpg", "0002_c1_2.jpg"])
    b = make_folder(tmp_path / "b", ["0001_c1s1_0_00.jpg", "0000_c1s1_9_00.jpg"])
    train = build_train_set(
        [TrainFolder(path=str(a)), TrainFolder(path=str(b), source="synthetic")]
    )
    assert train.num_classes == 3  # a:1, a:2, b:1 -- the distractor of b is not an identity
    assert train.labels == [0, 0, 1, 2]
    assert train.skipped_distractors == 1
    assert [r.source for r in train.records] == ["real", "real", "real", "synthetic"]


def test_folders_marked_as_sharing_identities_share_labels(tmp_path):
    a = make_folder(tmp_path / "a", ["0001_c1s1_0_00.jpg", "0002_c1s1_1_00.jpg"])
    b = make_folder(tmp_path / "b", ["0001_c3s1_0_00.jpg"])
    folders = [
        TrainFolder(path=str(a), identity_group="market"),
        TrainFolder(path=str(b), identity_group="market"),
    ]
    train = build_train_set(folders)
    assert train.num_classes == 2
    assert train.labels == [0, 1, 0]


def test_existing_identities_keep_their_labels_and_new_ones_are_appended(tmp_path):
    a = make_folder(tmp_path / "a", ["0001_c1s1_0_00.jpg", "0005_c1s1_1_00.jpg"])
    first = build_train_set([TrainFolder(path=str(a), identity_group="g")])
    make_folder(tmp_path / "a", ["0003_c2s1_2_00.jpg"])
    grown = build_train_set([TrainFolder(path=str(a), identity_group="g")], first.identity_keys)
    assert grown.identity_keys == ["g:1", "g:5", "g:3"]
    assert grown.labels == [0, 2, 1]  # files sorted: 0001, 0003, 0005


def test_find_split_folders_knows_market_and_tao_names(tmp_path):
    for name in ("sample_train", "sample_test", "query"):
        (tmp_path / name).mkdir()
    found = find_split_folders(tmp_path)
    assert {k: v.name for k, v in found.items()} == {
        "train": "sample_train",
        "test": "sample_test",
        "query": "query",
    }


def test_stats_count_identities_images_cameras_by_source(tmp_path):
    real = make_folder(tmp_path / "real", ["0001_c1_a.jpg", "0001_c2_b.jpg", "0002_c1_c.jpg"])
    synth = make_folder(tmp_path / "synth", ["0001_c1_a.jpg", "0009_c4_b.jpg"])
    gallery = make_folder(tmp_path / "g", ["0000_c1_a.jpg", "0001_c2_b.jpg", "0003_c3_c.jpg"])
    query = make_folder(tmp_path / "q", ["0001_c1_a.jpg"])
    stats = dataset_stats(
        [TrainFolder(path=str(real)), TrainFolder(path=str(synth), source="synthetic")],
        gallery,
        query,
    )
    train = stats["train"]
    assert train["total"].as_dict() == {"identities": 4, "images": 5, "cameras": 4}
    assert train["real"].as_dict() == {"identities": 2, "images": 3, "cameras": 2}
    assert train["synthetic"].as_dict() == {"identities": 2, "images": 2, "cameras": 2}
    assert stats["test"]["total"].as_dict() == {"identities": 2, "images": 3, "cameras": 3}
    assert stats["query"]["total"].as_dict() == {"identities": 1, "images": 1, "cameras": 1}


def test_a_marked_folder_counts_as_synthetic_whatever_its_tag(tmp_path):
    marked = make_folder(tmp_path / "marked", ["0001_c1_a.jpg", "0002_c2_b.jpg"])
    (marked / SYNTHETIC_MARKER).write_text("{}")
    plain = make_folder(tmp_path / "plain", ["0001_c1_a.jpg"])
    stats = dataset_stats([TrainFolder(path=str(marked), source="real"), plain], marked, marked)
    train = stats["train"]
    assert train["synthetic"].as_dict() == {"identities": 2, "images": 2, "cameras": 2}
    assert train["real"].as_dict() == {"identities": 1, "images": 1, "cameras": 1}
    assert stats["query"]["real"].images == 0 and stats["query"]["synthetic"].images == 2
    assert stats["test"]["synthetic"].images == 2
    assert scan_folder(marked).non_images == []  # the marker is not reported as a stray file


def test_a_folder_under_a_marked_dataset_root_counts_as_synthetic(tmp_path):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / SYNTHETIC_MARKER).write_text("{}")
    train = make_folder(tmp_path / "synth" / "bounding_box_train", ["0001_c1_a.jpg"])
    real = make_folder(tmp_path / "real" / "bounding_box_train", ["0001_c1_a.jpg", "0002_c1_b.jpg"])
    stats = dataset_stats([train, real])["train"]
    assert stats["synthetic"].images == 1 and stats["real"].images == 2


def test_dataset_stats_command_counts_synth_output_as_synthetic(tmp_path):
    import json

    from typer.testing import CliRunner

    from reidnet.cli import app

    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "dataset",
            "synth",
            str(tmp_path),
            "--identities",
            "4",
            "--test-identities",
            "2",
            "--cameras",
            "2",
            "--images-per-identity",
            "3",
            "--size",
            "64x32",
            "--workers",
            "1",
        ],
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["dataset", "stats", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    # 2 train identities x 3 images, all synthetic, none real
    assert stats["train"]["synthetic"] == {"identities": 2, "images": 6, "cameras": 2}
    assert stats["train"]["real"]["images"] == 0
    for subset in ("query", "test"):
        assert stats[subset]["real"]["images"] == 0
        assert stats[subset]["synthetic"]["images"] == stats[subset]["total"]["images"] > 0


def test_stats_on_shared_cuhk03(cuhk03: Path):
    stats = dataset_stats(
        [TrainFolder(path=str(cuhk03 / "bounding_box_train"))],
        cuhk03 / "bounding_box_test",
        cuhk03 / "query",
    )
    assert stats["train"]["total"].as_dict() == {"identities": 743, "images": 7239, "cameras": 2}
    assert stats["query"]["total"].as_dict() == {"identities": 100, "images": 451, "cameras": 1}
    assert stats["test"]["total"].as_dict() == {"identities": 100, "images": 487, "cameras": 1}
