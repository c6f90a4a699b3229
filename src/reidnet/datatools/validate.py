"""Dataset validation: decode every image and report what would break training or evaluation.

Errors stop a run (corrupt or empty images, no usable data, no query that can be evaluated);
warnings describe data that runs but deserves a look (skipped names, duplicates, identities with
too few images). Validation only reads: it never modifies, moves or deletes a file.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from reidnet.data.market import (
    DISTRACTOR_PID,
    FolderScan,
    ImageRecord,
    folder_fields,
    scan_folder,
)
from reidnet.protocol import same_camera_ignored

Severity = Literal["error", "warning", "info"]
_MAX_LISTED_PATHS = 20


@dataclass
class Finding:
    severity: Severity
    code: str
    message: str
    paths: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    findings: list[Finding] = field(default_factory=list)
    images_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when training and evaluation can run on this data."""
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def add(self, severity: Severity, code: str, message: str, paths=()) -> None:
        listed = [str(p) for p in paths]
        self.findings.append(Finding(severity, code, message, listed[:_MAX_LISTED_PATHS]))

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "images_checked": self.images_checked,
            "findings": [asdict(f) for f in self.findings],
        }


def validate_dataset(
    train_folders: Sequence = (),
    test_dir: str | Path | None = None,
    query_dir: str | Path | None = None,
    num_instances: int = 4,
    batch_size: int | None = None,
    same_camera_filter: bool = True,
    workers: int | None = None,
) -> ValidationReport:
    """Check a Market-1501-layout dataset: names, image decoding, identities and query coverage."""
    report = ValidationReport()
    scans: dict[str, list[FolderScan]] = {}
    train_groups: list[str] = []  # the identity group of each scanned train folder
    for subset, entries in (
        ("train", [folder_fields(f) for f in train_folders]),
        ("test", [(Path(test_dir), "real", "")] if test_dir is not None else []),
        ("query", [(Path(query_dir), "real", "")] if query_dir is not None else []),
    ):
        for folder, source, group in entries:
            scan = _scan_or_report(folder, source, subset, report)
            if scan is not None:
                scans.setdefault(subset, []).append(scan)
                if subset == "train":
                    train_groups.append(group)
    all_scans = [s for group in scans.values() for s in group]
    _check_images(all_scans, report, workers)
    _report_skipped_files(all_scans, report)
    if "train" in scans:
        _check_train(scans["train"], train_groups, num_instances, batch_size, report)
    if "query" in scans or "test" in scans:
        _check_query_gallery(
            scans.get("query", []), scans.get("test", []), same_camera_filter, report
        )
    return report


def _scan_or_report(folder: Path, source: str, subset: str, report: ValidationReport):
    if not folder.is_dir():
        report.add("error", "missing_folder", f"{subset} folder {folder} does not exist", [folder])
        return None
    scan = scan_folder(folder, source)
    if not scan.records:
        report.add(
            "error",
            "no_usable_images",
            f"{subset} folder {folder} holds no image named like Market-1501 "
            "(PPPP_cC..., e.g. 0002_c1s1_000451_03.jpg)",
            [folder],
        )
    return scan


def _check_images(scans: list[FolderScan], report: ValidationReport, workers: int | None) -> None:
    """Decode every image (a stat is not enough: truncated JPEGs only fail on decode)."""
    paths = [r.path for scan in scans for r in scan.records]
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(_inspect_image, paths))
    report.images_checked = len(paths)
    empty = [p for p, (problem, _) in zip(paths, outcomes, strict=True) if problem == "empty"]
    corrupt = [
        (p, problem)
        for p, (problem, _) in zip(paths, outcomes, strict=True)
        if problem not in (None, "empty")
    ]
    if empty:
        report.add(
            "error",
            "empty_file",
            f"{len(empty)} zero-byte image file(s): delete or replace them",
            empty,
        )
    if corrupt:
        detail = "; ".join(f"{p.name}: {why}" for p, why in corrupt[:5])
        report.add(
            "error",
            "corrupt_image",
            f"{len(corrupt)} image(s) cannot be decoded ({detail}): delete or re-export them",
            [p for p, _ in corrupt],
        )
    by_digest: dict[str, list[Path]] = defaultdict(list)
    for path, (problem, digest) in zip(paths, outcomes, strict=True):
        if problem is None:
            by_digest[digest].append(path)
    duplicates = [group for group in by_digest.values() if len(group) > 1]
    if duplicates:
        shown = "; ".join(" = ".join(p.name for p in group) for group in duplicates[:5])
        report.add(
            "warning",
            "duplicate_images",
            f"{len(duplicates)} group(s) of byte-identical images ({shown}); a duplicate across "
            "query and gallery inflates accuracy",
            [p for group in duplicates for p in group],
        )


