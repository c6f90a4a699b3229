"""Market-1501 crops from tracking ground truth: MOTChallenge sequences and labelled videos.

Every box of one track is one identity, every sequence (or video) one camera. The conversion reads
the ground truth, filters and samples the boxes, splits the identities into train and test, and
only then streams the frames that hold a selected box, one at a time, cutting and writing crops.
Bad entries of real footage (missing frames, boxes outside the frame, zero-size boxes, duplicate
or garbled lines, unreadable frames) are counted and skipped, never fatal.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import math
import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from reidnet.data.market import IMAGE_EXTENSIONS
from reidnet.errors import ReidnetError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})
MANIFEST_NAME = "from_mot.json"
SUBSET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# MOTChallenge person classes: pedestrian, person on vehicle, static person.
PERSON_CLASSES = (1, 2, 7)
_MAX_LISTED = 20

BorderPolicy = Literal["clip", "drop"]
QuerySplit = Literal["auto", "camera", "time"]
Subset = Literal["train", "query", "gallery"]


# ---------------------------------------------------------------------------------------------
# Ground-truth lines


@dataclass(frozen=True, slots=True)
class GtBox:
    """One ground-truth line: a box of track `track_id` on frame `frame` (1-based)."""

    frame: int
    track_id: int
    left: float
    top: float
    width: float
    height: float
    conf: float = 1.0
    cls: int | None = None
    visibility: float | None = None
    line: int = 0


def parse_gt_line(text: str, where: str = "gt.txt", line: int = 0) -> GtBox | None:
    """A box from one line of a MOT ground-truth file; None for a blank line.

    Columns are comma (or whitespace) separated: frame, id, left, top, width, height, then
    optionally conf; MOT16/17/20 add class and visibility (9 columns), MOT15 adds world x, y, z
    (10 columns, no class). A garbled line raises ReidnetError naming `where:line`.
    """
    stripped = text.strip()
    if not stripped:
        return None
    fields = stripped.replace(",", " ").split()
    if len(fields) not in (6, 7, 8, 9, 10):
        raise ReidnetError(
            f"{where}:{line}: expected 6 to 10 values (frame,id,left,top,width,height[,conf"
            f"[,class,visibility]]), got {len(fields)}: {stripped[:80]!r}"
        )
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise ReidnetError(f"{where}:{line}: not a number in {stripped[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ReidnetError(f"{where}:{line}: not a finite number in {stripped[:80]!r}")
    frame, track_id = values[0], values[1]
    if frame != int(frame) or track_id != int(track_id) or frame < 0:
        raise ReidnetError(
            f"{where}:{line}: frame and id must be whole numbers (frame >= 0), got "
            f"{fields[0]!r} and {fields[1]!r}"
        )
    conf = values[6] if len(values) >= 7 else 1.0
    # 8 or 9 columns: class (and visibility) after conf; 10 columns: MOT15's world coordinates.
    cls = int(values[7]) if len(values) in (8, 9) else None
    visibility = values[8] if len(values) == 9 else None
    return GtBox(int(frame), int(track_id), *values[2:6], conf, cls, visibility, line)


@dataclass
class GroundTruth:
    """The boxes of one label file and the lines that could not be read."""

    path: Path
    boxes: list[GtBox]
    malformed: list[str] = field(default_factory=list)


def read_ground_truth(path: Path) -> GroundTruth:
    """Read a MOT label file; garbled lines are kept as messages, unless no line is usable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ReidnetError(f"cannot read ground truth {path}: {error.strerror}") from None
    boxes, malformed = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            box = parse_gt_line(line, str(path), number)
        except ReidnetError as error:
            malformed.append(str(error))
            continue
        if box is not None:
            boxes.append(box)
    if malformed and not boxes:
        raise ReidnetError(
            f"no usable line in {path} ({len(malformed)} garbled), first: {malformed[0]}; "
            "is it a MOT ground-truth file (frame,id,left,top,width,height,...)?"
        )
    return GroundTruth(path, boxes, malformed)


