"""`reidnet dataset from-mot` without its display: the command line's values checked and resolved
into a conversion before any frame is read, and the statistics of the folders it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reidnet.data.market import dataset_stats
from reidnet.datatools.mot.filters import FilterOptions
from reidnet.datatools.mot.planning import ConversionReport, ConvertOptions
from reidnet.datatools.mot.sources import Source, expand_sources, read_camera_mapping
from reidnet.datatools.mot.writing import convert_mot
from reidnet.errors import ReidnetError


@dataclass(frozen=True)
class MotConversion:
    """One conversion, its sources found and its options checked."""

    sources: list[Source]
    options: ConvertOptions
    camera_mapping: dict[str, int] | None

    def run(
        self, out: Path, progress: Callable[[int, int], None] | None = None
    ) -> ConversionReport:
        return convert_mot(self.sources, out, self.options, self.camera_mapping, progress)


def conversion_from_command_line(
    sources: Sequence[Path],
    labels: Sequence[Path] | None,
    cameras: Path | None,
    *,
    classes: str,
    min_visibility: float,
    min_height: int,
    border: str,
    max_per_track: int,
    every: int,
    test_fraction: float,
    seed: int,
    global_ids: bool,
    query_split: str,
    frame_base: int,
    workers: int,
) -> MotConversion:
    """The command line's values as a conversion; 0 turns `max_per_track` and `every` off."""
    if border not in ("clip", "drop"):
        raise ReidnetError(f"--border {border!r} must be 'clip' or 'drop'")
    if query_split not in ("auto", "camera", "time"):
        raise ReidnetError(f"--query-split {query_split!r} must be 'auto', 'camera' or 'time'")
    options = ConvertOptions(
        filters=FilterOptions(parse_classes(classes), min_visibility, min_height, border),
        max_per_track=max_per_track or None,
        every=every or None,
        test_fraction=test_fraction,
        seed=seed,
        global_ids=global_ids,
        query_split=query_split,
        frame_base=frame_base,
        workers=workers,
    )
    found = expand_sources(sources, labels or [])
    mapping = read_camera_mapping(cameras) if cameras is not None else None
    return MotConversion(found, options, mapping)


def parse_classes(text: str) -> tuple[int, ...] | None:
    """`1,2,7` as (1, 2, 7); `all` as None (every class kept)."""
    if text.strip().lower() == "all":
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ReidnetError(
            f"--classes {text!r} must be comma-separated class numbers (e.g. 1,2,7) or 'all'"
        ) from None


def nothing_written(out: Path) -> ReidnetError:
    """The refusal of a conversion that wrote no crop (its report says why)."""
    return ReidnetError(
        f"no crop written to {out}: every box was left out (see above); loosen "
        "--min-height, --min-visibility or --classes, or check the label files"
    )


def written_stats(out: Path, report: ConversionReport) -> dict:
    """`dataset stats` of the folders the conversion wrote crops into."""
    return dataset_stats(
        [out / "bounding_box_train"] if report.images["train"] else [],
        out / "bounding_box_test" if report.images["gallery"] else None,
        out / "query" if report.images["query"] else None,
    )
