"""The conversion: plan, then read only the frames that hold a planned box and write the crops."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from reidnet.datatools.mot.frames import load_frame, ordered_map, video_frames
from reidnet.datatools.mot.planning import (
    ConversionReport,
    ConvertOptions,
    PlannedCrop,
    plan_conversion,
)
from reidnet.datatools.mot.sources import Source, assign_cameras
from reidnet.errors import ReidnetError

MANIFEST_NAME = "from_mot.json"
SUBSET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


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
