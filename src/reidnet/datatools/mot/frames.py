"""Frames, streamed one at a time: image files, and video decoded with PyAV (an optional extra)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from reidnet.errors import ReidnetError

if TYPE_CHECKING:
    from reidnet.datatools.mot.sources import Source


def import_av():
    try:
        import av
    except ImportError:
        raise ReidnetError(
            "video sources need PyAV: pip install 'reidnet[video]' (or pip install av)"
        ) from None
    return av


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
    av = import_av()
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
