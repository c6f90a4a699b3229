"""Planning: which file goes where, decided before any pixel is drawn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidnet.datatools.synthetic.request import SyntheticRequest
from reidnet.datatools.synthetic.streams import PLAN_STREAM, seeded_rng


@dataclass(frozen=True)
class ImageJob:
    """One file to write: pid 0 is a distractor, `index` numbers the images of that pid."""

    subset: str
    pid: int
    camera: int
    frame: int
    index: int

    @property
    def file_name(self) -> str:
        return f"{self.pid:04d}_c{self.camera}s1_{self.frame:06d}_00.jpg"


def _frames(rng: np.random.Generator, count: int) -> np.ndarray:
    """Increasing 6-digit frame numbers, as if sampled from one walk past the camera."""
    gap = max(1, min(60, 998_000 // max(count, 1)))
    return rng.integers(0, 1000) + np.cumsum(rng.integers(1, gap + 1, size=count))


def plan_images(request: SyntheticRequest) -> list[ImageJob]:
    train_count = request.identities - request.test_identities
    jobs: list[ImageJob] = []
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


def _plan_identity(pid: int, is_test: bool, cameras: int, images: int, seed: int) -> list[ImageJob]:
    rng = seeded_rng(seed, PLAN_STREAM, pid, 0)
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
            jobs.append(ImageJob(subset, pid, camera, frame, index))
            index += 1
    return jobs


def _plan_distractors(count: int, cameras: int, seed: int) -> list[ImageJob]:
    rng = seeded_rng(seed, PLAN_STREAM, 0, 0)
    camera_of = rng.integers(1, cameras + 1, size=count)
    jobs = []
    for camera in range(1, cameras + 1):
        indices = np.flatnonzero(camera_of == camera).tolist()
        frames = _frames(rng, len(indices)).tolist()
        for index, frame in zip(indices, frames, strict=True):
            jobs.append(ImageJob("bounding_box_test", 0, camera, frame, index))
    return jobs
