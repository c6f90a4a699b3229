"""`/api/v1/experiments/{id}/jobs`: submit, watch, cancel, resume, read logs, download files.

Routes with a `:verb` suffix are declared before `/{job_id}` so the verb is not read as part of
the job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Body, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from reidnet.config import shown
from reidnet.service import schemas
from reidnet.service.db import FINISHED_STATES, Job
from reidnet.service.deps import (
    CallerDep,
    OwnedExperiment,
    OwnedJob,
    ServiceState,
    SessionDep,
    StateDep,
)
from reidnet.service.errors import ServiceError
from reidnet.service.jobs import LOG_FILE
from reidnet.service.ownership import experiment_job
from reidnet.service.paging import PAGED, PageDep
from reidnet.service.reporting import job_progress
from reidnet.service.settings import ServiceSettings

router = APIRouter(prefix="/api/v1/experiments/{experiment_id}/jobs", tags=["jobs"])


def job_view(session: Session, state: ServiceState, job: Job) -> schemas.Job:
    folder = state.settings.job_dir(job.id)
    progress = job_progress(folder, job.action) if job.action == "train" else None
    return schemas.Job(
        id=job.id,
        experiment_id=job.experiment_id,
        action=job.action,
        parent_job_id=job.parent_job_id,
        status=job.status,
        specs=job.specs,
        created_at=job.created_at,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        queue_position=state.jobs.queue_position(session, job),
        progress=progress,
        result=job.result,
        exit_code=job.exit_code,
        error=job.error,
    )


@router.post("", status_code=201, response_model=schemas.JobCreated)
def submit_job(
    request: schemas.JobCreate, experiment: OwnedExperiment, session: SessionDep, state: StateDep
) -> schemas.JobCreated:
    """Queue a job. Specs are partial overrides, validated now (400 names the key).

    Evaluate, inference and export need `parent_job_id` (a train job) and use its checkpoint;
    they wait for it to end. A train job with a parent fine-tunes from the parent's checkpoint.
    """
    job = state.jobs.submit(
        session, experiment, request.action, request.parent_job_id, request.specs
    )
    return schemas.JobCreated(id=job.id)


@router.get("", response_model=list[schemas.Job], responses=PAGED)
def list_jobs(
    experiment: OwnedExperiment, session: SessionDep, state: StateDep, page: PageDep
) -> list[schemas.Job]:
    """The experiment's jobs in submission order, a page at a time."""
    jobs = page.rows(
        session,
        select(Job).where(Job.experiment_id == experiment.id).order_by(Job.created_at, Job.id),
    )
    return [job_view(session, state, job) for job in jobs]


@router.post("/{job_id}:cancel", response_model=schemas.Job)
def cancel_job(job: OwnedJob, session: SessionDep, state: StateDep) -> schemas.Job:
    """Cancel a queued job, or stop a running one (a train job writes a checkpoint first)."""
    return job_view(session, state, state.jobs.cancel(session, job))


@router.post("/{job_id}:resume", response_model=schemas.Job)
def resume_job(
    job: OwnedJob,
    session: SessionDep,
    state: StateDep,
    request: schemas.JobResume | None = Body(None),
) -> schemas.Job:
    """Queue a Canceled or Error job again; a train job continues from its latest checkpoint."""
    job = state.jobs.resume(session, job, request.specs if request else None)
    return job_view(session, state, job)


@router.get("/{job_id}:list_files", response_model=list[schemas.FileEntry], responses=PAGED)
def list_files(job: OwnedJob, state: StateDep, page: PageDep) -> list[schemas.FileEntry]:
    """The files in the job's folder, paths relative to it, folder by folder and by name, a page
    at a time."""
    folder = state.settings.job_dir(job.id)
    return [
        schemas.FileEntry(
            path=str(path.relative_to(folder)),
            size=info.st_size,
            modified=datetime.fromtimestamp(info.st_mtime, timezone.utc),
        )
        for path, info in page.items(_job_files(folder))
    ]


def _job_files(folder: Path) -> list[tuple[Path, os.stat_result]]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):  # atomic-write temporaries
                continue
            path = Path(root) / name
            info = path.lstat()
            if path.is_file() and not path.is_symlink():
                found.append((path, info))
    return found


