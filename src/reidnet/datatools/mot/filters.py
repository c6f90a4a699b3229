"""Which ground-truth boxes make crops, and why each of the others was left out."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from reidnet.datatools.mot.groundtruth import GtBox

# MOTChallenge person classes: pedestrian, person on vehicle, static person.
PERSON_CLASSES = (1, 2, 7)

BorderPolicy = Literal["clip", "drop"]


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
