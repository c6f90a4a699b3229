"""Uploaded datasets: extract the archive safely, find the split folders, validate, count.

Runs in a background thread after the upload returns. The outcome is `pull_complete` with the
validator's findings and the statistics, or `invalid` with the reason; an invalid dataset keeps
nothing on disk.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from reidnet.data.market import find_split_folders
from reidnet.errors import ReidnetError
from reidnet.service.db import INVALID, PROCESSING, PULL_COMPLETE, Database, Dataset
from reidnet.service.settings import ServiceSettings
from reidnet.service.storage import ArchiveLimits, ArchiveRejected, extract_archive

logger = logging.getLogger(__name__)

_IGNORED_TOP_LEVEL = ("__MACOSX",)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def uploaded_archive(settings: ServiceSettings, dataset: Dataset) -> Path:
    return settings.uploads_dir / dataset.id


def locate_splits(root: Path) -> dict[str, str]:
    """Split folders (relative to `root`) at its top, or inside its one top-level folder."""
    found = find_split_folders(root)
    if not found:
        children = [p for p in root.iterdir() if p.is_dir() and p.name not in _IGNORED_TOP_LEVEL]
        if len(children) == 1:
            found = find_split_folders(children[0])
    return {split: str(path.relative_to(root)) for split, path in found.items()}


def analyse(root: Path, splits: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The validator's report (paths relative to the dataset) and the statistics."""
    from reidnet.data.market import dataset_stats
    from reidnet.datatools.validate import validate_dataset

    folders = {split: root / relative for split, relative in splits.items()}
    train = [folders["train"]] if "train" in folders else []
    report = validate_dataset(train, folders.get("test"), folders.get("query"))
    validation = report.as_dict()
    prefix = str(root) + "/"
    for finding in validation["findings"]:
        finding["paths"] = [p.removeprefix(prefix) for p in finding["paths"]]
        finding["message"] = finding["message"].replace(prefix, "")
    stats = None
    if report.ok:
        counts = dataset_stats(train, folders.get("test"), folders.get("query"))
        stats = {
            subset: {source: c.as_dict() for source, c in by_source.items()}
            for subset, by_source in counts.items()
        }
    return validation, stats


class DatasetProcessor:
    """One background worker that turns uploaded archives into validated datasets."""

    def __init__(self, database: Database, settings: ServiceSettings):
        self.database, self.settings = database, settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reidnet-datasets")

    def submit(self, dataset_id: str) -> None:
        self._pool.submit(self._process_logged, dataset_id)

    def recover(self) -> None:
        """After a restart: finish the datasets a previous server left processing, and remove
        what it left half written (partial uploads, staging folders, orphaned folders).

        A dataset killed while being extracted or validated still has its archive (it is
        removed only once the dataset's outcome is stored) and is processed again; one an older
        server left (it removed the archive after extracting) still has its extracted folder,
        and is validated again.
        """
        settings = self.settings
        resumed = []
        with self.database.session() as session:
            waiting = session.scalars(select(Dataset).where(Dataset.status == PROCESSING)).all()
            known = set(session.scalars(select(Dataset.id)).all())
            self._remove_leftovers(known, {dataset.id for dataset in waiting})
            for dataset in waiting:
                archive = uploaded_archive(settings, dataset)
                if archive.is_file() or (settings.datasets_dir / dataset.id).is_dir():
                    resumed.append(dataset.id)
                else:
                    dataset.status = INVALID
                    dataset.error = (
                        "the uploaded archive is gone (the server stopped before processing it "
                        "and the file was removed): upload it again"
                    )
        for dataset_id in resumed:
            self.submit(dataset_id)

    def _remove_leftovers(self, known: set[str], processing: set[str]) -> None:
        settings = self.settings
        for path in settings.uploads_dir.iterdir():
            if path.name not in processing:  # an upload cut off by a crash: it has no row
                logger.warning("removing %s, left by an interrupted upload", path)
                _remove(path)
        for path in settings.datasets_dir.iterdir():
            if path.name.startswith(".staging-") or path.name not in known:
                logger.warning("removing %s, left by an interrupted dataset", path)
                _remove(path)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _process_logged(self, dataset_id: str) -> None:
        try:
            self.process(dataset_id)
        except Exception:
            logger.exception("processing dataset %s failed", dataset_id)
            shutil.rmtree(self.settings.datasets_dir / dataset_id, ignore_errors=True)
            self._finish(dataset_id, INVALID, error="internal error while processing the upload")

    def process(self, dataset_id: str) -> None:
        """Extract (while the archive is there) and validate; the archive goes last."""
        archive = self.settings.uploads_dir / dataset_id
        try:
            self._extract_and_validate(dataset_id, archive)
        finally:
            archive.unlink(missing_ok=True)

    def _extract_and_validate(self, dataset_id: str, archive: Path) -> None:
        settings = self.settings
        root = settings.datasets_dir / dataset_id
        if archive.is_file():
            shutil.rmtree(root, ignore_errors=True)
            limits = ArchiveLimits(settings.max_dataset_bytes, settings.max_dataset_files)
            try:
                extract_archive(archive, root, limits)
            except ArchiveRejected as error:
                self._finish(dataset_id, INVALID, error=f"archive rejected: {error}")
                return
        try:
            splits = locate_splits(root)
            if not splits:
                raise ReidnetError(
                    "the archive holds none of bounding_box_train, bounding_box_test, query (or "
                    "TAO's sample_train, sample_test, sample_query), at its top or in its one "
                    "top-level folder"
                )
            validation, stats = analyse(root, splits)
        except ReidnetError as error:
            shutil.rmtree(root, ignore_errors=True)
            self._finish(dataset_id, INVALID, error=str(error))
            return
        if not validation["ok"]:
            shutil.rmtree(root, ignore_errors=True)
            codes = ", ".join(f["code"] for f in validation["findings"] if f["severity"] == "error")
            self._finish(
                dataset_id,
                INVALID,
                splits=splits,
                validation=validation,
                error=f"the dataset cannot be used ({codes}): see validation.findings",
            )
            return
        self._finish(dataset_id, PULL_COMPLETE, splits=splits, validation=validation, stats=stats)

    def _finish(self, dataset_id: str, status: str, **values: Any) -> None:
        with self.database.session() as session:
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:  # deleted while processing
                shutil.rmtree(self.settings.datasets_dir / dataset_id, ignore_errors=True)
                return
            dataset.status = status
            for key, value in values.items():
                setattr(dataset, key, value)
        logger.info("dataset %s: %s", dataset_id, status)