class Download(FileResponse):
    """A file sent in 1 MiB reads (starlette's default is 64 KiB): each read is a hop to a worker
    thread and back, so a 120 MB archive takes 120 of them instead of 1,900, and the event loop
    stays free for the status polls around it."""

    chunk_size = 1024 * 1024


@router.get("/{job_id}:download", response_class=FileResponse)
def download(
    job: OwnedJob,
    state: StateDep,
    file: str | None = Query(None, description="A path from :list_files; else the folder."),
) -> FileResponse:
    """One file, or the job's folder: a tar.gz once the job has ended (built once; like a file
    it answers HTTP Range requests, to resume), a tar streamed as it is read while it runs."""
    folder = state.settings.job_dir(job.id)
    if file is not None:
        path = job_file(folder, file)
        return Download(path, filename=path.name, media_type="application/octet-stream")
    if not folder.is_dir():
        raise ServiceError(f"job {job.id!r} has no files yet (it is {job.status})", 404)
    if job.status not in FINISHED_STATES or job.finished_at is None:
        # Still changing: a plain tar streamed from the files as they are now, so a request
        # costs neither a temporary archive on disk nor compression time.
        return StreamingResponse(
            stream_folder_tar(folder, job.id),
            media_type="application/x-tar",
            headers={"Content-Disposition": f'attachment; filename="{job.action}-{job.id}.tar"'},
        )
    return Download(
        job_archive(state.settings, job),
        filename=f"{job.action}-{job.id}.tar.gz",
        media_type="application/gzip",
    )


def job_file(folder: Path, relative: str) -> Path:
    """A file inside the job folder, refusing any path that leads out of it."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if not relative or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ServiceError(f"file {shown(relative)} must be a relative path inside the job folder")
    path = folder.joinpath(*parts)
    try:
        found = path.is_file() and path.resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        raise ServiceError(f"no file {shown(relative)} in this job (see :list_files)", 404)
    return path


_ARCHIVE_LOCKS: dict[str, threading.Lock] = {}
_ARCHIVE_LOCKS_GUARD = threading.Lock()


def _archive_lock(job_id: str) -> threading.Lock:
    with _ARCHIVE_LOCKS_GUARD:
        return _ARCHIVE_LOCKS.setdefault(job_id, threading.Lock())


def job_archive(settings: ServiceSettings, job: Job) -> Path:
    """A tar.gz of an ended job's folder, built once and kept until the job runs again or the
    cache grows past `max_cache_bytes` (least recently downloaded archives go first).

    Concurrent requests wait for the one build (the load benchmark's 50 clients otherwise
    built the same 120 MB archive two dozen times at once).
    """
    stamp = int(job.finished_at.timestamp() * 1000)
    target = settings.cache_dir / f"{job.id}-{stamp}.tar.gz"
    with contextlib.suppress(FileNotFoundError):
        os.utime(target)  # a download: the modification time orders eviction
        return target
    with _archive_lock(job.id):
        if not target.is_file():
            _build_archive(settings, job, target)
    _evict_archives(settings, keep=target)
    return target


_EVICTION_LOCK = threading.Lock()


def _evict_archives(settings: ServiceSettings, keep: Path) -> None:
    """Remove cached archives, least recently downloaded first, until the cache fits in
    `max_cache_bytes`; `keep`, about to be sent, stays."""
    with _EVICTION_LOCK:
        archives = []
        for path in settings.cache_dir.glob("*.tar.gz"):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                archives.append((info.st_mtime_ns, path.name, path, info.st_size))
        total = sum(size for *_, size in archives)
        for _, _, path, size in sorted(archives):
            if total <= settings.max_cache_bytes:
                return
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _build_archive(settings: ServiceSettings, job: Job, target: Path) -> None:
    folder = settings.job_dir(job.id)
    for stale in settings.cache_dir.glob(f"{job.id}-*.tar.gz"):  # the job ran again since
        stale.unlink(missing_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for path, _ in _job_files(folder):
                tar.add(path, arcname=str(Path(job.id) / path.relative_to(folder)))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


_TAR_BLOCK = 512
_STREAM_CHUNK = 1024 * 1024


def stream_folder_tar(folder: Path, prefix: str) -> Iterator[bytes]:
    """A tar of `folder`'s files (under `prefix/`), produced piece by piece as it is sent.

    Each file is read as large as it was when opened: a log that grows meanwhile is cut
    there, one replaced meanwhile (atomic writes) is read whole from the old version.
    """
    for path, _ in _job_files(folder):
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below, across yields
        except OSError:  # removed since it was listed
            continue
        with stream:
            size = os.fstat(stream.fileno()).st_size
            info = tarfile.TarInfo(str(PurePosixPath(prefix, *path.relative_to(folder).parts)))
            info.size, info.mtime, info.mode = size, int(os.fstat(stream.fileno()).st_mtime), 0o644
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            remaining = size
            while remaining and (chunk := stream.read(min(_STREAM_CHUNK, remaining))):
                remaining -= len(chunk)
                yield chunk
            if remaining:  # truncated while read: keep the archive well formed
                yield bytes(remaining)
        if size % _TAR_BLOCK:
            yield bytes(_TAR_BLOCK - size % _TAR_BLOCK)
    yield bytes(2 * _TAR_BLOCK)  # the end-of-archive marker


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
async def job_logs(
    experiment_id: str,
    job_id: str,
    caller: CallerDep,
    state: StateDep,
    tail: int | None = Query(None, ge=1, le=1_000_000, description="Only the last N lines."),
    follow: bool = Query(False, description="Keep streaming until the job ends."),
):
    """The job's output (stdout and stderr of its process), as text."""

    # Looked up in a session of its own, not SessionDep's: a followed log streams for as long
    # as the job runs, and must not hold a pooled connection meanwhile.
    def find() -> Path:
        with state.database.session() as session:
            job = experiment_job(session, caller.id, experiment_id, job_id)
            return state.settings.job_dir(job.id) / LOG_FILE

    log_file = await run_in_threadpool(find)
    start = await run_in_threadpool(_tail_offset, log_file, tail)
    if not follow:
        text = await run_in_threadpool(_read_from, log_file, start)
        return PlainTextResponse(text.decode("utf-8", "replace"))
    return StreamingResponse(
        _follow(log_file, start, state, job_id), media_type="text/plain; charset=utf-8"
    )


