"""MOT ground truth to Market-1501 crops: sequences and videos built here, every count by hand.

Frames are drawn with one flat colour per identity at known boxes, so a crop's colour tells
whose box it was cut from and its size tells how it was clipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reidnet.actions import evaluate, train
from reidnet.cli import app
from reidnet.config import deep_merge, load_spec
from reidnet.data.market import parse_market_name
from reidnet.datatools.mot import (
    ConvertOptions,
    FilterOptions,
    GtBox,
    convert_mot,
    expand_sources,
    filter_boxes,
    market_name,
    ordered_map,
    parse_gt_line,
    read_camera_mapping,
    read_ground_truth,
    split_identities,
    spread,
    thin_track,
)
from reidnet.errors import ReidnetError
from tiny_training import TINY

runner = CliRunner()
BACKGROUND = (128, 128, 128)
COLOURS = {
    1: (230, 30, 30),
    2: (30, 200, 30),
    3: (30, 30, 230),
    4: (230, 230, 30),
}


def colour_of(track_id: int) -> tuple[int, int, int]:
    if track_id in COLOURS:
        return COLOURS[track_id]
    rng = np.random.default_rng(track_id)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def draw_frame(size: tuple[int, int], boxes) -> np.ndarray:
    """An RGB frame of `size` (width, height): grey, each (id, left, top, width, height) filled."""
    width, height = size
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = BACKGROUND
    for track_id, left, top, w, h in boxes:
        x0, y0 = max(left, 0), max(top, 0)
        pixels[y0 : max(top + h, 0), x0 : max(left + w, 0)] = colour_of(track_id)
    return pixels


def mot_line(frame, track_id, left, top, width, height, conf=1, cls=1, vis=1.0) -> str:
    return f"{frame},{track_id},{left},{top},{width},{height},{conf},{cls},{vis}"


def write_sequence(
    folder: Path,
    size: tuple[int, int],
    frames: range,
    drawn: dict[int, list],
    gt_lines: list[str],
    seqinfo: bool = True,
    missing: frozenset = frozenset(),
    corrupt: frozenset = frozenset(),
) -> Path:
    """A MOTChallenge sequence: img1/NNNNNN.jpg drawn from `drawn[frame]`, gt/gt.txt as given."""
    (folder / "img1").mkdir(parents=True)
    (folder / "gt").mkdir()
    for frame in frames:
        path = folder / "img1" / f"{frame:06d}.jpg"
        if frame in missing:
            continue
        if frame in corrupt:
            path.write_bytes(b"\xff\xd8\xff this is not a JPEG")
            continue
        Image.fromarray(draw_frame(size, drawn.get(frame, []))).save(path, quality=95)
    (folder / "gt" / "gt.txt").write_text("\n".join(gt_lines) + "\n")
    if seqinfo:
        (folder / "seqinfo.ini").write_text(
            f"[Sequence]\nname={folder.name}\nimDir=img1\nframeRate=30\n"
            f"seqLength={len(frames)}\nimWidth={size[0]}\nimHeight={size[1]}\nimExt=.jpg\n"
        )
    return folder


def walking_sequence(folder: Path, ids=(1, 2, 3), frames=range(1, 13), **kwargs) -> Path:
    """Identities standing side by side at x = 10 + 45*(i-1), 20x60 boxes, on every frame."""
    boxes = [(i, 10 + 45 * (i - 1), 10, 20, 60) for i in ids]
    drawn = {f: boxes for f in frames}
    lines = [mot_line(f, *box) for f in frames for box in boxes]
    return write_sequence(folder, (160, 120), frames, drawn, lines, **kwargs)


def mean_colour(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float64).reshape(-1, 3).mean(axis=0)


def assert_crops_show_their_identity(folder: Path, pid_to_track: dict, tolerance=12.0) -> None:
    files = sorted(folder.glob("*.jpg"))
    assert files
    for path in files:
        pid, _ = parse_market_name(path.name)
        expected = np.array(colour_of(pid_to_track[pid]), np.float64)
        assert np.abs(mean_colour(path) - expected).max() < tolerance, path.name


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_gt_lines_of_every_mot_flavour():
    mot17 = parse_gt_line("5,3,10.5,20,30,60,1,7,0.75", "gt.txt", 1)
    assert mot17 == GtBox(5, 3, 10.5, 20.0, 30.0, 60.0, 1.0, 7, 0.75, 1)
    mot15 = parse_gt_line("5,3,10,20,30,60,1,-1,-1,-1", "gt.txt", 2)  # world x, y, z
    assert (mot15.conf, mot15.cls, mot15.visibility) == (1.0, None, None)
    bare = parse_gt_line("5 3 10 20 30 60", "gt.txt", 3)  # whitespace, six columns
    assert (bare.frame, bare.track_id, bare.height, bare.conf, bare.cls) == (5, 3, 60.0, 1.0, None)
    assert parse_gt_line("   ", "gt.txt", 4) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3,4", "seq/gt.txt:7: expected 6 to 10 values"),
        ("1,2,x,4,5,6,1,1,1", "seq/gt.txt:7: not a number"),
        ("1.5,2,3,4,5,6", "seq/gt.txt:7: frame and id must be whole numbers"),
        ("1,2,nan,4,5,6", "seq/gt.txt:7: not a finite number"),
    ],
)
def test_garbled_gt_line_names_file_and_line(text, message):
    with pytest.raises(ReidnetError, match=message):
        parse_gt_line(text, "seq/gt.txt", 7)


def test_ground_truth_with_only_garbage_is_an_error_naming_the_first_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("frame id left top\nhello world\n")
    with pytest.raises(ReidnetError, match=r"no usable line in .*gt.txt:1: expected 6 to 10"):
        read_ground_truth(path)
    path.write_text("1,1,0,0,10,60,1,1,1\nhello\n1,2,0,0,10,60,1,1,1\n")
    truth = read_ground_truth(path)
    assert [b.track_id for b in truth.boxes] == [1, 2]
    assert len(truth.malformed) == 1 and "gt.txt:2:" in truth.malformed[0]


def test_spread_takes_the_middle_of_equal_parts():
    # n=10, K=3: parts [0,3.33), [3.33,6.67), [6.67,10) -> middles floor(1.67), 5, floor(8.33)
    assert spread(list(range(10)), 3) == [1, 5, 8]
    # n=12, K=4: (2i+1)*12//8 = 1, 4, 7, 10
    assert spread(list(range(12)), 4) == [1, 4, 7, 10]
    assert spread(list(range(5)), 1) == [2]
    assert spread([7, 8], 5) == [7, 8]
    assert spread([7, 8], None) == [7, 8]


def test_thin_track_keeps_one_box_every_n_frames():
    def crop(frame):
        return filter_boxes(
            [GtBox(frame, 1, 0, 0, 10, 60)], (100, 100), FilterOptions(min_height=1)
        )[0][0]

    track = [crop(f) for f in (1, 2, 3, 5, 6, 9, 10, 14)]
    # every 4: 1 kept; 5 (5-1 >= 4) kept; 9 kept; 10 no (1 after 9); 14 kept (5 after 9)
    assert [c.frame for c in thin_track(track, 4)] == [1, 5, 9, 14]
    assert [c.frame for c in thin_track(track, None)] == [1, 2, 3, 5, 6, 9, 10, 14]


def test_identity_split_is_seeded_stable_and_sized_by_fraction():
    keys = [(0, i) for i in range(1, 11)]
    test = split_identities(keys, 0.3, seed=4)
    assert len(test) == 3 and test <= set(keys)
    assert split_identities(list(reversed(keys)), 0.3, seed=4) == test  # input order irrelevant
    assert len(split_identities(keys, 0.25, seed=0)) == 3  # 2.5 rounds half up
    assert len(split_identities(keys[:2], 0.01, seed=0)) == 1  # both sides keep one
    assert len(split_identities(keys[:2], 0.99, seed=0)) == 1
    assert split_identities(keys, 0.0, seed=0) == set()
    with pytest.raises(ReidnetError, match="test-fraction"):
        split_identities(keys, 1.5, seed=0)


def test_market_names_parse_back():
    name = market_name(7, 12, 3, 451)
    assert name == "0007_c12s3_000451_00.jpg"
    assert parse_market_name(name) == (7, 12)
    assert parse_market_name(market_name(12345, 1, 1, 1234567)) == (12345, 1)


def test_camera_mapping_reads_yaml_and_csv(tmp_path):
    (tmp_path / "map.yaml").write_text("S01_c001: 1\nS01_c002: 2\n")
    assert read_camera_mapping(tmp_path / "map.yaml") == {"S01_c001": 1, "S01_c002": 2}
    (tmp_path / "map.csv").write_text("# name,camera\nMOT17-02,3\nMOT17-04 , 3\n")
    assert read_camera_mapping(tmp_path / "map.csv") == {"MOT17-02": 3, "MOT17-04": 3}
    (tmp_path / "bad.yaml").write_text("MOT17-02: left\n")
    with pytest.raises(ReidnetError, match="camera of 'MOT17-02' must be a whole number"):
        read_camera_mapping(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------------------------------
# A clean single-camera sequence


def test_clean_sequence_time_split_hand_counted(tmp_path):
    seq = walking_sequence(tmp_path / "MOT17-02")
    options = ConvertOptions(
        filters=FilterOptions(min_height=40), max_per_track=4, test_fraction=1 / 3, seed=0
    )
    report = convert_mot(expand_sources([seq]), tmp_path / "out", options)
    test_key = next(iter(split_identities([(0, 1), (0, 2), (0, 3)], 1 / 3, seed=0)))
    out = tmp_path / "out"
    # 3 identities, round(3/3) = 1 held out; one camera -> time split, with a note saying why.
    assert report.identities == {"train": 2, "test": 1}
    assert report.query_split == "time"
    assert report.evaluate_overrides == ["evaluate.same_camera_filter=false"]
    assert any("single-camera" in note for note in report.notes)
    # Train: 12 boxes per track, 4 spread: indices 1, 4, 7, 10 -> frames 2, 5, 8, 11.
    train = sorted(p.name for p in (out / "bounding_box_train").iterdir())
    train_pids = sorted({1, 2, 3} - {test_key[1]})
    assert train == [market_name(pid, 1, 1, frame) for pid in train_pids for frame in (2, 5, 8, 11)]
    # Test: first half frames 1-6 -> query its middle (index 3: frame 4); second half 7-12 ->
    # gallery 3 spread: indices 1, 3, 5 -> frames 8, 10, 12.
    pid = test_key[1]
    assert [p.name for p in (out / "query").iterdir()] == [market_name(pid, 1, 1, 4)]
    gallery = sorted(p.name for p in (out / "bounding_box_test").iterdir())
    assert gallery == [market_name(pid, 1, 1, f) for f in (8, 10, 12)]
    assert report.images == {"train": 8, "query": 1, "gallery": 3}
    # Only frames holding a selected crop were read: 2,5,8,11 (train) + 4 + 8,10,12.
    assert report.frames_read == 7
    assert_crops_show_their_identity(out / "bounding_box_train", {1: 1, 2: 2, 3: 3})
    for path in (out / "bounding_box_train").iterdir():
        assert Image.open(path).size == (20, 60)
    manifest = json.loads((out / "from_mot.json").read_text())
    assert manifest["evaluate_overrides"] == ["evaluate.same_camera_filter=false"]


def test_same_input_and_seed_give_the_same_files(tmp_path):
    seq = walking_sequence(tmp_path / "seq", ids=(1, 2, 3, 4))
    names = []
    for run, seed in enumerate((5, 5)):
        out = tmp_path / f"out{run}"
        convert_mot(
            expand_sources([seq]), out, ConvertOptions(FilterOptions(min_height=40), seed=seed)
        )
        names.append(sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")))
    assert names[0] == names[1]


# ---------------------------------------------------------------------------------------------
# Messy footage: every kind of bad entry, counted


def messy_sequence(folder: Path) -> Path:
    """160x120, frames 1-10, frame 4's image missing, frame 7's unreadable.

    id 1: a clean 20x60 box on all 10 frames, plus a duplicate line for frame 2.
    id 2: frame 1 cut by the right border, 2 wholly outside, 3 cut left and bottom,
          5 zero width, 6 only 30 px tall, 8 visibility 0.1, 9 conf 0 (ignore), 10 class 8.
    id 3: one box, on the missing frame 4.
    Two garbled lines.
    """
    id1 = (1, 10, 10, 20, 60)
    id2 = {
        1: (150, 10, 20, 60, 1, 1, 1.0),
        2: (200, 10, 20, 60, 1, 1, 1.0),
        3: (-10, 70, 20, 60, 1, 1, 1.0),
        5: (50, 10, 0, 60, 1, 1, 1.0),
        6: (50, 10, 20, 30, 1, 1, 1.0),
        8: (50, 10, 20, 60, 1, 1, 0.1),
        9: (50, 10, 20, 60, 0, 1, 1.0),
        10: (50, 10, 20, 60, 1, 8, 1.0),
    }
    lines = [mot_line(f, *id1) for f in range(1, 11)]
    lines.insert(3, mot_line(2, 1, 90, 10, 20, 60))  # duplicate (frame 2, id 1): first wins
    lines += [mot_line(f, 2, *box) for f, box in id2.items()]
    lines += [mot_line(4, 3, 100, 10, 20, 60), "1,2,3,4", "7,1,ten,10,20,60,1,1,1"]
    drawn = {f: [id1] + ([(2, *id2[f][:4])] if f in id2 else []) for f in range(1, 11)}
    return write_sequence(
        folder,
        (160, 120),
        range(1, 11),
        drawn,
        lines,
        missing=frozenset({4}),
        corrupt=frozenset({7}),
    )


def test_messy_sequence_counts_every_bad_entry_and_never_crashes(tmp_path):
    seq = messy_sequence(tmp_path / "messy")
    options = ConvertOptions(FilterOptions(min_height=40), max_per_track=None, test_fraction=0)
    report = convert_mot(expand_sources([seq]), tmp_path / "out", options)
    assert report.lines == 10 + 1 + 8 + 1 + 2
    assert report.malformed_lines == 2
    assert any("gt.txt:22:" in m and "not a number" in m for m in report.malformed_examples)
    assert report.dropped == {
        "duplicate": 1,
        "ignored": 1,
        "other_class": 1,
        "zero_size": 1,
        "outside_frame": 1,
        "cut_by_border": 0,
        "low_visibility": 1,
        "too_small": 1,
        "missing_frame": 2,  # id 1 and id 3 on frame 4
    }
    assert report.clipped == 2  # id 2 on frames 1 and 3
    # id 3's only box was on the missing frame: 2 identities remain, all for training.
    assert report.identities == {"train": 2, "test": 0}
    # Planned: id 1 on 1,2,3,5,6,7,8,9,10 and id 2 on 1,3; frame 7 unreadable loses one crop.
    assert report.frames_read == 9
    assert report.unreadable_frames == 1
    assert report.lost_crops == 1
    assert report.images == {"train": 10, "query": 0, "gallery": 0}
    train = tmp_path / "out" / "bounding_box_train"
    assert Image.open(train / market_name(2, 1, 1, 1)).size == (10, 60)  # x 150..160
    assert Image.open(train / market_name(2, 1, 1, 3)).size == (10, 50)  # x 0..10, y 70..120
    assert not (train / market_name(1, 1, 1, 7)).exists()
    assert Image.open(train / market_name(1, 1, 1, 2)).size == (20, 60)  # the first line won
    assert_crops_show_their_identity(train, {1: 1, 2: 2})


def test_border_drop_policy_drops_the_cut_boxes(tmp_path):
    seq = messy_sequence(tmp_path / "messy")
    boxes = read_ground_truth(seq / "gt" / "gt.txt").boxes
    kept, counts = filter_boxes(boxes, (160, 120), FilterOptions(min_height=40, border="drop"))
    assert counts["cut_by_border"] == 2 and counts["clipped"] == 0
    assert {c.track_id for c in kept} == {1, 3}  # no frame check here: id 3's box is kept
    _, all_classes = filter_boxes(boxes, (160, 120), FilterOptions(classes=None, min_height=40))
    assert all_classes["other_class"] == 0


def test_mot15_flavour_without_seqinfo_reads_the_frame_size_from_the_images(tmp_path):
    frames = range(1, 6)
    boxes = [(1, 5, 5, 20, 60), (2, 90, 10, 20, 60)]  # id 2 runs past the 100 px wide frame
    lines = [
        f"{f},{i},{left},{top},{w},{h},1,-1,-1,-1" for f in frames for i, left, top, w, h in boxes
    ]
    seq = write_sequence(
        tmp_path / "TUD-Stadtmitte",
        (100, 80),
        frames,
        dict.fromkeys(frames, boxes),
        lines,
        seqinfo=False,
    )
    report = convert_mot(
        expand_sources([seq]),
        tmp_path / "out",
        ConvertOptions(FilterOptions(min_height=40), test_fraction=0),
    )
    assert report.clipped == 5  # id 2 on every frame, clipped to x 90..100
    assert report.images["train"] == 10
    train = tmp_path / "out" / "bounding_box_train"
    assert Image.open(train / market_name(2, 1, 1, 3)).size == (10, 60)
    assert report.sources[0]["frame_size"] == [100, 80]


# ---------------------------------------------------------------------------------------------
# Several sequences: cameras, local and global ids, duplicated MOT17 copies


def test_local_ids_of_two_sequences_never_collide_and_cameras_follow_order(tmp_path):
    a = walking_sequence(tmp_path / "A", ids=(1, 2))
    b = walking_sequence(tmp_path / "B", ids=(1, 2), frames=range(1, 9))
    (b / "gt" / "gt.txt").write_text(  # different labels than A (same ids, shorter)
        (b / "gt" / "gt.txt").read_text()
    )
    options = ConvertOptions(FilterOptions(min_height=40), max_per_track=2, test_fraction=0)
    report = convert_mot(expand_sources([a, b]), tmp_path / "out", options)
    # Local ids: A:1, A:2, B:1, B:2 are four people, pids 1-4 in input order.
    assert report.identities == {"train": 4, "test": 0}
    names = sorted(p.name for p in (tmp_path / "out" / "bounding_box_train").iterdir())
    # A: 12 frames, 2 spread -> indices 3, 9 -> frames 4, 10; B: 8 frames -> 2, 6 -> frames 3, 7.
    assert names == [
        market_name(1, 1, 1, 4), market_name(1, 1, 1, 10),
        market_name(2, 1, 1, 4), market_name(2, 1, 1, 10),
        market_name(3, 2, 1, 3), market_name(3, 2, 1, 7),
        market_name(4, 2, 1, 3), market_name(4, 2, 1, 7),
    ]  # fmt: skip


def test_camera_mapping_puts_two_sequences_on_one_camera(tmp_path):
    a = walking_sequence(tmp_path / "A", ids=(1,))
    b = walking_sequence(tmp_path / "B", ids=(1,), frames=range(1, 9))
    options = ConvertOptions(FilterOptions(min_height=40), max_per_track=1, test_fraction=0)
    convert_mot(expand_sources([a, b]), tmp_path / "out", options, camera_mapping={"A": 3, "B": 3})
    names = sorted(p.name for p in (tmp_path / "out" / "bounding_box_train").iterdir())
    # 1 image per track: A's 12 frames -> index 6 (frame 7); B's 8 -> index 4 (frame 5).
    assert names == [market_name(1, 3, 1, 7), market_name(2, 3, 2, 5)]
    with pytest.raises(ReidnetError, match="names no camera for source"):
        convert_mot(expand_sources([a, b]), tmp_path / "out2", options, camera_mapping={"A": 1})


def test_mot17_detector_copies_are_converted_once(tmp_path):
    dpm = walking_sequence(tmp_path / "train" / "MOT17-02-DPM", ids=(1, 2))
    frcnn = shutil.copytree(dpm, tmp_path / "train" / "MOT17-02-FRCNN")
    info = frcnn / "seqinfo.ini"
    info.write_text(info.read_text().replace("name=MOT17-02-DPM", "name=MOT17-02-FRCNN"))
    sources = expand_sources([tmp_path / "train"])  # a folder of sequences
    assert [s.name for s in sources] == ["MOT17-02-DPM", "MOT17-02-FRCNN"]
    options = ConvertOptions(FilterOptions(min_height=40), max_per_track=3, test_fraction=0)
    report = convert_mot(sources, tmp_path / "out", options)
    assert report.skipped_sources == [str(tmp_path / "train" / "MOT17-02-FRCNN")]
    assert report.identities == {"train": 2, "test": 0}
    assert report.images["train"] == 6


def test_bad_inputs_are_clear_errors(tmp_path):
    seq = walking_sequence(tmp_path / "seq", ids=(1,))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(ReidnetError, match="exists and is not empty"):
        convert_mot(expand_sources([seq]), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    with pytest.raises(ReidnetError, match="does not exist"):
        expand_sources([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReidnetError, match="neither a MOTChallenge sequence"):
        expand_sources([tmp_path / "empty"])
    (seq / "gt" / "gt.txt").unlink()
    with pytest.raises(ReidnetError, match=r"has no ground truth .*gt.txt"):
        expand_sources([seq])


# ---------------------------------------------------------------------------------------------
# Videos (AI City MTMC style: one video and one label file per camera, global ids)


def write_video(path: Path, size, frames: int, boxes_per_frame) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}  # near-lossless: colours survive for the checks
        for index in range(frames):
            pixels = draw_frame(size, boxes_per_frame(index + 1))
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


VIDEO_BOXES = [(i, 8 + 32 * (i - 1), 16, 16, 48) for i in (1, 2, 3, 4)]


def video_cameras(tmp_path: Path) -> list[Path]:
    """Two 128x96 cameras, 12 frames each, ids 1-4 on every frame of both (global ids); cam2's
    labels also name id 9 on frame 15, past the video's end."""
    videos = []
    for camera in ("cam1", "cam2"):
        video = tmp_path / f"{camera}.mp4"
        write_video(video, (128, 96), 12, lambda _frame: VIDEO_BOXES)
        lines = [mot_line(f, *box) for f in range(1, 13) for box in VIDEO_BOXES]
        if camera == "cam2":
            lines.append(mot_line(15, 9, 8, 16, 16, 48))
        video.with_suffix(".txt").write_text("\n".join(lines) + "\n")
        videos.append(video)
    return videos


