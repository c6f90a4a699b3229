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
    from reidnet.data.validate import validate_dataset

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
        """Process again the uploads a previous server left half done."""
        with self.database.session() as session:
            waiting = session.scalars(select(Dataset).where(Dataset.status == PROCESSING)).all()
            for dataset in waiting:
                if uploaded_archive(self.settings, dataset).is_file():
                    self.submit(dataset.id)
                else:
                    dataset.status = INVALID
                    dataset.error = (
                        "the server restarted before the upload was stored: upload it again"
                    )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _process_logged(self, dataset_id: str) -> None:
        try:
            self.process(dataset_id)
        except Exception:
            logger.exception("processing dataset %s failed", dataset_id)
            self._finish(dataset_id, INVALID, error="internal error while processing the upload")

    def process(self, dataset_id: str) -> None:
        settings = self.settings
        archive = settings.uploads_dir / dataset_id
        root = settings.datasets_dir / dataset_id
        shutil.rmtree(root, ignore_errors=True)
        limits = ArchiveLimits(settings.max_dataset_bytes, settings.max_dataset_files)
        try:
            extract_archive(archive, root, limits)
        except ArchiveRejected as error:
            archive.unlink(missing_ok=True)
            self._finish(dataset_id, INVALID, error=f"archive rejected: {error}")
            return
        archive.unlink(missing_ok=True)
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
