"""Market-1501 crops from tracking ground truth: MOTChallenge sequences and labelled videos.

Every box of one track is one identity, every sequence (or video) one camera. The conversion reads
the ground truth, filters and samples the boxes, splits the identities into train and test, and
only then streams the frames that hold a selected box, one at a time, cutting and writing crops.
Bad entries of real footage (missing frames, boxes outside the frame, zero-size boxes, duplicate
or garbled lines, unreadable frames) are counted and skipped, never fatal.
"""

from reidnet.datatools.mot.command import (
    MotConversion,
    conversion_from_command_line,
    nothing_written,
    written_stats,
)
from reidnet.datatools.mot.filters import (
    DROP_REASONS,
    PERSON_CLASSES,
    Crop,
    FilterOptions,
    filter_boxes,
)
from reidnet.datatools.mot.frames import load_frame, ordered_map, video_frames
from reidnet.datatools.mot.groundtruth import GroundTruth, GtBox, parse_gt_line, read_ground_truth
from reidnet.datatools.mot.planning import (
    ConversionReport,
    ConvertOptions,
    PlannedCrop,
    market_name,
    plan_conversion,
    split_identities,
    spread,
    thin_track,
)
from reidnet.datatools.mot.sources import (
    VIDEO_EXTENSIONS,
    Source,
    assign_cameras,
    expand_sources,
    read_camera_mapping,
)
from reidnet.datatools.mot.writing import MANIFEST_NAME, SUBSET_FOLDERS, convert_mot, cut_crops

__all__ = [
    "DROP_REASONS",
    "MANIFEST_NAME",
    "PERSON_CLASSES",
    "SUBSET_FOLDERS",
    "VIDEO_EXTENSIONS",
    "ConversionReport",
    "ConvertOptions",
    "Crop",
    "FilterOptions",
    "GroundTruth",
    "GtBox",
    "MotConversion",
    "PlannedCrop",
    "Source",
    "assign_cameras",
    "conversion_from_command_line",
    "convert_mot",
    "cut_crops",
    "expand_sources",
    "filter_boxes",
    "load_frame",
    "market_name",
    "nothing_written",
    "ordered_map",
    "parse_gt_line",
    "plan_conversion",
    "read_camera_mapping",
    "read_ground_truth",
    "split_identities",
    "spread",
    "thin_track",
    "video_frames",
    "written_stats",
]
