"""Speed of `reidnet dataset from-mot` on a generated sequence of realistic size, with baselines.

Generates a 1920x1080 MOTChallenge sequence (JPEG frames, gt/gt.txt with visibility) in which
identities walk across a textured background, and the same footage as an H.264 video, then times:

* baseline: decoding every frame and nothing else (PIL for the JPEGs, PyAV for the video, with
  and without the conversion to RGB): what reading the footage costs at least;
* from-mot with its defaults (10 images per identity per camera: only the frames holding a
  selected box are read), and with every box kept (--max-per-track 0), at 1 and 2 threads.

    python benchmarks/mot_convert.py [--frames 600 --identities 20 --keep]
    python benchmarks/mot_convert.py --write-footage DIR --cameras 2 --frames 300 --identities 40
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidnet.datatools.mot import ConvertOptions, FilterOptions, convert_mot, expand_sources
from reidnet.datatools.synthetic import render_image

WIDTH, HEIGHT = 1920, 1080


@dataclass
class Walker:
    track_id: int
    height: int
    width: int
    x: float
    y: int
    speed: float


def walkers(identities: int, size: tuple[int, int], camera: int) -> list[Walker]:
    """The same identities in every camera, each camera with its own positions and speeds."""
    width, height = size
    rng = np.random.default_rng(camera)
    people = []
    for track_id in range(1, identities + 1):
        tall = int(rng.integers(height * 3 // 20, height // 3))
        people.append(
            Walker(
                track_id,
                tall,
                tall * 2 // 5,
                float(rng.uniform(0, width)),
                int(rng.integers(height // 20, height - tall - 10)),
                float(rng.uniform(-4, 4)) * width / 1920,
            )
        )
    return people


def box_at(walker: Walker, frame: int, frame_width: int) -> tuple[int, int, int, int]:
    """(left, top, width, height); walkers wrap around, so some are cut by the border."""
    span = frame_width + walker.width
    left = int((walker.x + walker.speed * frame) % span) - walker.width // 2
    return left, walker.y, walker.width, walker.height


class Painter:
    """Paints walkers in order and tells how much of each stayed visible (MOT's visibility:
    the share of the box not hidden by a later walker nor cut by the border)."""

    def __init__(self, background: np.ndarray, camera: int, pedestrians: bool):
        self.background, self.camera, self.pedestrians = background, camera, pedestrians
        self.textures: dict[tuple[int, int], np.ndarray] = {}

    def texture(self, walker: Walker, frame: int) -> np.ndarray:
        pose = frame // 10 if self.pedestrians else 0  # a new pose every 10 frames
        key = (walker.track_id, pose)
        if key not in self.textures:
            shape = (walker.height, walker.width)
            if self.pedestrians:
                self.textures[key] = render_image(walker.track_id, pose, self.camera, size=shape)
            else:
                rng = np.random.default_rng(walker.track_id)
                self.textures[key] = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        return self.textures[key]

    def frame(self, people: list[Walker], frame: int) -> tuple[np.ndarray, list[str]]:
        pixels = self.background.copy()
        owner = np.full(pixels.shape[:2], -1, np.int32)
        width = pixels.shape[1]
        boxes = [box_at(w, frame, width) for w in people]
        for walker, (left, top, w, h) in zip(people, boxes, strict=True):
            x0, x1 = max(left, 0), min(left + w, width)
            if x1 > x0:
                pixels[top : top + h, x0:x1] = self.texture(walker, frame)[:, x0 - left : x1 - left]
                owner[top : top + h, x0:x1] = walker.track_id
        lines = []
        for walker, (left, top, w, h) in zip(people, boxes, strict=True):
            x0, x1 = max(left, 0), min(left + w, width)
            seen = np.count_nonzero(owner[top : top + h, x0:x1] == walker.track_id)
            lines.append(f"{frame},{walker.track_id},{left},{top},{w},{h},1,1,{seen / (w * h):.3f}")
        return pixels, lines


def generate(
    root: Path,
    frames: int,
    identities: int,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    cameras: int = 1,
    pedestrians: bool = False,
    with_video: bool = True,
) -> tuple[list[Path], list[Path]]:
    """Per camera a MOTChallenge sequence CAM-0N (JPEG frames, gt/gt.txt) and, with
    `with_video`, the same footage as H.264 `cam0N.mp4` with its labels beside it."""
    import av

    width, height = size
    sequences, videos = [], []
    for camera in range(1, cameras + 1):
        rng = np.random.default_rng(100 + camera)
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        background = np.asarray(Image.fromarray(small).resize(size, Image.BILINEAR))
        painter = Painter(background, camera, pedestrians)
        people = walkers(identities, size, camera)
        seq = root / f"CAM-{camera:02d}"
        (seq / "img1").mkdir(parents=True)
        (seq / "gt").mkdir()
        (seq / "seqinfo.ini").write_text(
            f"[Sequence]\nname={seq.name}\nimDir=img1\nframeRate=30\nseqLength={frames}\n"
            f"imWidth={width}\nimHeight={height}\nimExt=.jpg\n"
        )
        video = root / f"cam{camera:02d}.mp4"
        lines = []
        with contextlib.ExitStack() as stack:
            if with_video:
                container = stack.enter_context(av.open(str(video), "w"))
                stream = container.add_stream("libx264", rate=30)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"preset": "veryfast", "crf": "23"}
            for frame in range(1, frames + 1):
                pixels, frame_lines = painter.frame(people, frame)
                lines += frame_lines
                Image.fromarray(pixels).save(seq / "img1" / f"{frame:06d}.jpg", quality=90)
                if with_video:
                    picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                    for packet in stream.encode(picture):
                        container.mux(packet)
            if with_video:
                for packet in stream.encode():
                    container.mux(packet)
        text = "\n".join(lines) + "\n"
        (seq / "gt" / "gt.txt").write_text(text)
        sequences.append(seq)
        if with_video:
            video.with_suffix(".txt").write_text(text)
            videos.append(video)
    return sequences, videos


def decode_images(seq: Path) -> tuple[int, float]:
    start = time.perf_counter()
    files = sorted((seq / "img1").iterdir())
    for path in files:
        with Image.open(path) as image:
            image.convert("RGB")
    return len(files), time.perf_counter() - start


def decode_video(video: Path, rgb: bool) -> tuple[int, float]:
    import av

    start = time.perf_counter()
    count = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if rgb:
                frame.to_image()
            count += 1
    return count, time.perf_counter() - start


def convert(source: Path, out: Path, max_per_track: int, workers: int) -> tuple[int, int, float]:
    if out.exists():
        shutil.rmtree(out)
    options = ConvertOptions(
        FilterOptions(), max_per_track=max_per_track or None, test_fraction=0.5, workers=workers
    )
    start = time.perf_counter()
    report = convert_mot(expand_sources([source]), out, options)
    seconds = time.perf_counter() - start
    return report.frames_read, sum(report.images.values()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="Keep the generated footage.")
    parser.add_argument(
        "--write-footage",
        type=Path,
        metavar="DIR",
        help="Only write footage to DIR (no timing): --cameras sequences of synthetic "
        "pedestrians (the same identities in every camera), for a train + evaluate run.",
    )
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--size", default="960x540", help="Frame WIDTHxHEIGHT of --write-footage.")
    args = parser.parse_args()
    if args.write_footage is not None:
        size = tuple(int(v) for v in args.size.split("x"))
        sequences, _ = generate(
            args.write_footage, args.frames, args.identities, size, args.cameras, True, False
        )
        print("wrote " + " ".join(str(s) for s in sequences))
        return
    root = Path(tempfile.mkdtemp(prefix="mot_bench_"))
    try:
        start = time.perf_counter()
        (seq,), (video,) = generate(root, args.frames, args.identities)
        print(
            f"generated {args.frames} frames {WIDTH}x{HEIGHT}, {args.identities} identities "
            f"in {time.perf_counter() - start:.0f} s under {root}"
        )
        rows = []
        frames, seconds = decode_images(seq)
        rows.append(("JPEG sequence", "baseline: PIL decode every frame", frames, 0, seconds))
        for max_per_track, workers in ((10, 2), (0, 1), (0, 2)):
            label = f"from-mot, max-per-track {max_per_track or 'all'}, {workers} thread(s)"
            read, crops, seconds = convert(seq, root / "out", max_per_track, workers)
            rows.append(("JPEG sequence", label, read, crops, seconds))
        for rgb in (False, True):
            frames, seconds = decode_video(video, rgb)
            label = "baseline: PyAV decode" + (" + RGB" if rgb else "") + " every frame"
            rows.append(("H.264 video", label, frames, 0, seconds))
        for max_per_track, workers in ((10, 2), (0, 1), (0, 2)):
            read, crops, seconds = convert(video, root / "out", max_per_track, workers)
            label = f"from-mot, max-per-track {max_per_track or 'all'}, {workers} thread(s)"
            rows.append(("H.264 video", label, read, crops, seconds))
        print_table(rows)
        print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def print_table(rows) -> None:
    print("| source | run | frames read | crops | seconds | frames/s | crops/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for source, label, frames, crops, seconds in rows:
        crop_rate = f"{crops / seconds:.0f}" if crops else "-"
        print(
            f"| {source} | {label} | {frames} | {crops or '-'} | {seconds:.1f} | "
            f"{frames / seconds:.1f} | {crop_rate} |"
        )


if __name__ == "__main__":
    main()
