"""The synthetic generator writes a valid, deterministic, learnable Market-1501-layout dataset."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidnet.data.market import SYNTHETIC_MARKER
from reidnet.datatools.synthetic import SubsetCounts, generate_synthetic_dataset
from reidnet.errors import ReidnetError

MARKET_NAME = re.compile(r"^(\d{4})_c(\d+)s1_(\d{6})_00\.jpg$")
SUBSETS = ("bounding_box_train", "bounding_box_test", "query")
SMALL = {
    "identities": 6,
    "test_identities": 3,
    "cameras": 3,
    "images_per_identity": 4,
    "distractors": 2,
    "size": (64, 32),
}


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def records(root: Path, subset: str) -> list[tuple[int, int, str]]:
    """(pid, camera, file name) of every file in one folder; fails on a non-Market name."""
    found = []
    for path in sorted((root / subset).iterdir()):
        match = MARKET_NAME.match(path.name)
        assert match, f"{subset}/{path.name} is not a Market-1501 name"
        found.append((int(match.group(1)), int(match.group(2)), path.name))
    return found


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, object]:
    out_dir = tmp_path_factory.mktemp("small")
    return out_dir, generate_synthetic_dataset(out_dir, **SMALL)


def test_same_seed_gives_identical_files(small, tmp_path):
    out_dir, _ = small
    generate_synthetic_dataset(tmp_path, **SMALL)
    assert file_hashes(tmp_path) == file_hashes(out_dir)


def test_worker_processes_give_identical_files(small, tmp_path):
    out_dir, _ = small
    generate_synthetic_dataset(tmp_path, **SMALL, workers=2)
    assert file_hashes(tmp_path) == file_hashes(out_dir)


def test_different_seed_gives_different_files(small, tmp_path):
    out_dir, _ = small
    generate_synthetic_dataset(tmp_path, **SMALL, seed=1)
    first, second = file_hashes(out_dir), file_hashes(tmp_path)
    assert set(first.values()).isdisjoint(second.values())


def test_layout_is_three_market_folders_and_nothing_else(small):
    out_dir, _ = small
    assert sorted(path.name for path in out_dir.iterdir()) == sorted([*SUBSETS, SYNTHETIC_MARKER])
    for subset in SUBSETS:
        assert records(out_dir, subset), f"{subset} is empty"


def test_the_dataset_root_carries_the_synthetic_marker_with_its_arguments(small):
    out_dir, _ = small
    record = json.loads((out_dir / SYNTHETIC_MARKER).read_text())
    assert record["generator"] == "reidnet dataset synth"
    assert record["arguments"]["seed"] == 0
    assert record["arguments"]["identities"] == SMALL["identities"]
    assert "workers" not in record["arguments"]  # output must not depend on it


def test_train_and_test_identities_are_disjoint(small):
    out_dir, _ = small
    train = {pid for pid, _, _ in records(out_dir, "bounding_box_train")}
    test = {pid for subset in SUBSETS[1:] for pid, _, _ in records(out_dir, subset)} - {0}
    assert train == {1, 2, 3}
    assert test == {4, 5, 6}


def test_every_query_has_a_gallery_match_in_another_camera(small, tmp_path):
    out_dir, _ = small
    assert_queries_match_across_cameras(out_dir)
    # The tight case: two images per person, so a single misplaced query leaves no match.
    generate_synthetic_dataset(
        tmp_path, identities=40, test_identities=30, images_per_identity=2, size=(32, 16)
    )
    assert_queries_match_across_cameras(tmp_path)


def assert_queries_match_across_cameras(root: Path) -> None:
    gallery = {(pid, camera) for pid, camera, _ in records(root, "bounding_box_test")}
    queries = records(root, "query")
    assert queries
    for pid, camera, name in queries:
        assert any(p == pid and c != camera for p, c in gallery), name


def test_each_test_identity_is_seen_by_two_cameras_and_queried_once_per_camera(small):
    out_dir, _ = small
    test_records = records(out_dir, "bounding_box_test") + records(out_dir, "query")
    for pid in (4, 5, 6):
        assert len({camera for p, camera, _ in test_records if p == pid}) >= 2
    query_keys = [(pid, camera) for pid, camera, _ in records(out_dir, "query")]
    assert len(query_keys) == len(set(query_keys))


def test_counts_match_arguments_and_summary(tmp_path):
    # 2 cameras: every identity is seen by both, so each test identity gives exactly one query.
    summary = generate_synthetic_dataset(
        tmp_path,
        identities=5,
        test_identities=2,
        cameras=2,
        images_per_identity=3,
        distractors=4,
        size=(32, 16),
    )
    assert summary.out_dir == tmp_path
    assert summary.train == SubsetCounts(images=9, identities=3, cameras=2)
    assert (summary.query.images, summary.query.identities) == (2, 2)
    assert (summary.gallery.images, summary.gallery.identities) == (2 * 3 - 2 + 4, 2)
    assert summary.distractors == 4
    assert summary.images == 5 * 3 + 4
    for subset, counts in zip(
        SUBSETS, (summary.train, summary.gallery, summary.query), strict=True
    ):
        found = records(tmp_path, subset)
        assert len(found) == counts.images
        assert len({pid for pid, _, _ in found if pid > 0}) == counts.identities
        assert len({camera for _, camera, _ in found}) == counts.cameras
    assert sum(pid == 0 for pid, _, _ in records(tmp_path, "bounding_box_test")) == 4


def test_default_split_and_first_pid(tmp_path):
    summary = generate_synthetic_dataset(
        tmp_path, identities=5, images_per_identity=2, first_pid=100, size=(32, 16)
    )
    assert summary.train.identities == 3  # test_identities defaults to 5 // 2
    assert summary.distractors == 0  # one per five test identities
    pids = {pid for subset in SUBSETS for pid, _, _ in records(tmp_path, subset)}
    assert pids == {100, 101, 102, 103, 104}


def test_images_decode_at_requested_size(tmp_path):
    generate_synthetic_dataset(tmp_path, identities=2, images_per_identity=2, size=(50, 30))
    paths = sorted(tmp_path.rglob("*.jpg"))
    assert len(paths) == 4
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (30, 50)


def test_progress_reports_every_image(tmp_path):
    calls = []
    summary = generate_synthetic_dataset(
        tmp_path,
        identities=2,
        images_per_identity=2,
        size=(32, 16),
        progress=lambda *a: calls.append(a),
    )
    assert calls[0] == (0, summary.images)
    assert calls[-1] == (summary.images, summary.images)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_failure_while_rendering_leaves_no_dataset_behind(tmp_path):
    def fail(done: int, total: int) -> None:
        if done > 0:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic_dataset(tmp_path, **SMALL, progress=fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("identities", 1),
        ("test_identities", 0),
        ("test_identities", 6),
        ("cameras", 1),
        ("images_per_identity", 1),
        ("size", (31, 16)),
        ("size", (32, 15)),
        ("seed", -1),
        ("first_pid", 0),
        ("first_pid", 9995),
        ("distractors", -1),
        ("workers", 0),
    ],
)
def test_bad_argument_is_refused_by_name(tmp_path, argument, value):
    arguments = {**SMALL, argument: value}
    with pytest.raises(ReidnetError, match=f"{argument}="):
        generate_synthetic_dataset(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argument", "value", "allowed"),
    [
        ("identities", 1, "must be 2 or more"),
        ("test_identities", 6, "must be between 1 and 5"),  # SMALL has 6 identities
        ("cameras", 100, "must be between 2 and 99"),
        ("size", (31, 16), "must be (height, width) of at least (32, 16)"),
        ("first_pid", 9995, "must be between 1 and 9994"),  # 6 pids from 9995 pass 9999
        ("workers", 1.5, "must be a whole number"),
    ],
)
def test_a_refusal_states_the_allowed_range(tmp_path, argument, value, allowed):
    with pytest.raises(ReidnetError) as refused:
        generate_synthetic_dataset(tmp_path / "out", **{**SMALL, argument: value})
    assert str(refused.value).startswith(f"{argument}={value!r}: {allowed}")


def test_numpy_integers_are_whole_numbers(tmp_path):
    arguments = {k: np.int64(v) if isinstance(v, int) else v for k, v in SMALL.items()}
    summary = generate_synthetic_dataset(tmp_path, **arguments)
    assert summary.train.identities == 3


def test_non_empty_out_dir_is_refused(tmp_path):
    (tmp_path / "query").mkdir()
    (tmp_path / "query" / "0001_c1s1_000001_00.jpg").write_bytes(b"not ours")
    with pytest.raises(ReidnetError, match="choose an empty folder or delete it"):
        generate_synthetic_dataset(tmp_path, **SMALL)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["query"]


def test_empty_market_folders_are_reused(tmp_path):
    for subset in SUBSETS:
        (tmp_path / subset).mkdir()
    summary = generate_synthetic_dataset(tmp_path, **SMALL)
    assert sum(len(records(tmp_path, subset)) for subset in SUBSETS) == summary.images


def test_same_identity_looks_closer_than_different_identities(tmp_path):
    generate_synthetic_dataset(
        tmp_path, identities=10, images_per_identity=6, size=(64, 32), distractors=0
    )
    paths = sorted(tmp_path.rglob("*.jpg"))
    pids = np.array([int(path.name[:4]) for path in paths])
    cameras = np.array([int(MARKET_NAME.match(path.name).group(2)) for path in paths])
    features = np.stack([body_colours(path) for path in paths])
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    same_pid = pids[:, None] == pids[None]
    off_diagonal = ~np.eye(len(paths), dtype=bool)
    within = distances[same_pid & off_diagonal].mean()
    between = distances[~same_pid].mean()
    assert within < 0.75 * between, (within, between)
    # Nearest neighbour from another camera is right far more often than chance (1 in 10)...
    distances[same_pid & (cameras[:, None] == cameras[None])] = np.inf
    rank1 = (pids[distances.argmin(axis=1)] == pids).mean()
    assert rank1 > 0.3
    # ...but a colour average does not solve the task.
    assert rank1 < 0.95


def body_colours(path: Path) -> np.ndarray:
    """Mean colours of a 6x2 grid over the middle of the crop, where the person stands."""
    with Image.open(path) as image:
        pixels = np.asarray(image, dtype=np.float32)[8:56, 8:24]
    return pixels.reshape(6, 8, 2, 8, 3).mean(axis=(1, 3)).ravel()
