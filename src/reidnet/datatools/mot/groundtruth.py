"""MOT ground-truth lines: frame, track id, box, and MOT16/17/20's class and visibility."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from reidnet.errors import ReidnetError


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
