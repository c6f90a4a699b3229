"""`/api/v1/datasets`: upload an archive, watch it being extracted and validated, list, delete."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError
from sqlalchemy import select

from reidnet.service import schemas
from reidnet.service.auth import Caller
from reidnet.service.db import PROCESSING, Dataset, Experiment, new_id
from reidnet.service.deps import CallerDep, OwnedDataset, ServiceState, SessionDep, StateDep
from reidnet.service.errors import ServiceError
from reidnet.service.paging import PAGED, PageDep
from reidnet.service.storage import (
    ARCHIVE_SUFFIXES,
    MultipartUpload,
    UploadRejected,
    check_declared_length,
)

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])


@router.post("", status_code=201, response_model=schemas.DatasetCreated)
async def upload_dataset(
    request: Request, caller: CallerDep, state: StateDep
) -> schemas.DatasetCreated:
    """Upload a .tar, .tar.gz or .zip (multipart part `file`, optional `name`).

    The archive holds the train/test/query folders under Market-1501's names (bounding_box_train,
    bounding_box_test, query) or TAO's (sample_train, sample_test, sample_query), at its top or
    in one top-level folder. Extraction and validation run in the background: poll the dataset
    until its status is `pull_complete` or `invalid`.
    """
    settings = state.settings
    check_declared_length(request.headers.get("content-length"), settings.max_upload_bytes)
    dataset_id = new_id()
    target = settings.uploads_dir / dataset_id
    upload = MultipartUpload(
        request.headers.get("content-type", ""), target, settings.max_upload_bytes
    )
    try:
        async for chunk in request.stream():
            await run_in_threadpool(upload.write, chunk)
        received = await run_in_threadpool(upload.finish)
    except MultipartParseError as error:
        upload.close()
        target.unlink(missing_ok=True)
        raise UploadRejected(f"the multipart body is malformed ({error})") from None
    except BaseException:
        upload.close()
        target.unlink(missing_ok=True)
        raise
    name = received.fields.get("name") or _stem(received.filename)
    if not 1 <= len(name) <= 200:
        target.unlink(missing_ok=True)
        raise UploadRejected("name must be 1 to 200 characters")
    await run_in_threadpool(_add_dataset, state, caller, dataset_id, name, received)
    state.datasets.submit(dataset_id)
    return schemas.DatasetCreated(id=dataset_id, status=PROCESSING)


def _stem(filename: str) -> str:
    lowered = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _add_dataset(state: ServiceState, caller: Caller, dataset_id: str, name: str, received):
    with state.database.session() as session:
        session.add(
            Dataset(
                id=dataset_id,
                owner_id=caller.id,
                name=name,
                status=PROCESSING,
                archive_name=received.filename,
                archive_bytes=received.size,
                splits={},
            )
        )


@router.get("", response_model=list[schemas.Dataset], responses=PAGED)
def list_datasets(caller: CallerDep, session: SessionDep, page: PageDep) -> list[Dataset]:
    """The caller's datasets, newest first, a page at a time."""
    return page.owned_newest_first(session, Dataset, caller.id)


@router.get("/{dataset_id}", response_model=schemas.Dataset)
def get_dataset(dataset: OwnedDataset) -> Dataset:
    """Status, split folders, the validator's findings and the statistics."""
    return dataset


@router.delete("/{dataset_id}", response_model=schemas.Deleted)
def delete_dataset(
    dataset: OwnedDataset, caller: CallerDep, session: SessionDep, state: StateDep
) -> schemas.Deleted:
    """Delete a dataset no experiment uses, with its files."""
    dataset_id = dataset.id
    if dataset.status == PROCESSING:
        raise ServiceError(f"dataset {dataset_id!r} is still processing: delete it after", 409)
    experiments = session.scalars(select(Experiment).where(Experiment.owner_id == caller.id))
    for experiment in experiments:
        if dataset_id in (experiment.train_datasets or []) or dataset_id == experiment.eval_dataset:
            raise ServiceError(
                f"dataset {dataset_id!r} is used by experiment {experiment.id!r}: remove it from "
                "the experiment (PATCH) or delete the experiment first",
                409,
            )
    session.delete(dataset)
    session.commit()
    shutil.rmtree(state.settings.datasets_dir / dataset_id, ignore_errors=True)
    return schemas.Deleted(id=dataset_id)