# ---------------------------------------------------------------------------------------------
# Filtering


@dataclass(frozen=True)
class FilterOptions:
    """Which boxes make crops. Defaults keep people that are mostly visible and not tiny."""

    classes: tuple[int, ...] | None = PERSON_CLASSES
    min_visibility: float = 0.3
    min_height: int = 50
    border: BorderPolicy = "clip"


@dataclass(frozen=True, slots=True)
class Crop:
    """A kept box in whole pixels, clipped to the frame: [x0, x1) x [y0, y1)."""

    frame: int
    track_id: int
    x0: int
    y0: int
    x1: int
    y1: int


# Why a box was left out, in the order the checks run (each box is counted once, first reason).
DROP_REASONS = (
    "duplicate",
    "ignored",
    "other_class",
    "zero_size",
    "outside_frame",
    "cut_by_border",
    "low_visibility",
    "too_small",
    "missing_frame",
)


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def filter_boxes(
    boxes: Iterable[GtBox],
    frame_size: tuple[int, int],
    options: FilterOptions,
    available_frames: Callable[[int], bool] | None = None,
) -> tuple[list[Crop], Counter]:
    """Kept boxes and a Counter of DROP_REASONS (plus "clipped" for kept boxes cut by the border).

    `frame_size` is (width, height); `available_frames(frame)` tells whether the frame exists
    (None: all do). A second line for the same (frame, id) is a duplicate: the first one wins.
    """
    width, height = frame_size
    counts: Counter = Counter()
    seen: set[tuple[int, int]] = set()
    kept: list[Crop] = []
    for box in boxes:
        key = (box.frame, box.track_id)
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        reason, crop = _check_box(box, width, height, options)
        if reason is None and available_frames is not None and not available_frames(box.frame):
            reason = "missing_frame"
        if reason is not None:
            counts[reason] += 1
            continue
        if (crop.x0, crop.y0, crop.x1, crop.y1) != _unclipped(box):
            counts["clipped"] += 1
        kept.append(crop)
    return kept, counts


def _unclipped(box: GtBox) -> tuple[int, int, int, int]:
    x0, y0 = _round(box.left), _round(box.top)
    return x0, y0, _round(box.left + box.width), _round(box.top + box.height)


