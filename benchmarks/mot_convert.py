"""Speed of `reidnet dataset from-mot` on a generated sequence of realistic size, with baselines.

Generates a 1920x1080 MOTChallenge sequence (JPEG frames, gt/gt.txt) in which identities walk
across a textured background, and the same footage as an H.264 video, then times:

* baseline: decoding every frame and nothing else (PIL for the JPEGs, PyAV for the video, with
  and without the conversion to RGB): what reading the footage costs at least;
* from-mot with its defaults (10 images per identity per camera: only the frames holding a
  selected box are read), and with every box kept (--max-per-track 0), at 1 and 2 threads.

    python benchmarks/mot_convert.py [--frames 600 --identities 20 --keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reidnet.data.mot import ConvertOptions, FilterOptions, convert_mot, expand_sources

WIDTH, HEIGHT = 1920, 1080


def walkers(identities: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    people = []
    for track_id in range(1, identities + 1):
        height = int(rng.integers(160, 360))
        people.append(
            {
                "id": track_id,
                "height": height,
                "width": height * 2 // 5,
                "x": float(rng.uniform(0, WIDTH)),
                "y": int(rng.integers(50, HEIGHT - height - 10)),
                "speed": float(rng.uniform(-4, 4)),
                "texture": rng.integers(0, 256, (height, height * 2 // 5, 3), dtype=np.uint8),
            }
        )
    return people


def boxes_at(people: list[dict], frame: int) -> list[tuple[int, int, int, int, int]]:
    """(id, left, top, width, height) on a frame; walkers wrap around, so some leave the frame."""
    boxes = []
    for p in people:
        left = int((p["x"] + p["speed"] * frame) % (WIDTH + p["width"])) - p["width"] // 2
        boxes.append((p["id"], left, p["y"], p["width"], p["height"]))
    return boxes


def render(background: np.ndarray, people: list[dict], frame: int) -> np.ndarray:
    pixels = background.copy()
    for (_, left, top, width, height), p in zip(boxes_at(people, frame), people, strict=True):
        x0, x1 = max(left, 0), min(left + width, WIDTH)
        if x1 > x0:
            pixels[top : top + height, x0:x1] = p["texture"][:, x0 - left : x1 - left]
    return pixels


def generate(root: Path, frames: int, identities: int) -> tuple[Path, Path]:
    import av

    people = walkers(identities)
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8)
    background = np.asarray(Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BILINEAR))
    seq = root / "BENCH-01"
    (seq / "img1").mkdir(parents=True)
    (seq / "gt").mkdir()
    (seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname=BENCH-01\nimDir=img1\nframeRate=30\nseqLength={frames}\n"
        f"imWidth={WIDTH}\nimHeight={HEIGHT}\nimExt=.jpg\n"
    )
    video = root / "bench.mp4"
    lines = []
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for frame in range(1, frames + 1):
            pixels = render(background, people, frame)
            Image.fromarray(pixels).save(seq / "img1" / f"{frame:06d}.jpg", quality=90)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
            lines += [
                f"{frame},{i},{x},{y},{w},{h},1,1,1.0" for i, x, y, w, h in boxes_at(people, frame)
            ]
        for packet in stream.encode():
            container.mux(packet)
    text = "\n".join(lines) + "\n"
    (seq / "gt" / "gt.txt").write_text(text)
    video.with_suffix(".txt").write_text(text)
    return seq, video


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
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mot_bench_"))
    try:
        start = time.perf_counter()
        seq, video = generate(root, args.frames, args.identities)
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
        for max_per_track in (10, 0):
            read, crops, seconds = convert(video, root / "out", max_per_track, 1)
            label = f"from-mot, max-per-track {max_per_track or 'all'}"
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
