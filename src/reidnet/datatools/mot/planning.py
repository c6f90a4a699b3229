"""The plan: which box of which frame goes where, decided from the ground truth alone.

Boxes are filtered and thinned per track, identities split into train and test, and each test
track split into query and gallery (by camera, or by time for single-camera data).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from reidnet.datatools.mot.filters import DROP_REASONS, Crop, FilterOptions, filter_boxes
from reidnet.datatools.mot.groundtruth import read_ground_truth
from reidnet.datatools.mot.sources import Source
from reidnet.errors import ReidnetError

QuerySplit = Literal["auto", "camera", "time"]
Subset = Literal["train", "query", "gallery"]
_MAX_LISTED = 20


@dataclass(frozen=True)
class ConvertOptions:
    filters: FilterOptions = field(default_factory=FilterOptions)
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
