"""Rendering the planned images: one crop from its seeded streams, in this process or in spawned
worker processes (byte-identical files whatever the count)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from reidnet.datatools.synthetic.camera import camera_of, photograph
from reidnet.datatools.synthetic.drawing import Painter, draw_occluder, draw_person
from reidnet.datatools.synthetic.people import identity_of, random_identity
from reidnet.datatools.synthetic.plan import ImageJob
from reidnet.datatools.synthetic.request import SyntheticRequest
from reidnet.datatools.synthetic.streams import DISTRACTOR_STREAM, IMAGE_STREAM, seeded_rng
from reidnet.errors import ReidnetError

JPEG_QUALITY = 90
_CHUNK = 64


def render_all(
    jobs: Sequence[ImageJob],
    staging: Path,
    request: SyntheticRequest,
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


def _render_chunk(jobs: Sequence[ImageJob], staging: str, seed: int, size: tuple[int, int]) -> int:
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
    rng = seeded_rng(seed, IMAGE_STREAM if pid > 0 else DISTRACTOR_STREAM, pid, index)
    scene = camera_of(seed, camera, height, width)
    offset = int(rng.integers(0, width + 1))
    canvas = scene.background[:, offset : offset + width].copy()
    painter = Painter(canvas)
    if pid > 0:
        draw_person(painter, identity_of(seed, pid), scene, rng, misframed=False)
    elif rng.random() < 0.6:
        draw_person(painter, random_identity(rng), scene, rng, misframed=True)
    if rng.random() < scene.occlusion:
        draw_occluder(painter, rng)
    return photograph(canvas, scene, rng)