def _inspect_image(path: Path) -> tuple[str | None, str | None]:
    """(problem or None, content digest) for one file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"unreadable ({error.strerror})", None
    if not data:
        return "empty", None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.width == 0 or image.height == 0:
                return "zero-size image", None
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        return "not an image PIL can read (unknown format, or a corrupt header)", None
    except Exception as error:  # PIL raises many types for bad data
        return str(error) or type(error).__name__, None
    return None, hashlib.blake2b(data, digest_size=16).hexdigest()


def _report_skipped_files(scans: list[FolderScan], report: ValidationReport) -> None:
    unparseable = [p for s in scans for p in s.unparseable]
    non_images = [p for s in scans for p in s.non_images]
    junk = [p for s in scans for p in s.junk]
    if unparseable:
        report.add(
            "warning",
            "unparseable_name",
            f"{len(unparseable)} image(s) are not named like Market-1501 (PPPP_cC...) and will "
            "be skipped: rename them as <pid>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg",
            unparseable,
        )
    if non_images:
        report.add(
            "warning",
            "non_image_file",
            f"{len(non_images)} file(s) are not jpg/jpeg/png/bmp images and will be ignored",
            non_images,
        )
    if junk:
        report.add(
            "info", "junk_skipped", f"{len(junk)} junk image(s) with pid -1 are skipped", junk
        )


def _check_train(
    scans: list[FolderScan],
    groups: list[str],
    num_instances: int,
    batch_size: int | None,
    report: ValidationReport,
) -> None:
    per_identity: dict[str, list[ImageRecord]] = defaultdict(list)
    distractors = 0
    for scan, group in zip(scans, groups, strict=True):
        for record in scan.records:
            if record.pid == DISTRACTOR_PID:
                distractors += 1
            else:
                per_identity[f"{group}:{record.pid}"].append(record)
    if distractors:
        report.add(
            "info",
            "train_distractors",
            f"{distractors} distractor image(s) (pid 0) are left out of training",
        )
    few = {k: v for k, v in per_identity.items() if len(v) < num_instances}
    if few:
        report.add(
            "warning",
            "few_images_per_identity",
            f"{len(few)} of {len(per_identity)} training identities have fewer than "
            f"num_instances={num_instances} images; the sampler draws them with replacement",
            [v[0].path for v in few.values()],
        )
    if batch_size is not None and per_identity:
        needed = max(1, batch_size // num_instances)
        if len(per_identity) < needed:
            report.add(
                "error",
                "too_few_identities",
                f"training has {len(per_identity)} identities but one batch needs {needed} "
                f"(dataset.batch_size {batch_size} // dataset.num_instances {num_instances}): "
                "lower dataset.batch_size or add identities",
            )


def _check_query_gallery(
    query_scans: list[FolderScan],
    gallery_scans: list[FolderScan],
    same_camera_filter: bool,
    report: ValidationReport,
) -> None:
    queries = [r for s in query_scans for r in s.records]
    gallery = [r for s in gallery_scans for r in s.records]
    if not queries or not gallery:
        return
    gallery_cameras: dict[int, set[int]] = defaultdict(set)
    for record in gallery:
        gallery_cameras[record.pid].add(record.camid)
    absent = [q for q in queries if q.pid not in gallery_cameras]
    same_camera_only = [
        q
        for q in queries
        if same_camera_filter
        and q.pid in gallery_cameras
        and all(same_camera_ignored(q.pid, q.camid, q.pid, c) for c in gallery_cameras[q.pid])
    ]
    _warn_skipped_queries(
        report,
        "query_identity_not_in_gallery",
        absent,
        "of {count} identities ({ids}) have no gallery image of the same identity: the "
        "evaluation skips them",
    )
    _warn_skipped_queries(
        report,
        "query_same_camera_only",
        same_camera_only,
        "of identities {ids} are matched in the gallery only by their own camera; the "
        "Market-1501 protocol removes those matches, so the evaluation skips these queries",
    )
    if len(absent) + len(same_camera_only) == len(queries):
        hint = (
            " For single-camera data set evaluate.same_camera_filter=false."
            if same_camera_only
            else " Check that query and gallery come from the same dataset."
        )
        report.add(
            "error",
            "no_valid_query",
            "no query can be evaluated: every query identity is missing from the gallery or "
            "seen there only by the query's own camera." + hint,
        )


def _warn_skipped_queries(
    report: ValidationReport, code: str, skipped: list[ImageRecord], why: str
) -> None:
    """One warning for the queries the evaluation skips: how many, whose, and `why` (a template
    of {count} and {ids}, the identities)."""
    if not skipped:
        return
    ids = sorted({q.pid for q in skipped})
    why = why.format(count=len(ids), ids=_ids(ids))
    report.add("warning", code, f"{len(skipped)} query image(s) {why}", [q.path for q in skipped])


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:10])
    return shown + (", ..." if len(ids) > 10 else "")