def _tail_offset(log_file: Path, lines: int | None) -> int:
    """Byte offset where the last `lines` lines start (0 for the whole file)."""
    if lines is None or not log_file.is_file():
        return 0
    with open(log_file, "rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        position, found = end, 0
        while position > 0:
            step = min(65536, position)
            position -= step
            stream.seek(position)
            block = stream.read(step)
            if position + step == end and block.endswith(b"\n"):
                block = block[:-1]  # the final newline does not start a line
            for index in range(len(block) - 1, -1, -1):
                if block[index] == 0x0A:
                    found += 1
                    if found == lines:
                        return position + index + 1
    return 0


def _read_from(log_file: Path, offset: int) -> bytes:
    try:
        with open(log_file, "rb") as stream:
            stream.seek(offset)
            return stream.read()
    except FileNotFoundError:
        return b""


async def _follow(
    log_file: Path, offset: int, state: ServiceState, job_id: str
) -> AsyncIterator[bytes]:
    """New log bytes as they are written; ends once the job has ended and all is sent."""

    def job_ended() -> bool:
        with state.database.session() as session:
            job = session.get(Job, job_id)
            return job is None or job.status in FINISHED_STATES

    while True:
        ended = await run_in_threadpool(job_ended)  # checked before the read: nothing is lost
        chunk = await run_in_threadpool(_read_from, log_file, offset)
        if chunk:
            offset += len(chunk)
            yield chunk
        if ended:
            return
        if not chunk:
            await asyncio.sleep(0.5)


@router.get("/{job_id}", response_model=schemas.Job)
def get_job(job: OwnedJob, session: SessionDep, state: StateDep) -> schemas.Job:
    """Status, timestamps, progress (epoch, losses, images/s, ETA), result and error."""
    return job_view(session, state, job)


@router.delete("/{job_id}", response_model=schemas.Deleted)
def delete_job(job: OwnedJob, session: SessionDep, state: StateDep) -> schemas.Deleted:
    """Delete an ended job and its folder."""
    state.jobs.delete(session, job)
    return schemas.Deleted(id=job.id)
