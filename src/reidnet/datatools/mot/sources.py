"""Sources: one camera's footage, a MOTChallenge image sequence or a video, found from the
command line's paths, with its labels and its camera number."""

from __future__ import annotations

import configparser
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reidnet.data.market import IMAGE_EXTENSIONS
from reidnet.datatools.mot.frames import import_av
from reidnet.errors import ReidnetError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})


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
    av = import_av()
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            size = (stream.codec_context.width, stream.codec_context.height)
            count = stream.frames or None
    except (av.error.FFmpegError, IndexError) as error:
        raise ReidnetError(f"cannot open video {video}: {error}") from None
    name = video.parent.name if video.stem in ("vdo", "video") else video.stem
    return Source(name, video, labels, "video", size, frame_count=count)


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