def test_videos_with_global_ids_split_query_and_gallery_by_camera(tmp_path):
    videos = video_cameras(tmp_path)
    options = ConvertOptions(
        FilterOptions(min_height=20), max_per_track=3, test_fraction=0.5, global_ids=True
    )
    report = convert_mot(expand_sources(videos), tmp_path / "out", options)
    assert report.dropped["missing_frame"] == 1  # id 9 past the end of cam2 (12 frames)
    assert report.identities == {"train": 2, "test": 2}
    assert report.query_split == "camera" and report.evaluate_overrides == []
    # Each (identity, camera) track: 12 boxes, 3 spread -> indices 2, 6, 10 -> frames 3, 7, 11;
    # test tracks: query the middle one (frame 7), gallery frames 3 and 11.
    assert report.images == {"train": 2 * 2 * 3, "query": 2 * 2, "gallery": 2 * 2 * 2}
    test_pids = sorted(k[1] for k in split_identities([(0, i) for i in (1, 2, 3, 4)], 0.5, 0))
    query = sorted(p.name for p in (tmp_path / "out" / "query").iterdir())
    assert query == [market_name(pid, cam, 1, 7) for pid in test_pids for cam in (1, 2)]
    # Decoded up to the last selected frame (11) in both videos.
    assert report.frames_read == 22
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        assert_crops_show_their_identity(
            tmp_path / "out" / folder, {i: i for i in (1, 2, 3, 4)}, tolerance=40
        )
    for path in (tmp_path / "out" / "query").iterdir():
        assert Image.open(path).size == (16, 48)


