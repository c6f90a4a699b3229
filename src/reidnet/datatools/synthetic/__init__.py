"""Procedural synthetic pedestrians, written as a Market-1501-layout dataset.

The newcomer's dataset: no download, seconds to make, and a real re-identification task. An identity
is a stable mix of body shape, skin, hair, clothes and accessories drawn from small palettes (so
identities share attributes); a camera brings its own scene, light, colour cast, blur and framing;
each image adds a viewpoint, a pose, maybe an occluder, and sensor noise.

Every random choice comes from a PCG64 generator seeded by (seed, purpose, key...), never from
global state or hash ordering, so a seed gives byte-identical files in any process and with any
number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from reidnet.data.market import SYNTHETIC_MARKER, SubsetCounts
from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)

SUBSETS = ("bounding_box_train", "bounding_box_test", "query")
JPEG_QUALITY = 90
MIN_SIZE = (32, 16)
MAX_CAMERAS = 99
MAX_PER_PID = 100_000

# Seed-stream purposes: each random decision has its own stream, so changing one argument (say the
# number of cameras) leaves the appearance of every identity as it was.
_IDENTITY, _CAMERA, _IMAGE, _PLAN, _DISTRACTOR = 1, 2, 3, 4, 5

# Small palettes (RGB) so that many identities share a shirt colour, a hair tone, a bag...
SKIN_TONES = ((255, 224, 196), (234, 192, 160), (205, 150, 115), (160, 110, 80), (110, 72, 50))
HAIR_TONES = ((20, 18, 18), (70, 45, 30), (130, 90, 50), (200, 170, 110), (150, 150, 150))
UPPER_COLOURS = (
    (200, 30, 35), (30, 60, 170), (240, 240, 240), (25, 25, 28), (40, 140, 60), (245, 200, 40),
    (130, 130, 135), (110, 60, 150), (240, 130, 40), (120, 190, 230), (230, 120, 170),
    (100, 70, 45),
)  # fmt: skip
LOWER_COLOURS = (
    (35, 40, 80), (25, 25, 28), (110, 110, 115), (190, 170, 130),
    (90, 70, 50), (230, 230, 225), (60, 90, 60), (150, 40, 45),
)  # fmt: skip
SHOE_COLOURS = ((20, 20, 20), (235, 235, 235), (110, 70, 40), (60, 60, 150), (150, 30, 30))
ACCESSORY_COLOURS = ((25, 25, 25), (60, 60, 140), (170, 40, 40), (120, 100, 70), (60, 110, 70))
EYES = np.array((40, 30, 30), dtype=np.float32)
MOUTH = np.array((150, 80, 80), dtype=np.float32)
OCCLUDER_COLOURS = ((90, 90, 95), (140, 110, 80), (60, 80, 60), (180, 180, 175), (40, 40, 60))
# Body presets: (height factor, width factor, head factor, leg fraction of height).
BODY_SHAPES = (
    (1.00, 1.00, 1.00, 0.47), (1.03, 0.85, 0.96, 0.49), (0.95, 1.18, 1.03, 0.45),
    (0.92, 0.92, 1.08, 0.46), (1.02, 1.10, 0.98, 0.48),
)  # fmt: skip
PATTERNS = ("solid", "horizontal", "vertical", "checks")
LOWER_SHAPES = ("trousers", "shorts", "skirt")
HAIR_LENGTHS = ("short", "medium", "long")
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class SyntheticSummary:
    """Where the dataset was written and what each Market-1501 folder holds."""

    out_dir: Path
    train: SubsetCounts
    gallery: SubsetCounts
    query: SubsetCounts
    distractors: int

    @property
    def images(self) -> int:
        return self.train.images + self.gallery.images + self.query.images


@dataclass(frozen=True)
class _ImageJob:
    """One file to write: pid 0 is a distractor, `index` numbers the images of that pid."""

    subset: str
    pid: int
    camera: int
    frame: int
    index: int

    @property
    def file_name(self) -> str:
        return f"{self.pid:04d}_c{self.camera}s1_{self.frame:06d}_00.jpg"


@dataclass(frozen=True)
class _Identity:
    height: float
    width: float
    head: float
    legs: float
    skin: np.ndarray
    hair: np.ndarray
    hair_length: str
    upper: np.ndarray
    upper_second: np.ndarray
    pattern: str
    stripe_period: float
    long_sleeves: bool
    lower: np.ndarray
    lower_shape: str
    shoes: np.ndarray
    backpack: np.ndarray | None
    bag: np.ndarray | None
    bag_side: int
    hat: np.ndarray | None


@dataclass(frozen=True)
class _Camera:
    background: np.ndarray  # (H, 2W, 3) float32 scene, cropped at a random offset per image
    brightness: float
    cast: np.ndarray  # per-channel gain
    blur_passes: int
    noise: float
    scale: float
    x_bias: float
    occlusion: float


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    identities: int = 100,
    test_identities: int | None = None,
    cameras: int = 4,
    images_per_identity: int = 12,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    first_pid: int = 1,
    distractors: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticSummary:
    """Write a synthetic Market-1501-layout dataset under `out_dir` and return what it holds.

    Pids `first_pid ...` are split into train (the first `identities - test_identities`) and
    test (the rest); the two never share a person. Each identity is seen by 2..`cameras` cameras
    with `images_per_identity` images in all. For a test identity seen by k cameras, one camera is
    kept for the gallery only and one image from each of 1..k-1 of the others becomes a query, so
    every query has a gallery match in another camera. `distractors` extra gallery images with pid
    0000 (badly framed people, empty background) default to one per five test identities.
    `size` is (height, width).
    `workers` > 1 renders in that many spawned processes (call it from under
    `if __name__ == "__main__":` then); the files are byte-identical whatever the count.
    `progress(done, total)` is called as images land.

    `out_dir` gets a `.reidnet-synthetic` marker (reidnet.data.market.SYNTHETIC_MARKER) beside the
    three folders, so their images count as synthetic; the folders hold images only (code that
    opens every file of a folder keeps working). Files are rendered into a hidden
    temporary folder inside `out_dir` and the three folders are renamed into place at the end, so
    a crash while rendering never leaves a half-written dataset under the Market folder names.
    """
    if test_identities is None:
        test_identities = identities // 2
    request = _Request(
        identities=identities,
        test_identities=test_identities,
        cameras=cameras,
        images_per_identity=images_per_identity,
        size=tuple(size),
        seed=seed,
        first_pid=first_pid,
        distractors=test_identities // 5 if distractors is None else distractors,
        workers=workers,
    )
    request.check()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    jobs = _plan(request)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=out_dir))
    try:
        for subset in SUBSETS:
            (staging / subset).mkdir()
        _render_all(jobs, staging, request, progress)
        for subset in SUBSETS:
            target = out_dir / subset
            if target.is_dir():
                target.rmdir()  # known empty: _check_out_dir refused anything else
            (staging / subset).rename(target)
        _write_marker(out_dir, request)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = _summarise(out_dir, jobs, request.distractors)
    logger.debug("wrote %d synthetic images to %s", summary.images, out_dir)
    return summary


def _write_marker(out_dir: Path, request: _Request) -> None:
    """The file that makes `dataset stats` (and every count by source) call the folders synthetic.

    It records the generator's arguments, not the time or the worker count, so that a seed still
    gives byte-identical folders.
    """
    arguments = {k: v for k, v in dataclasses.asdict(request).items() if k != "workers"}
    record = {"generator": "reidnet dataset synth", "arguments": arguments}
    (out_dir / SYNTHETIC_MARKER).write_text(json.dumps(record, indent=2) + "\n")


@dataclass(frozen=True)
class _Request:
    """The arguments of one generate_synthetic_dataset call, defaults resolved."""

    identities: int
    test_identities: int
    cameras: int
    images_per_identity: int
    size: tuple[int, ...]
    seed: int
    first_pid: int
    distractors: int
    workers: int

    def check(self) -> None:
        """Refuse what cannot make a valid Market-1501 dataset, naming the argument and the fix."""
        identities = self.identities
        if identities < 2:
            raise ReidnetError(
                f"identities={identities}: need at least 2 (one for train, one for test); "
                "pass identities=2 or more"
            )
        if not 1 <= self.test_identities < identities:
            raise ReidnetError(
                f"test_identities={self.test_identities}: must be between 1 and identities-1 "
                f"({identities - 1}) so that train and test both have people"
            )
        if not 2 <= self.cameras <= MAX_CAMERAS:
            raise ReidnetError(
                f"cameras={self.cameras}: re-identification needs at least 2 cameras "
                f"(and Market-1501 names allow at most {MAX_CAMERAS}); pass cameras=2 or more"
            )
        if not 2 <= self.images_per_identity <= MAX_PER_PID:
            raise ReidnetError(
                f"images_per_identity={self.images_per_identity}: each person needs at least 2 "
                f"images (two cameras) and at most {MAX_PER_PID}; pass a value in that range"
            )
        if len(self.size) != 2 or self.size[0] < MIN_SIZE[0] or self.size[1] < MIN_SIZE[1]:
            raise ReidnetError(
                f"size={self.size}: (height, width) must be at least {MIN_SIZE} "
                "for a person to be drawn; pass e.g. size=(128, 64)"
            )
        if self.seed < 0:
            raise ReidnetError(f"seed={self.seed}: must be 0 or more")
        if self.first_pid < 1 or self.first_pid + identities - 1 > 9999:
            raise ReidnetError(
                f"first_pid={self.first_pid}: pids must stay within 1..9999 (4 digits; 0 means "
                f"distractor), so first_pid must be between 1 and {10000 - identities}"
            )
        if not 0 <= self.distractors <= MAX_PER_PID:
            raise ReidnetError(
                f"distractors={self.distractors}: must be between 0 and {MAX_PER_PID}"
            )
        if self.workers < 1:
            raise ReidnetError(f"workers={self.workers}: must be 1 or more")


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ReidnetError(f"out_dir {out_dir} is a file; choose a folder path")
    for subset in SUBSETS:
        folder = out_dir / subset
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ReidnetError(
                f"out_dir {out_dir} already holds a non-empty {subset}: "
                "choose an empty folder or delete it"
            )


# --- Planning: which file goes where, decided before any pixel is drawn -----------------------


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _frames(rng: np.random.Generator, count: int) -> np.ndarray:
    """Increasing 6-digit frame numbers, as if sampled from one walk past the camera."""
    gap = max(1, min(60, 998_000 // max(count, 1)))
    return rng.integers(0, 1000) + np.cumsum(rng.integers(1, gap + 1, size=count))


def _plan(request: _Request) -> list[_ImageJob]:
    train_count = request.identities - request.test_identities
    jobs: list[_ImageJob] = []
    for offset in range(request.identities):
        jobs += _plan_identity(
            request.first_pid + offset,
            offset >= train_count,
            request.cameras,
            request.images_per_identity,
            request.seed,
        )
    jobs += _plan_distractors(request.distractors, request.cameras, request.seed)
    return jobs


def _plan_identity(
    pid: int, is_test: bool, cameras: int, images: int, seed: int
) -> list[_ImageJob]:
    rng = _rng(seed, _PLAN, pid, 0)
    seen_count = int(rng.integers(2, min(cameras, images) + 1))
    seen = np.sort(rng.choice(cameras, size=seen_count, replace=False)) + 1
    per_camera = 1 + rng.multinomial(images - seen_count, rng.dirichlet(np.full(seen_count, 2.0)))
    query_cameras: set[int] = set()
    if is_test:
        # One camera stays gallery-only, so each query has a match seen from elsewhere.
        others = np.delete(seen, rng.integers(seen_count))
        chosen = rng.choice(others, size=int(rng.integers(1, seen_count)), replace=False)
        query_cameras = {int(camera) for camera in chosen}
    jobs, index = [], 0
    for camera, count in zip(seen.tolist(), per_camera.tolist(), strict=True):
        query_pick = int(rng.integers(count)) if camera in query_cameras else -1
        for position, frame in enumerate(_frames(rng, count).tolist()):
            if not is_test:
                subset = "bounding_box_train"
            else:
                subset = "query" if position == query_pick else "bounding_box_test"
            jobs.append(_ImageJob(subset, pid, camera, frame, index))
            index += 1
    return jobs


def _plan_distractors(count: int, cameras: int, seed: int) -> list[_ImageJob]:
    rng = _rng(seed, _PLAN, 0, 0)
    camera_of = rng.integers(1, cameras + 1, size=count)
    jobs = []
    for camera in range(1, cameras + 1):
        indices = np.flatnonzero(camera_of == camera).tolist()
        frames = _frames(rng, len(indices)).tolist()
        for index, frame in zip(indices, frames, strict=True):
            jobs.append(_ImageJob("bounding_box_test", 0, camera, frame, index))
    return jobs


def _summarise(out_dir: Path, jobs: Sequence[_ImageJob], distractors: int) -> SyntheticSummary:
    def counts(subset: str) -> SubsetCounts:
        chosen = [job for job in jobs if job.subset == subset]
        return SubsetCounts(
            images=len(chosen),
            identities=len({job.pid for job in chosen if job.pid > 0}),
            cameras=len({job.camera for job in chosen}),
        )

    return SyntheticSummary(
        out_dir=out_dir,
        train=counts("bounding_box_train"),
        gallery=counts("bounding_box_test"),
        query=counts("query"),
        distractors=distractors,
    )


# --- Rendering --------------------------------------------------------------------------------

_CHUNK = 64


def _render_all(
    jobs: Sequence[_ImageJob],
    staging: Path,
    request: _Request,
    progress: Callable[[int, int], None] | None,
) -> None:
    seed, size, workers = request.seed, request.size, request.workers
    total = len(jobs)
    chunks = [jobs[start : start + _CHUNK] for start in range(0, total, _CHUNK)]
    done = 0
    if progress is not None:
        progress(0, total)
    if workers <= 1:
        for chunk in chunks:
            done += _render_chunk(chunk, str(staging), seed, size)
            if progress is not None:
                progress(done, total)
        return
    # spawn, not fork: the caller may hold threads (torch, a web server) that fork would break.
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        futures = [pool.submit(_render_chunk, chunk, str(staging), seed, size) for chunk in chunks]
        for future in as_completed(futures):
            done += future.result()
            if progress is not None:
                progress(done, total)
    except BrokenProcessPool as error:
        raise ReidnetError(
            f"workers={workers}: a rendering process died. Worker processes re-import the calling "
            "script, so call generate_synthetic_dataset under `if __name__ == '__main__':`, "
            "or pass workers=1"
        ) from error
    finally:
        pool.shutdown(cancel_futures=True)


def _render_chunk(jobs: Sequence[_ImageJob], staging: str, seed: int, size: tuple[int, int]) -> int:
    for job in jobs:
        pixels = render_image(job.pid, job.index, job.camera, seed=seed, size=size)
        path = os.path.join(staging, job.subset, job.file_name)
        Image.fromarray(pixels).save(path, format="JPEG", quality=JPEG_QUALITY)
    return len(jobs)


def render_image(
    pid: int, index: int, camera: int, *, seed: int = 0, size: tuple[int, int] = (128, 64)
) -> np.ndarray:
    """One (height, width, 3) uint8 crop of person `pid` (0: a distractor) seen by `camera`."""
    height, width = size
    rng = _rng(seed, _IMAGE if pid > 0 else _DISTRACTOR, pid, index)
    scene = _camera(seed, camera, height, width)
    offset = int(rng.integers(0, width + 1))
    canvas = scene.background[:, offset : offset + width].copy()
    painter = _Painter(canvas)
    if pid > 0:
        _draw_person(painter, _identity(seed, pid), scene, rng, misframed=False)
    elif rng.random() < 0.6:
        _draw_person(painter, _random_identity(rng), scene, rng, misframed=True)
    if rng.random() < scene.occlusion:
        _draw_occluder(painter, rng)
    return _photograph(canvas, scene, rng)


@lru_cache(maxsize=4096)
def _identity(seed: int, pid: int) -> _Identity:
    return _random_identity(_rng(seed, _IDENTITY, pid, 0))


def _pick(rng: np.random.Generator, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    return np.array(palette[int(rng.integers(len(palette)))], dtype=np.float32)


def _random_identity(rng: np.random.Generator) -> _Identity:
    height, width, head, legs = BODY_SHAPES[int(rng.integers(len(BODY_SHAPES)))]
    jitter = rng.uniform(-0.03, 0.03, size=3).tolist()
    upper = int(rng.integers(len(UPPER_COLOURS)))
    second = (upper + int(rng.integers(1, len(UPPER_COLOURS)))) % len(UPPER_COLOURS)
    return _Identity(
        height=height * (1 + jitter[0]),
        width=width * (1 + jitter[1]),
        head=head * (1 + jitter[2]),
        legs=legs,
        skin=_pick(rng, SKIN_TONES),
        hair=_pick(rng, HAIR_TONES),
        hair_length=HAIR_LENGTHS[int(rng.choice(3, p=[0.45, 0.25, 0.30]))],
        upper=np.array(UPPER_COLOURS[upper], dtype=np.float32),
        upper_second=np.array(UPPER_COLOURS[second], dtype=np.float32),
        pattern=PATTERNS[int(rng.choice(4, p=[0.5, 0.2, 0.15, 0.15]))],
        stripe_period=float(rng.choice([0.035, 0.05, 0.07])),
        long_sleeves=bool(rng.random() < 0.6),
        lower=_pick(rng, LOWER_COLOURS),
        lower_shape=LOWER_SHAPES[int(rng.choice(3, p=[0.65, 0.2, 0.15]))],
        shoes=_pick(rng, SHOE_COLOURS),
        backpack=_pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.3 else None,
        bag=_pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.2 else None,
        bag_side=int(rng.choice([-1, 1])),
        hat=_pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.15 else None,
    )


@lru_cache(maxsize=256)
def _camera(seed: int, camera: int, height: int, width: int) -> _Camera:
    rng = _rng(seed, _CAMERA, camera, 0)
    return _Camera(
        background=_scene(rng, height, 2 * width),
        brightness=float(rng.uniform(0.7, 1.15)),
        cast=rng.uniform(0.85, 1.15, size=3).astype(np.float32),
        blur_passes=int(rng.integers(0, 3)),
        noise=float(rng.uniform(2.0, 7.0)),
        scale=float(rng.uniform(0.8, 0.92)),
        x_bias=float(rng.uniform(-0.04, 0.04)),
        occlusion=float(rng.uniform(0.05, 0.2)),
    )


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A camera's backdrop: wall gradient, floor below a horizon, a few structures, texture."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall_top, wall_bottom, floor_far, floor_near = _muted(rng, 4, 50, 210)
    horizon = float(rng.uniform(0.55, 0.8))
    wall = wall_top + (wall_bottom - wall_top) * ys
    floor_t = np.clip((ys - horizon) / (1 - horizon), 0, 1)
    floor = floor_far + (floor_near - floor_far) * floor_t
    scene = np.where(ys < horizon, wall, floor) * np.ones((1, width, 1), np.float32)
    horizon_row = int(horizon * height)
    for colour in _muted(rng, int(rng.integers(1, 5)), 30, 230):  # poles, doors, windows
        x0 = int(rng.integers(0, width))
        x1 = x0 + int(rng.integers(2, max(3, width // 5)))
        y0 = int(rng.integers(0, max(1, horizon_row - 4)))
        scene[y0:horizon_row, x0:x1] = colour
    coarse = rng.normal(0, 10, size=(max(2, height // 8), max(2, width // 8), 3))
    scene += _upsample(coarse.astype(np.float32), height, width)
    scene += rng.normal(0, 3, size=scene.shape).astype(np.float32)
    return _blur(scene, 1)


def _muted(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """Random colours pulled towards grey: streets and walls are rarely saturated."""
    grey = rng.uniform(low, high, size=(count, 1))
    tint = rng.uniform(-40, 40, size=(count, 3))
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def _upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w, 3) field, h and w >= 2, to (height, width, 3)."""
    # Elementwise on purpose: a BLAS product's summation order may vary with threads or alignment.

    def lerp(field: np.ndarray, size: int, axis: int) -> np.ndarray:
        small = field.shape[axis]
        position = np.linspace(0.0, small - 1.0, size, dtype=np.float32)
        low = np.minimum(position.astype(np.int64), small - 2)
        shape = [1, 1, 1]
        shape[axis] = size
        fraction = (position - low).astype(np.float32).reshape(shape)
        below, above = np.take(field, low, axis=axis), np.take(field, low + 1, axis=axis)
        return below + (above - below) * fraction

    return lerp(lerp(coarse.astype(np.float32), height, 0), width, 1)


