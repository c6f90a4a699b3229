"""generate_synthetic_dataset: plan, render into a hidden folder, rename the Market-1501 folders
into place, mark the root as synthetic."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reidnet.data.market import SYNTHETIC_MARKER, SubsetCounts
from reidnet.datatools.synthetic.plan import ImageJob, plan_images
from reidnet.datatools.synthetic.render import render_all
from reidnet.datatools.synthetic.request import SyntheticRequest
from reidnet.errors import ReidnetError

logger = logging.getLogger(__name__)

SUBSETS = ("bounding_box_train", "bounding_box_test", "query")


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
    request = SyntheticRequest.from_arguments(
        identities=identities,
        test_identities=test_identities,
        cameras=cameras,
        images_per_identity=images_per_identity,
        size=size,
        seed=seed,
        first_pid=first_pid,
        distractors=test_identities // 5 if distractors is None else distractors,
        workers=workers,
    )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    jobs = plan_images(request)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=out_dir))
    try:
        for subset in SUBSETS:
            (staging / subset).mkdir()
        render_all(jobs, staging, request, progress)
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


def _write_marker(out_dir: Path, request: SyntheticRequest) -> None:
    """The file that makes `dataset stats` (and every count by source) call the folders synthetic.

    It records the generator's arguments, not the time or the worker count, so that a seed still
    gives byte-identical folders.
    """
    arguments = request.model_dump(exclude={"workers"})
    record = {"generator": "reidnet dataset synth", "arguments": arguments}
    (out_dir / SYNTHETIC_MARKER).write_text(json.dumps(record, indent=2) + "\n")


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


def _summarise(out_dir: Path, jobs: Sequence[ImageJob], distractors: int) -> SyntheticSummary:
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