def test_video_labels_named_by_option_and_missing_labels(tmp_path):
    videos = video_cameras(tmp_path)
    labels = tmp_path / "labels" / "camera_one.txt"
    labels.parent.mkdir()
    videos[0].with_suffix(".txt").rename(labels)
    with pytest.raises(ReidnetError, match=r"no label file for video .*cam1\.mp4.*--labels"):
        expand_sources(videos[:1])
    (source,) = expand_sources(videos[:1], [labels])
    assert source.labels == labels and source.frame_size == (128, 96)
    with pytest.raises(ReidnetError, match="one label file per video"):
        expand_sources(videos, [labels])


# ---------------------------------------------------------------------------------------------
# The command line and the rest of reidnet on a converted dataset


def test_cli_converts_and_validate_and_stats_take_the_output(tmp_path):
    videos = video_cameras(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["dataset", "from-mot", *map(str, videos), str(out), "--global-ids", "--min-height",
         "20", "--max-per-track", "3", "--seed", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Dataset statistics" in result.stdout
    assert "missing frame" in result.stdout  # the left-out table
    assert "wrote 12 train, 4 query and 8 gallery images" in result.stdout
    validated = runner.invoke(app, ["dataset", "validate", str(out)])
    assert validated.exit_code == 0, validated.output
    stats = runner.invoke(app, ["dataset", "stats", str(out), "--json"])
    counts = json.loads(stats.stdout)
    assert counts["train"]["total"] == {"identities": 2, "images": 12, "cameras": 2}
    assert counts["query"]["total"] == {"identities": 2, "images": 4, "cameras": 2}


def test_cli_json_report_and_single_camera_hint(tmp_path):
    seq = messy_sequence(tmp_path / "messy")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["dataset", "from-mot", str(seq), str(out), "--min-height", "40", "--max-per-track",
         "0", "--test-fraction", "0.5", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["report"]["dropped"]["outside_frame"] == 1
    assert payload["report"]["unreadable_frames"] == 1
    assert payload["report"]["query_split"] == "time"
    assert payload["stats"]["query"]["total"]["images"] == 1
    validated = runner.invoke(app, ["dataset", "validate", str(out), "--same-camera"])
    assert validated.exit_code == 0, validated.output


def test_cli_with_nothing_left_says_what_to_loosen(tmp_path):
    seq = walking_sequence(tmp_path / "seq", ids=(1,))
    out = tmp_path / "out"
    result = runner.invoke(app, ["dataset", "from-mot", str(seq), str(out), "--min-height", "61"])
    assert isinstance(result.exception, ReidnetError)  # main() prints it and exits 2
    assert "--min-height" in str(result.exception)
    assert "too small" in result.stdout  # the 12 boxes of 60 px, in the left-out table


def test_video_shorter_than_its_labels_counts_the_lost_crops(tmp_path):
    video = tmp_path / "cam.mkv"  # Matroska states no frame count: found out while decoding
    write_video(video, (128, 96), 12, lambda _frame: VIDEO_BOXES[:1])
    lines = [mot_line(f, *VIDEO_BOXES[0]) for f in range(1, 15)]  # frames 13 and 14 do not exist
    video.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    options = ConvertOptions(FilterOptions(min_height=20), max_per_track=None, test_fraction=0)
    report = convert_mot(expand_sources([video]), tmp_path / "out", options)
    assert report.missing_video_frames == 2 and report.lost_crops == 2
    assert report.images["train"] == 12


TINY_SPEC = deep_merge(TINY, {"train": {"num_epochs": 1}})


def tiny_spec(data: Path, results: Path, *overrides: str):
    raw = json.loads(json.dumps(TINY_SPEC))
    raw["results_dir"] = str(results)
    raw["dataset"].update(
        train_dataset_dir=str(data / "bounding_box_train"),
        test_dataset_dir=str(data / "bounding_box_test"),
        query_dataset_dir=str(data / "query"),
    )
    return load_spec(data=raw, overrides=list(overrides))


@pytest.mark.slow
def test_converted_dataset_trains_and_evaluates(tmp_path):
    """Two cameras see 12 people (global ids): 6 train, 6 test; every query has a match in the
    other camera, so all 12 queries (6 identities x 2 cameras) count."""
    ids = range(1, 13)
    frames = range(1, 9)
    cameras = []
    for camera in ("c1", "c2"):
        boxes = [(i, 4 + 26 * (i - 1), 20 + 4 * (camera == "c2"), 20, 60) for i in ids]
        lines = [mot_line(f, *box) for f in frames for box in boxes]
        drawn = dict.fromkeys(frames, boxes)
        cameras.append(write_sequence(tmp_path / camera, (320, 100), frames, drawn, lines))
    data = tmp_path / "data"
    options = ConvertOptions(FilterOptions(min_height=40), max_per_track=4, global_ids=True)
    report = convert_mot(expand_sources(cameras), data, options)
    assert report.images == {"train": 6 * 2 * 4, "query": 6 * 2, "gallery": 6 * 2 * 3}
    result = train(tiny_spec(data, tmp_path / "r"))
    outcome = evaluate(
        tiny_spec(data, tmp_path / "r", f"evaluate.checkpoint={result.last_checkpoint}")
    )
    assert outcome.metrics["num_valid_queries"] == 12
    assert outcome.metrics["num_skipped_queries"] == 0
    assert 0.0 < outcome.metrics["mAP"] <= 1.0

    # One camera alone: time-split queries count only with the recorded same-camera override.
    single = tmp_path / "single"
    report = convert_mot(expand_sources(cameras[:1]), single, options)
    assert report.evaluate_overrides == ["evaluate.same_camera_filter=false"]
    outcome = evaluate(
        tiny_spec(
            single,
            tmp_path / "r",
            f"evaluate.checkpoint={result.last_checkpoint}",
            f"evaluate.results_dir={tmp_path / 'single_evaluate'}",
            *report.evaluate_overrides,
        )
    )
    assert outcome.metrics["num_valid_queries"] == report.identities["test"] == 6


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_map_keeps_the_order_at_any_thread_count(workers):
    assert list(ordered_map(lambda x: x * x, list(range(7)), workers)) == [x * x for x in range(7)]
    assert list(ordered_map(lambda x: x, [], workers)) == []


def test_from_mot_has_help_and_rejects_bad_choices(tmp_path):
    result = runner.invoke(app, ["dataset", "from-mot", "--help"])
    assert result.exit_code == 0 and "--global-ids" in result.output
    seq = walking_sequence(tmp_path / "seq", ids=(1,))
    for option, value, message in (
        ("--border", "cut", "--border 'cut' must be 'clip' or 'drop'"),
        ("--query-split", "random", "--query-split 'random' must be"),
        ("--classes", "person", "--classes 'person' must be comma-separated class numbers"),
    ):
        result = runner.invoke(
            app, ["dataset", "from-mot", str(seq), str(tmp_path / "o"), option, value]
        )
        assert message in str(result.exception)
    assert not (tmp_path / "o").exists()