class _Painter:
    """Anti-aliased shapes blended onto a float canvas, each computed only inside its box."""

    def __init__(self, canvas: np.ndarray):
        self.canvas = canvas
        self.height, self.width = canvas.shape[:2]
        self.ys, self.xs = _pixel_centres(self.height, self.width)

    def _window(self, top: float, bottom: float, left: float, right: float):
        y0, y1 = max(0, int(top) - 1), min(self.height, int(bottom) + 2)
        x0, x1 = max(0, int(left) - 1), min(self.width, int(right) + 2)
        if y0 >= y1 or x0 >= x1:
            return None
        return (slice(y0, y1), slice(x0, x1)), self.ys[y0:y1], self.xs[:, x0:x1]

    def _blend(self, window, coverage: np.ndarray, colour) -> None:
        """Coverage is the signed distance (pixels) inside the shape's edge: a 1-pixel soft ramp."""
        coverage += 0.5
        alpha = np.minimum(np.maximum(coverage, 0.0, out=coverage), 1.0, out=coverage)
        region = self.canvas[window]
        region += alpha[..., None] * (colour - region)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, colour) -> None:
        found = self._window(cy - ry, cy + ry, cx - rx, cx + rx)
        if found is None:
            return
        window, ys, xs = found
        norm = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
        self._blend(window, (1.0 - norm) * min(rx, ry), _colour_at(colour, ys, xs))

    def capsule(
        self, a: tuple[float, float], b: tuple[float, float], ra: float, rb: float, colour
    ) -> None:
        """A limb: segment a->b (y, x) thickened to radius ra at a and rb at b."""
        (ay, ax), (by, bx) = a, b
        r = max(ra, rb)
        found = self._window(min(ay, by) - r, max(ay, by) + r, min(ax, bx) - r, max(ax, bx) + r)
        if found is None:
            return
        window, ys, xs = found
        dy, dx = by - ay, bx - ax
        t = np.clip(((ys - ay) * dy + (xs - ax) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
        distance = np.sqrt((ys - ay - t * dy) ** 2 + (xs - ax - t * dx) ** 2)
        self._blend(window, ra + t * (rb - ra) - distance, _colour_at(colour, ys, xs))

    def trapezoid(
        self,
        top: float,
        bottom: float,
        cx: float,
        half_top: float,
        half_bottom: float,
        colour,
        radius: float = 0.0,
    ) -> None:
        """A torso, skirt or bag: horizontal edges, straight sides, optionally rounded corners."""
        half = max(half_top, half_bottom)
        found = self._window(top, bottom, cx - half, cx + half)
        if found is None:
            return
        window, ys, xs = found
        half_at = half_top + (half_bottom - half_top) * np.clip((ys - top) / (bottom - top), 0, 1)
        inside_x = half_at - np.abs(xs - cx)
        inside_y = np.minimum(ys - top, bottom - ys)
        qx, qy = radius - inside_x, radius - inside_y
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        distance = outside + np.minimum(np.maximum(qx, qy), 0) - radius
        self._blend(window, -distance, _colour_at(colour, ys, xs))


@lru_cache(maxsize=16)
def _pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def _colour_at(colour, ys: np.ndarray, xs: np.ndarray):
    """A fixed RGB, or a pattern: a function of the window's pixel coordinates."""
    return colour(ys, xs) if callable(colour) else colour


def _garment(identity: _Identity, cx: float, top: float, person_height: float):
    """The upper garment's colour: solid, or a stripe/check field anchored to the body."""
    if identity.pattern == "solid":
        return identity.upper
    period = identity.stripe_period * person_height
    first, second = identity.upper, identity.upper_second

    def field(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        rows = np.floor((ys - top) / period) % 2
        cols = np.floor((xs - cx) / period) % 2
        if identity.pattern == "horizontal":
            mask = rows * np.ones_like(cols)
        elif identity.pattern == "vertical":
            mask = cols * np.ones_like(rows)
        else:
            mask = (rows + cols) % 2
        return np.where(mask[..., None] > 0, second, first)

    return field


@dataclass(frozen=True)
class _Pose:
    """Where the person stands in this image and how: pixels, plus a viewpoint."""

    view: str
    facing: int  # side view: +1 walks right, -1 left
    cx: float
    top: float
    height: float
    stride: float  # leg spread, fraction of height
    swing: float  # arm swing, fraction of height


def _random_pose(
    identity: _Identity, scene: _Camera, rng: np.random.Generator, size, misframed: bool
) -> _Pose:
    image_height, image_width = size
    height = image_height * scene.scale * identity.height * rng.uniform(0.97, 1.03)
    height = min(height, 0.98 * image_height)
    cx = image_width * (0.5 + scene.x_bias + rng.uniform(-0.06, 0.06))
    top = (image_height - height) * rng.uniform(0.3, 0.7)
    if misframed:  # a detector's bad box: the person too big and off-centre
        height *= rng.uniform(1.5, 2.3)
        cx = image_width * rng.uniform(-0.1, 1.1)
        top = image_height * rng.uniform(-0.6, 0.1)
    view = VIEWS[int(rng.choice(3, p=[0.35, 0.35, 0.3]))]
    return _Pose(
        view=view,
        facing=int(rng.choice([-1, 1])),
        cx=float(cx),
        top=float(top),
        height=float(height),
        stride=float(rng.uniform(0.0, 0.12 if view == "side" else 0.05)),
        swing=float(rng.uniform(-0.06, 0.06)),
    )


def _draw_person(
    painter: _Painter,
    identity: _Identity,
    scene: _Camera,
    rng: np.random.Generator,
    misframed: bool,
) -> None:
    pose = _random_pose(identity, scene, rng, (painter.height, painter.width), misframed)
    h = pose.height
    side = pose.view == "side"
    head_h = 0.135 * identity.head * h
    shoulder_y = pose.top + head_h + 0.02 * h
    foot_y = pose.top + h - 0.02 * h
    hip_y = foot_y - identity.legs * h
    shoulder = 0.12 * h * identity.width * (0.62 if side else 1.0)
    waist = shoulder * 0.82
    if identity.backpack is not None and side:
        back = -pose.facing
        painter.trapezoid(
            shoulder_y + 0.02 * h,
            hip_y - 0.06 * h,
            pose.cx + back * shoulder * 1.25,
            0.05 * h,
            0.05 * h,
            identity.backpack,
            radius=0.02 * h,
        )
    _draw_legs(painter, identity, pose, hip_y, foot_y, waist)
    _draw_arms(painter, identity, pose, shoulder_y, hip_y, shoulder, behind=True)
    if identity.hair_length == "long" and pose.view != "back":
        painter.trapezoid(
            pose.top + 0.4 * head_h,
            shoulder_y + 0.08 * h,
            pose.cx,
            0.45 * head_h,
            0.5 * head_h,
            identity.hair,
            radius=0.02 * h,
        )
    garment = _garment(identity, pose.cx, shoulder_y, h)
    painter.trapezoid(
        shoulder_y, hip_y + 0.03 * h, pose.cx, shoulder, waist, garment, radius=0.035 * h
    )
    _draw_accessories(painter, identity, pose, shoulder_y, hip_y, shoulder)
    _draw_arms(painter, identity, pose, shoulder_y, hip_y, shoulder, behind=False)
    _draw_head(painter, identity, pose, head_h, shoulder_y)


def _draw_legs(
    painter: _Painter, identity: _Identity, pose: _Pose, hip_y: float, foot_y: float, waist: float
) -> None:
    h = pose.height
    radius = 0.05 * h * math.sqrt(identity.width)
    spread = pose.stride * h
    if pose.view == "side":
        hips = (pose.cx, pose.cx)
        feet = (pose.cx - spread, pose.cx + spread)
    else:
        hips = (pose.cx - 0.5 * waist, pose.cx + 0.5 * waist)
        feet = (hips[0] - spread, hips[1] + spread)
    covered = {"trousers": 1.0, "shorts": 0.35, "skirt": 0.0}[identity.lower_shape]
    for hip_x, foot_x in zip(hips, feet, strict=True):
        knee_y = hip_y + covered * (foot_y - hip_y)
        knee_x = hip_x + covered * (foot_x - hip_x)
        if covered < 1.0:
            painter.capsule(
                (hip_y, hip_x), (foot_y, foot_x), radius * 0.8, radius * 0.65, identity.skin
            )
        if covered > 0.0:
            painter.capsule(
                (hip_y, hip_x),
                (knee_y, knee_x),
                radius,
                radius * (0.85 if covered == 1.0 else 0.95),
                identity.lower,
            )
        shoe_x = foot_x + (0.03 * h * pose.facing if pose.view == "side" else 0.0)
        painter.ellipse(
            foot_y,
            shoe_x,
            0.025 * h,
            radius * (1.4 if pose.view == "side" else 1.0),
            identity.shoes,
        )
    if identity.lower_shape == "skirt":
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.2 * h,
            pose.cx,
            waist,
            waist * 1.45,
            identity.lower,
            radius=0.01 * h,
        )
    else:
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.07 * h,
            pose.cx,
            waist,
            waist,
            identity.lower,
            radius=0.01 * h,
        )


def _draw_arms(
    painter: _Painter,
    identity: _Identity,
    pose: _Pose,
    shoulder_y: float,
    hip_y: float,
    shoulder: float,
    behind: bool,
) -> None:
    """Front/back: both arms at the body sides. Side: the far arm behind, the near one in front."""
    h = pose.height
    radius = 0.035 * h * math.sqrt(identity.width)
    hand_y = hip_y + 0.04 * h
    if pose.view == "side":
        sign = -1.0 if behind else 1.0
        arms = [(pose.cx, pose.cx + sign * pose.swing * h * 1.5)]
    elif behind:
        return
    else:
        arms = [
            (pose.cx + sign * shoulder * 0.92, pose.cx + sign * (shoulder + radius * 0.5))
            for sign in (-1.0, 1.0)
        ]
    elbow_t = 1.0 if identity.long_sleeves else 0.45
    for shoulder_x, hand_x in arms:
        start, end = (shoulder_y + radius, shoulder_x), (hand_y, hand_x)
        painter.capsule(start, end, radius, radius * 0.8, identity.skin)
        sleeve_end = (
            start[0] + elbow_t * (end[0] - start[0]),
            start[1] + elbow_t * (end[1] - start[1]),
        )
        painter.capsule(start, sleeve_end, radius * 1.05, radius * 0.9, identity.upper)
        painter.ellipse(end[0], end[1], radius * 0.75, radius * 0.7, identity.skin)


def _draw_accessories(
    painter: _Painter,
    identity: _Identity,
    pose: _Pose,
    shoulder_y: float,
    hip_y: float,
    shoulder: float,
) -> None:
    h = pose.height
    if identity.backpack is not None:
        if pose.view == "back":
            painter.trapezoid(
                shoulder_y + 0.02 * h,
                hip_y - 0.03 * h,
                pose.cx,
                shoulder * 0.75,
                shoulder * 0.8,
                identity.backpack,
                radius=0.025 * h,
            )
        elif pose.view == "front":
            for sign in (-1.0, 1.0):
                x = pose.cx + sign * shoulder * 0.55
                painter.capsule(
                    (shoulder_y, x), (hip_y - 0.08 * h, x), 0.012 * h, 0.012 * h, identity.backpack
                )
        else:
            x = pose.cx - pose.facing * shoulder * 0.3
            painter.capsule(
                (shoulder_y, x),
                (hip_y - 0.1 * h, x - pose.facing * 0.02 * h),
                0.013 * h,
                0.013 * h,
                identity.backpack,
            )
    if identity.bag is not None:
        side = identity.bag_side if pose.view != "back" else -identity.bag_side
        if pose.view == "side":
            side = pose.facing * 0.2
        strap_top = (shoulder_y + 0.01 * h, pose.cx - side * shoulder * 0.6)
        bag_x = pose.cx + side * shoulder * 1.05
        painter.capsule(strap_top, (hip_y, bag_x), 0.01 * h, 0.01 * h, identity.bag)
        painter.trapezoid(
            hip_y - 0.02 * h,
            hip_y + 0.08 * h,
            bag_x,
            0.06 * h,
            0.065 * h,
            identity.bag,
            radius=0.015 * h,
        )


def _draw_head(
    painter: _Painter, identity: _Identity, pose: _Pose, head_h: float, shoulder_y: float
) -> None:
    h = pose.height
    cy = pose.top + head_h / 2
    ry, rx = head_h / 2, head_h * 0.4
    painter.capsule(
        (cy + ry * 0.6, pose.cx),
        (shoulder_y + 0.01 * h, pose.cx),
        rx * 0.45,
        rx * 0.5,
        identity.skin,
    )
    painter.ellipse(cy, pose.cx, ry, rx, identity.skin)
    if pose.view == "back":
        painter.ellipse(cy - ry * 0.05, pose.cx, ry * 1.02, rx * 1.05, identity.hair)
        if identity.hair_length != "short":
            length = 0.1 * h if identity.hair_length == "long" else 0.03 * h
            painter.trapezoid(
                cy, cy + ry + length, pose.cx, rx * 0.95, rx * 0.85, identity.hair, radius=0.01 * h
            )
    elif pose.view == "side":
        back_x = pose.cx - pose.facing * rx * 0.35
        painter.ellipse(cy - ry * 0.15, back_x, ry * 0.9, rx * 0.8, identity.hair)
        eye_x = pose.cx + pose.facing * rx * 0.55
        painter.ellipse(cy - ry * 0.05, eye_x, ry * 0.1, rx * 0.1, EYES)
    else:
        painter.ellipse(cy - ry * 0.55, pose.cx, ry * 0.5, rx * 1.02, identity.hair)
        for sign in (-1.0, 1.0):
            painter.ellipse(cy - ry * 0.05, pose.cx + sign * rx * 0.38, ry * 0.1, rx * 0.13, EYES)
        painter.ellipse(cy + ry * 0.45, pose.cx, ry * 0.06, rx * 0.3, MOUTH)
    if identity.hat is not None:
        painter.trapezoid(
            cy - ry * 1.15,
            cy - ry * 0.45,
            pose.cx,
            rx * 0.95,
            rx * 1.05,
            identity.hat,
            radius=0.01 * h,
        )
        brim_x = pose.cx + (pose.facing * rx * 0.4 if pose.view == "side" else 0.0)
        painter.trapezoid(cy - ry * 0.55, cy - ry * 0.4, brim_x, rx * 1.3, rx * 1.3, identity.hat)


def _draw_occluder(painter: _Painter, rng: np.random.Generator) -> None:
    """Something between the camera and the person: a bench, a car, a bin, another body part."""
    height, width = painter.height, painter.width
    colour = _pick(rng, OCCLUDER_COLOURS) * np.float32(rng.uniform(0.8, 1.2))
    if rng.random() < 0.6:
        top = height * (1 - rng.uniform(0.15, 0.4))
        left, right = sorted((rng.uniform(-0.3, 1.3, size=2) * width).tolist())
        right = max(right, left + 0.4 * width)
        painter.trapezoid(
            top,
            height + 4,
            (left + right) / 2,
            (right - left) / 2,
            (right - left) / 2,
            colour,
            radius=2.0,
        )
    else:
        span = width * rng.uniform(0.2, 0.4)
        cx = -2 + span / 2 if rng.random() < 0.5 else width + 2 - span / 2
        top = height * rng.uniform(-0.1, 0.5)
        painter.trapezoid(top, height + 4, cx, span / 2 + 2, span / 2 + 2, colour, radius=2.0)


def _photograph(canvas: np.ndarray, scene: _Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's light, colour cast, focus and sensor noise, then 8-bit pixels."""
    gain = scene.cast * np.float32(scene.brightness * rng.uniform(0.92, 1.08))
    image = _blur(canvas * gain, scene.blur_passes)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(scene.noise)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing with edge replication, repeated: a cheap Gaussian."""
    image = image.astype(np.float32, copy=False)
    for _ in range(passes):
        for axis in (0, 1):
            image = np.moveaxis(image, axis, 0)
            smooth = image * np.float32(0.5)
            smooth[1:] += image[:-1] * np.float32(0.25)
            smooth[:-1] += image[1:] * np.float32(0.25)
            smooth[0] += image[0] * np.float32(0.25)
            smooth[-1] += image[-1] * np.float32(0.25)
            image = np.moveaxis(smooth, 0, axis)
    return np.ascontiguousarray(image)