def _check_box(box: GtBox, width: int, height: int, options: FilterOptions):
    if box.conf == 0:
        return "ignored", None
    if options.classes is not None and box.cls is not None and box.cls not in options.classes:
        return "other_class", None
    x0, y0, x1, y1 = _unclipped(box)
    if box.width <= 0 or box.height <= 0 or x1 <= x0 or y1 <= y0:
        return "zero_size", None
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return "outside_frame", None
    cut = x0 < 0 or y0 < 0 or x1 > width or y1 > height
    if cut and options.border == "drop":
        return "cut_by_border", None
    if box.visibility is not None and box.visibility < options.min_visibility:
        return "low_visibility", None
    crop = Crop(box.frame, box.track_id, max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
    if crop.y1 - crop.y0 < options.min_height:
        return "too_small", None
    return None, crop


# ---------------------------------------------------------------------------------------------
# Sampling and splitting


def thin_track(crops: Sequence[Crop], every: int | None) -> list[Crop]:
    """At most one box every `every` frames (the first box, then the next one far enough)."""
    ordered = sorted(crops, key=lambda c: c.frame)
    if not every or every <= 1:
        return ordered
    kept: list[Crop] = []
    for crop in ordered:
        if not kept or crop.frame - kept[-1].frame >= every:
            kept.append(crop)
    return kept


def spread(items: Sequence, count: int | None) -> list:
    """`count` items spread over the sequence: the middle item of each of `count` equal parts.

    >>> spread(list(range(10)), 3)
    [1, 5, 8]
    """
    if count is None or len(items) <= count:
        return list(items)
    if count <= 0:
        return []
    n = len(items)
    return [items[(2 * i + 1) * n // (2 * count)] for i in range(count)]


def split_identities(keys: Iterable, test_fraction: float, seed: int) -> set:
    """The identities held out for query/gallery: round(N x fraction) drawn with `seed`.

    With 0 < fraction < 1 and two or more identities, both sides keep at least one identity.
    """
    ordered = sorted(set(keys))
    if not 0 <= test_fraction <= 1:
        raise ReidnetError(f"--test-fraction must lie in [0, 1], got {test_fraction}")
    count = math.floor(len(ordered) * test_fraction + 0.5)
    if 0 < test_fraction < 1 and len(ordered) >= 2:
        count = min(max(count, 1), len(ordered) - 1)
    return set(random.Random(seed).sample(ordered, count))


def market_name(pid: int, camera: int, sequence: int, frame: int, index: int = 0) -> str:
    """Market-1501 file name `PPPP_cCsS_FFFFFF_NN.jpg`.

    >>> market_name(7, 2, 1, 45)
    '0007_c2s1_000045_00.jpg'
    """
    return f"{pid:04d}_c{camera}s{sequence}_{frame:06d}_{index:02d}.jpg"


# ---------------------------------------------------------------------------------------------
# Sources: image sequences and videos


@dataclass
class Source:
    """One camera's footage: a MOTChallenge image sequence or a video, and its labels."""

    name: str
    path: Path
    labels: Path
    kind: Literal["sequence", "video"]
    frame_size: tuple[int, int] = (0, 0)
    frame_files: dict[int, Path] = field(default_factory=dict)
    frame_count: int | None = None
    camera: int = 0
    sequence: int = 1


def _find_video(folder: Path) -> Path | None:
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    return videos[0] if len(videos) == 1 else None


def _is_sequence_folder(folder: Path) -> bool:
    return (folder / "seqinfo.ini").is_file() or (folder / "img1").is_dir()


def expand_sources(paths: Sequence[Path], labels: Sequence[Path] = ()) -> list[Source]:
    """Sources from the command line: sequence folders, videos, camera folders holding one video
    (AI City style, `vdo.avi` + `gt/gt.txt`), or a folder of any of these (MOT17/train).

    `labels` pairs label files with the videos, in order; without it a video's labels are
    `<stem>.txt`, `gt/gt.txt` or `gt.txt` beside it.
    """
    found: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists():
            raise ReidnetError(
                f"source {path} does not exist: pass a MOTChallenge sequence folder "
                "(seqinfo.ini, img1/, gt/gt.txt) or a video file"
            )
        if path.is_file():
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                raise ReidnetError(
                    f"source {path} is a file but not a video "
                    f"({', '.join(sorted(VIDEO_EXTENSIONS))})"
                )
            found.append((path, "video"))
        elif _is_sequence_folder(path):
            found.append((path, "sequence"))
        elif (video := _find_video(path)) is not None:
            found.append((video, "video"))
        else:
            children = [c for c in sorted(path.iterdir()) if c.is_dir()]
            nested = [c for c in children if _is_sequence_folder(c) or _find_video(c)]
            if not nested:
                raise ReidnetError(
                    f"{path} is neither a MOTChallenge sequence (seqinfo.ini or img1/), nor a "
                    "folder with one video, nor a folder of those"
                )
            found += [
                (c, "sequence") if _is_sequence_folder(c) else (_find_video(c), "video")
                for c in nested
            ]
    videos = [p for p, kind in found if kind == "video"]
    if labels and len(labels) != len(videos):
        raise ReidnetError(
            f"--labels given {len(labels)} time(s) for {len(videos)} video(s): give one label "
            "file per video, in the order of the videos"
        )
    video_labels = dict(zip(videos, labels, strict=False))
    return [
        _sequence_source(p) if kind == "sequence" else _video_source(p, video_labels.get(p))
        for p, kind in found
    ]


def _sequence_source(folder: Path) -> Source:
    info = configparser.ConfigParser()
    ini = folder / "seqinfo.ini"
    if ini.is_file():
        info.read(ini, encoding="utf-8")
    seq = info["Sequence"] if info.has_section("Sequence") else {}
    image_dir = folder / seq.get("imDir", "img1")
    labels = folder / "gt" / "gt.txt"
    if not labels.is_file():
        raise ReidnetError(
            f"sequence {folder} has no ground truth {labels}: conversion needs "
            "gt/gt.txt (test sequences of MOTChallenge ship none)"
        )
    if not image_dir.is_dir():
        raise ReidnetError(f"sequence {folder} has no image folder {image_dir}")
    frame_files = {}
    for image in image_dir.iterdir():
        if image.suffix.lower() in IMAGE_EXTENSIONS and image.stem.isdigit():
            frame_files[int(image.stem)] = image
    if not frame_files:
        raise ReidnetError(
            f"sequence {folder}: {image_dir} holds no frame image named by its number "
            "(000001.jpg, ...)"
        )
    try:
        width, height = int(seq.get("imWidth", 0)), int(seq.get("imHeight", 0))
    except ValueError:
        raise ReidnetError(f"{ini}: imWidth and imHeight must be whole numbers") from None
    if not width or not height:
        from PIL import Image

        with Image.open(frame_files[min(frame_files)]) as first:  # header only
            width, height = first.size
    name = seq.get("name", folder.name)
    return Source(name, folder, labels, "sequence", (width, height), frame_files)


def _video_source(video: Path, labels: Path | None) -> Source:
    if labels is None:
        candidates = [
            video.with_suffix(".txt"),
            video.parent / "gt" / "gt.txt",
            video.parent / "gt.txt",
        ]
        labels = next((c for c in candidates if c.is_file()), None)
        if labels is None:
            raise ReidnetError(
                f"no label file for video {video}: looked for "
                f"{', '.join(str(c) for c in candidates)}; name one with --labels"
            )
    elif not labels.is_file():
        raise ReidnetError(f"label file {labels} (for video {video}) does not exist")
    av = _import_av()
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            size = (stream.codec_context.width, stream.codec_context.height)
            count = stream.frames or None
    except (av.error.FFmpegError, IndexError) as error:
        raise ReidnetError(f"cannot open video {video}: {error}") from None
    name = video.parent.name if video.stem in ("vdo", "video") else video.stem
    return Source(name, video, labels, "video", size, frame_count=count)


def _import_av():
    try:
        import av
    except ImportError:
        raise ReidnetError(
            "video sources need PyAV: pip install 'reidnet[video]' (or pip install av)"
        ) from None
    return av


def assign_cameras(sources: Sequence[Source], mapping: dict[str, int] | None = None) -> None:
    """Camera ids 1, 2, ... in command order, or from `mapping` (source name or path -> camera).

    Sources sharing a camera get sequence numbers 1, 2, ... in command order (Market's `sS`).
    """
    next_sequence: Counter = Counter()
    for index, source in enumerate(sources, start=1):
        if mapping is None:
            camera = index
        else:
            keys = (source.name, str(source.path), source.path.name, source.path.stem)
            camera = next((mapping[k] for k in keys if k in mapping), None)
            if camera is None:
                raise ReidnetError(
                    f"the camera mapping names no camera for source {source.path} (tried "
                    f"{', '.join(repr(k) for k in keys[:1] + keys[2:])}): add a line for it"
                )
        next_sequence[camera] += 1
        source.camera, source.sequence = camera, next_sequence[camera]


def read_camera_mapping(path: Path) -> dict[str, int]:
    """`name: camera` lines (YAML or JSON mapping, or `name,camera` CSV)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ReidnetError(f"cannot read camera mapping {path}: {error.strerror}") from None
    loaded = None
    with contextlib.suppress(yaml.YAMLError):  # not YAML: read it as CSV below
        loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        loaded = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, camera = line.rpartition(",")
            if not sep:
                raise ReidnetError(f"{path}:{number}: expected `name,camera` or `name: camera`")
            loaded[name.strip()] = camera.strip()
    mapping = {}
    for name, camera in loaded.items():
        try:
            mapping[str(name)] = int(camera)
        except (TypeError, ValueError):
            raise ReidnetError(
                f"camera mapping {path}: camera of {name!r} must be a whole "
                f"number >= 1, got {camera!r}"
            ) from None
        if mapping[str(name)] < 1:
            raise ReidnetError(f"camera mapping {path}: camera of {name!r} must be >= 1")
    return mapping


# ---------------------------------------------------------------------------------------------
# The plan: which box of which frame goes where


@dataclass(frozen=True)
class ConvertOptions:
    filters: FilterOptions = FilterOptions()
    max_per_track: int | None = 10
    every: int | None = None
    test_fraction: float = 0.5
    seed: int = 0
    global_ids: bool = False
    query_split: QuerySplit = "auto"
    frame_base: int = 1
    quality: int = 95
    workers: int = 2


@dataclass(frozen=True, slots=True)
class PlannedCrop:
    crop: Crop
    subset: Subset
    file_name: str


@dataclass
class ConversionReport:
    """What a conversion read, left out and wrote; `as_dict` is the `--json` output."""

    out: str = ""
    sources: list[dict] = field(default_factory=list)
    skipped_sources: list[str] = field(default_factory=list)
    query_split: str = "camera"
    evaluate_overrides: list[str] = field(default_factory=list)
    lines: int = 0
    malformed_lines: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    clipped: int = 0
    identities: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=lambda: {"train": 0, "query": 0, "gallery": 0})
    frames_read: int = 0
    unreadable_frames: int = 0
    missing_video_frames: int = 0
    lost_crops: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _identity_key(source_index: int, track_id: int, global_ids: bool):
    return (0, track_id) if global_ids else (source_index, track_id)


def plan_conversion(
    sources: Sequence[Source], options: ConvertOptions, report: ConversionReport
) -> list[dict[int, list[PlannedCrop]]]:
    """Per source, the crops to cut from each frame; fills the report's counts and notes."""
    tracks: dict[tuple, list[Crop]] = {}  # (identity key, source index) -> kept boxes
    for index, source in enumerate(sources):
        truth = read_ground_truth(source.labels)
        report.lines += len(truth.boxes) + len(truth.malformed)
        report.malformed_lines += len(truth.malformed)
        room = _MAX_LISTED - len(report.malformed_examples)
        report.malformed_examples += truth.malformed[: max(room, 0)]
        kept, counts = filter_boxes(
            truth.boxes,
            source.frame_size,
            options.filters,
            _frame_check(source, options.frame_base),
        )
        for reason in DROP_REASONS:
            report.dropped[reason] += counts[reason]
        report.clipped += counts["clipped"]
        for crop in kept:
            key = _identity_key(index, crop.track_id, options.global_ids)
            tracks.setdefault((key, index), []).append(crop)
    identities = sorted({key for key, _ in tracks})
    pids = {key: pid for pid, key in enumerate(identities, start=1)}
    test = split_identities(identities, options.test_fraction, options.seed)
    report.identities = {"train": len(identities) - len(test), "test": len(test)}
    report.query_split = _choose_query_split(tracks, test, options.query_split, report)
    plan: list[dict[int, list[PlannedCrop]]] = [defaultdict(list) for _ in sources]
    for (key, index), crops in sorted(tracks.items()):
        source = sources[index]
        thinned = thin_track(crops, options.every)
        for subset, crop in _assign(thinned, key in test, report.query_split, options):
            name = market_name(pids[key], source.camera, source.sequence, crop.frame)
            plan[index][crop.frame].append(PlannedCrop(crop, subset, name))
    return plan


def _frame_check(source: Source, frame_base: int) -> Callable[[int], bool] | None:
    if source.kind == "sequence":
        return source.frame_files.__contains__
    if source.frame_count:
        return lambda frame, count=source.frame_count: 0 <= frame - frame_base < count
    return None


def _assign(track: list[Crop], is_test: bool, query_split: str, options: ConvertOptions):
    """(subset, crop) pairs of one identity's track in one camera."""
    limit = options.max_per_track
    if not is_test:
        return [("train", c) for c in spread(track, limit)]
    if query_split == "camera":
        chosen = spread(track, limit)
        query = chosen[len(chosen) // 2]
        return [("query" if c is query else "gallery", c) for c in chosen]
    # Time split: the query from the track's first half, the gallery from its second half.
    if len(track) < 2:
        return [("gallery", c) for c in track]
    first, second = track[: len(track) // 2], track[len(track) // 2 :]
    gallery_limit = None if limit is None else max(limit - 1, 1)
    return [("query", first[len(first) // 2])] + [
        ("gallery", c) for c in spread(second, gallery_limit)
    ]


def _choose_query_split(tracks, test: set, requested: str, report: ConversionReport) -> str:
    cameras: dict = defaultdict(set)
    for key, index in tracks:
        if key in test:
            cameras[key].add(index)
    multi = sum(1 for c in cameras.values() if len(c) > 1)
    if requested == "auto":
        requested = "camera" if multi else "time"
        if not multi and cameras:
            report.notes.append(
                "no test identity is seen by two cameras (single-camera input, or local ids "
                "without --global-ids): the Market-1501 protocol would skip every query, so query "
                "and gallery come from disjoint time segments of each track; evaluate with "
                "evaluate.same_camera_filter=false"
            )
    elif requested == "camera" and len(cameras) > multi:
        report.notes.append(
            f"{len(cameras) - multi} of {len(cameras)} test identities are seen by one camera "
            "only: the Market-1501 protocol skips their queries (use --query-split time with "
            "evaluate.same_camera_filter=false to measure within-camera matching)"
        )
    if requested == "time":
        report.evaluate_overrides = ["evaluate.same_camera_filter=false"]
    return requested


# ---------------------------------------------------------------------------------------------
# Frames: streamed one at a time, only those that hold a selected box


def load_frame(path: Path):
    """A frame image as PIL RGB, or None when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except Exception:  # PIL raises many types for bad data
        return None


def ordered_map(function: Callable, items: Iterable, workers: int) -> Iterator:
    """function(item) for each item, in order, run in `workers` threads with at most two items
    per thread in flight: PIL releases the GIL while decoding and encoding, and no more than a
    few frames are ever held in memory."""
    if workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def video_frames(
    source: Source,
    wanted: set[int],
    frame_base: int = 1,
    on_frame: Callable[[], None] | None = None,
) -> Iterator[tuple[int, object | None]]:
    """(label frame number, PIL RGB image or None) for the wanted frames of a video.

    Every frame up to the last wanted one is decoded (compressed video cannot skip) but only the
    wanted ones are converted to RGB. A packet that fails to decode yields None for its frame.
    """
    av = _import_av()
    if not wanted:
        return
    last = max(wanted)
    with av.open(str(source.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = frame_base - 1
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                decoded = [None]  # one packet is one frame for the codecs of surveillance video
            for frame in decoded:
                index += 1
                if on_frame is not None:
                    on_frame()
                if index in wanted:
                    yield index, None if frame is None else frame.to_image()
                if index >= last:
                    return


# ---------------------------------------------------------------------------------------------
# The conversion


def convert_mot(
    sources: Sequence[Source],
    out: Path,
    options: ConvertOptions = ConvertOptions(),
    camera_mapping: dict[str, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ConversionReport:
    """Write a Market-1501-layout dataset under `out` (which must be empty or absent).

    `progress(done, total)` is called once per frame read or decoded.
    """
    import time

    start = time.perf_counter()
    _check_out(out)
    report = ConversionReport(out=str(out))
    sources = _drop_duplicate_sources(sources, report)
    assign_cameras(sources, camera_mapping)
    plan = plan_conversion(sources, options, report)
    for name in SUBSET_FOLDERS.values():
        (out / name).mkdir(parents=True, exist_ok=True)
    total = sum(
        _frames_to_read(s, p, options.frame_base) for s, p in zip(sources, plan, strict=True)
    )
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for source, frame_plan in zip(sources, plan, strict=True):
        if source.kind == "sequence":

            def cut(frame: int, source=source, frame_plan=frame_plan):
                image = load_frame(source.frame_files[frame])
                return frame, cut_crops(image, frame_plan[frame], out, options.quality)

            outcomes = ordered_map(cut, sorted(frame_plan), options.workers)
        else:

            def cut_decoded(decoded, frame_plan=frame_plan):
                frame, image = decoded
                return frame, cut_crops(image, frame_plan[frame], out, options.quality)

            decoded = video_frames(source, set(frame_plan), options.frame_base, advance)
            outcomes = ordered_map(cut_decoded, decoded, options.workers)
        cut_frames = set()
        for frame, counts in outcomes:
            if source.kind == "sequence":
                advance()
            cut_frames.add(frame)
            for subset in report.images:
                report.images[subset] += counts[subset]
            report.unreadable_frames += counts["unreadable"]
            report.lost_crops += counts["lost"]
        missing = set(frame_plan) - cut_frames  # a video shorter than its labels
        report.missing_video_frames += len(missing)
        report.lost_crops += sum(len(frame_plan[f]) for f in missing)
        report.sources.append(
            {
                "name": source.name,
                "path": str(source.path),
                "labels": str(source.labels),
                "camera": source.camera,
                "sequence": source.sequence,
                "frame_size": list(source.frame_size),
            }
        )
    report.frames_read = done
    report.seconds = time.perf_counter() - start
    _write_manifest(out, report)
    return report


def _frames_to_read(source: Source, frame_plan: dict, frame_base: int) -> int:
    if not frame_plan:
        return 0
    if source.kind == "sequence":
        return len(frame_plan)
    return max(frame_plan) - frame_base + 1


def cut_crops(image, planned: list[PlannedCrop], out: Path, quality: int = 95) -> Counter:
    """Write the planned crops of one frame; counts per subset, plus "lost" and "unreadable"."""
    counts: Counter = Counter()
    if image is None:
        counts["unreadable"] += 1
        counts["lost"] += len(planned)
        return counts
    width, height = image.size
    for item in planned:
        c = item.crop
        box = (max(c.x0, 0), max(c.y0, 0), min(c.x1, width), min(c.y1, height))
        if box[2] <= box[0] or box[3] <= box[1]:  # the image is smaller than its seqinfo said
            counts["lost"] += 1
            continue
        image.crop(box).save(out / SUBSET_FOLDERS[item.subset] / item.file_name, quality=quality)
        counts[item.subset] += 1
    return counts


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReidnetError(f"output folder {out} exists and is not empty: choose a new folder")


def _drop_duplicate_sources(sources: Sequence[Source], report: ConversionReport) -> list[Source]:
    """MOT17 ships each sequence three times (DPM, FRCNN, SDP) with the same images and labels."""
    kept, seen = [], {}
    for source in sources:
        digest = hashlib.blake2b(source.labels.read_bytes(), digest_size=16).hexdigest()
        key = (digest, source.frame_size)
        if key in seen:
            report.skipped_sources.append(str(source.path))
            report.notes.append(
                f"{source.path} has the same ground truth as {seen[key].path}: skipped (MOT17 "
                "ships every sequence once per detector)"
            )
            continue
        seen[key] = source
        kept.append(source)
    return kept


def _write_manifest(out: Path, report: ConversionReport) -> None:
    """`from_mot.json` at the dataset root: what was converted and how to evaluate it."""
    text = json.dumps(report.as_dict(), indent=2) + "\n"
    (out / MANIFEST_NAME).write_text(text, encoding="utf-8")
