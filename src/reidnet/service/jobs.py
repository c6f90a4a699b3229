"""Jobs: planning a job's spec, reporting its progress, and the FIFO scheduler that runs them.

A job runs exactly what the CLI runs, `python -m reidnet <action> -e spec.yaml`, in its own folder
and its own process group. The `JobManager` owns every state change (submit, start, finish,
cancel, resume, delete) under one lock, starts queued jobs in submission order up to `max_jobs`,
and recovers after a restart. Processes are started and stopped through a `JobExecutor`
(reidnet.service.executor): a child process here, or a Ray job (`--executor ray`), whose jobs
outlive the server and are watched again by the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reidnet.config import deep_merge
from reidnet.contracts import (
    EVALUATION_FILE,
    LATEST_CHECKPOINT,
    STATUS_FILE,
    TrainingStatus,
    action_dir,
    epoch_checkpoints,
)
from reidnet.errors import ReidnetError
from reidnet.service import specs as job_specs
from reidnet.service.db import (
    CANCELED,
    DONE,
    ERROR,
    FINISHED_STATES,
    PENDING,
    PULL_COMPLETE,
    RUNNING,
    Database,
    Dataset,
    Experiment,
    Job,
    new_id,
    utcnow,
)
from reidnet.service.errors import ServiceError, not_found
from reidnet.service.executor import (
    Ended,
    ExecutorUnavailable,
    JobExecutor,
    Launch,
    executor_for,
)
from reidnet.service.schemas import JobProgress
from reidnet.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

CHILD_ACTIONS = ("evaluate", "inference", "export")
SPEC_FILE, LOG_FILE = "spec.yaml", "log.txt"
RESTARTED = (
    "server restarted while the job was running: its process was stopped; resume the job to "
    "continue from its latest checkpoint"
)
LAUNCH_RETRY_SECONDS = 10.0  # between tries to reach an executor that did not answer
STOPPED = (
    "server stopped while the job was running; resume the job to continue from its latest "
    "checkpoint"
)


# ---------------------------------------------------------------------------------------------
# Planning: the spec a job runs


def job_dir(settings: ServiceSettings, job_id: str) -> Path:
    return settings.jobs_dir / job_id


def train_checkpoint(train_dir: Path) -> Path | None:
    """A train job's checkpoint: the latest one, else its last epoch checkpoint."""
    latest = train_dir / LATEST_CHECKPOINT
    if latest.is_file():
        return latest
    epochs = epoch_checkpoints(train_dir)
    return epochs[-1] if epochs else None


def owned_job(session: Session, owner_id: int, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner_id:
        raise not_found("job", job_id)
    return job


def owned_dataset(session: Session, owner_id: int, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != owner_id:
        raise not_found("dataset", dataset_id)
    return dataset


def dataset_folders(settings: ServiceSettings, dataset: Dataset) -> dict[str, str]:
    root = settings.datasets_dir / dataset.id
    return {split: str(root / relative) for split, relative in dataset.splits.items()}


def _ready_dataset(session: Session, settings: ServiceSettings, owner_id: int, dataset_id: str):
    dataset = owned_dataset(session, owner_id, dataset_id)
    if dataset.status != PULL_COMPLETE:
        raise ServiceError(
            f"dataset {dataset_id!r} is {dataset.status}, not pull_complete: wait for it "
            "(GET /api/v1/datasets/{id}) or fix the findings it lists and upload again",
            409 if dataset.status == "processing" else 400,
        )
    return dataset_folders(settings, dataset)


@dataclass
class JobPlan:
    specs: dict[str, Any]  # the user's overrides plus what the job inherited: stored with it
    spec: dict[str, Any]  # what the job runs, server paths included


def plan_job(
    session: Session,
    settings: ServiceSettings,
    experiment: Experiment,
    action: str,
    parent_job_id: str | None,
    user_specs: Any,
    job_id: str,
    launching: bool = False,
) -> JobPlan:
    """Check a job request and resolve its spec. Raises ServiceError (400/404/409).

    At submission the parent's checkpoint may not exist yet (the job waits for its parent);
    `launching` requires it.
    """
    overrides = job_specs.check_user_specs(user_specs)
    owner = experiment.owner_id
    parent = owned_job(session, owner, parent_job_id) if parent_job_id else None
    if parent is not None and parent.action != "train":
        raise ServiceError(
            f"parent job {parent.id!r} is a {parent.action} job: a parent must be a train job "
            "(its checkpoint is what this job uses)"
        )
    if action in CHILD_ACTIONS and parent is None:
        raise ServiceError(
            f"a {action} job needs parent_job_id: the train job whose checkpoint it uses"
        )
    source = parent
    if source is None and action == "train" and experiment.base_experiment:
        source = owned_job(session, owner, experiment.base_experiment)
    specs = deep_merge(job_specs.inherited_specs(source.specs if source else None), overrides)
    paths = job_specs.JobPaths(job_dir(settings, job_id), train_dirs=[])
    _plan_data(session, settings, experiment, action, paths)
    if source is not None:
        checkpoint = _source_checkpoint(settings, source, launching)
        if action == "train":
            paths.pretrained = checkpoint
        else:
            paths.checkpoint = checkpoint
    spec = job_specs.resolved_spec(action, specs, paths)
    job_specs.validate_job_spec(action, spec)
    return JobPlan(specs, spec)


def _plan_data(session, settings, experiment: Experiment, action: str, paths) -> None:
    owner = experiment.owner_id
    if action == "train":
        if not experiment.train_datasets:
            raise ServiceError(
                f"experiment {experiment.id!r} has no train_datasets: PATCH it with the ids of "
                "uploaded datasets"
            )
        for dataset_id in experiment.train_datasets:
            folders = _ready_dataset(session, settings, owner, dataset_id)
            if "train" not in folders:
                raise ServiceError(
                    f"dataset {dataset_id!r} has no training folder (bounding_box_train or "
                    "sample_train): it can only be an eval_dataset"
                )
            paths.train_dirs.append(folders["train"])
    candidates = [experiment.eval_dataset] if experiment.eval_dataset else []
    candidates += list(experiment.train_datasets or [])
    for dataset_id in candidates:
        folders = _ready_dataset(session, settings, owner, dataset_id)
        if "test" in folders and "query" in folders:
            paths.test_dir, paths.query_dir = folders["test"], folders["query"]
            break
        if dataset_id == experiment.eval_dataset:
            raise ServiceError(
                f"eval_dataset {dataset_id!r} needs both a gallery folder (bounding_box_test or "
                "sample_test) and a query folder (query or sample_query)"
            )
    if action in ("evaluate", "inference") and paths.query_dir is None:
        raise ServiceError(
            f"a {action} job needs query and gallery images: set the experiment's eval_dataset "
            "to a dataset with query and gallery folders"
        )


def _source_checkpoint(settings: ServiceSettings, source: Job, launching: bool) -> str:
    train_dir = action_dir(job_dir(settings, source.id), "train")
    found = train_checkpoint(train_dir)
    if found is not None:
        return str(found)
    if launching:
        raise ServiceError(
            f"train job {source.id!r} ended {source.status} without writing a checkpoint"
        )
    return str(train_dir / LATEST_CHECKPOINT)


# ---------------------------------------------------------------------------------------------
# What a job reports: progress, result, error


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def training_status(folder: Path) -> TrainingStatus | None:
    """The status.json the trainer of a train job writes after each epoch (None before the
    first, or when it is unreadable: a job view must not fail over it)."""
    try:
        return TrainingStatus.read(action_dir(folder, "train") / STATUS_FILE)
    except ReidnetError as error:
        logger.warning("%s", error)
        return None


def job_progress(folder: Path, action: str) -> JobProgress | None:
    """A train job's progress from its status.json."""
    status = training_status(folder) if action == "train" else None
    if status is None:
        return None
    figures = status.progress().model_dump()
    figures["validation"] = _metrics(figures["validation"])
    return JobProgress(**figures)


_METRIC_KEYS = ("mAP", "rank-1", "rank-5", "rank-10", "mINP", "num_valid_queries", "re_ranking")


def _metrics(values: Any) -> dict[str, Any] | None:
    if not isinstance(values, dict):
        return None
    return {k: values[k] for k in _METRIC_KEYS if k in values}


def job_result(folder: Path, action: str) -> dict[str, Any] | None:
    """What a finished job produced: metrics for train/evaluate, the files of the others."""
    if action == "train":
        status = training_status(folder)
        checkpoint = train_checkpoint(action_dir(folder, "train"))
        if status is None and checkpoint is None:
            return None
        return {
            "epochs_completed": status.epoch if status else None,
            "checkpoint": _relative(checkpoint, folder),
            **(_metrics(status.validation if status else None) or {}),
        }
    if action == "evaluate":
        return _metrics(_read_json(action_dir(folder, "evaluate") / EVALUATION_FILE))
    outputs = action_dir(folder, action)
    if not outputs.is_dir():
        return None
    return {"files": sorted(_relative(p, folder) for p in outputs.rglob("*") if p.is_file())}


def _relative(path: Path | None, folder: Path) -> str | None:
    return str(path.relative_to(folder)) if path is not None else None


def error_from_log(log_file: Path, exit_code: int | None) -> str:
    """The CLI's `error: ...` message, else the exit status and the log's last lines."""
    try:
        with open(log_file, "rb") as stream:
            stream.seek(max(0, stream.seek(0, os.SEEK_END) - 16384))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    marker = text.rfind("error: ")
    if marker >= 0 and (marker == 0 or text[marker - 1] == "\n"):
        return text[marker + len("error: ") :].strip()[:4000]
    how = f"exited with status {exit_code}"
    if exit_code is None:
        how = "ended without an exit status"
    elif exit_code < 0:
        try:
            how = f"killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"killed by signal {-exit_code}"
    tail = "\n".join(text.strip().splitlines()[-15:])
    return f"the job process {how}" + (f"; last log lines:\n{tail}" if tail else "")


# ---------------------------------------------------------------------------------------------
# The manager


class JobManager:
    """Every job state change, under one lock; a thread starts queued jobs and reaps ended ones."""

    def __init__(
        self,
        database: Database,
        settings: ServiceSettings,
        executor: JobExecutor | None = None,
    ):
        self.database, self.settings = database, settings
        self.executor = executor or executor_for(settings)
        self._lock = threading.RLock()
        self._launch_paused_until = 0.0  # after the executor could not be reached
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="reidnet-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler and every running job (they checkpoint), marking them Error.

        Jobs that outlive the server (Ray jobs) run on, for the next server to watch.
        """
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock, self.database.session() as session:
            running = [
                job
                for job in session.scalars(select(Job).where(Job.status == RUNNING)).all()
                if not self.executor.outlives_server(job.handle)
            ]
            for job in running:
                self.executor.stop(job.handle, self.settings.cancel_grace_seconds)
            deadline = time.monotonic() + self.settings.cancel_grace_seconds + 5
            for job in running:
                ended = self.executor.poll(job.handle)
                while ended is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                    ended = self.executor.poll(job.handle)
                code = ended.exit_code if ended else None
                if code == 0:
                    self._mark_ended(job, DONE, code, None)
                else:
                    self._mark_ended(job, ERROR, code, STOPPED)

    def recover(self) -> None:
        """After a restart: watch again the jobs that outlived the previous server; stop the
        others it left running and mark them Error."""
        with self._lock, self.database.session() as session:
            for job in session.scalars(select(Job).where(Job.status == RUNNING)).all():
                if job.handle and self.executor.outlives_server(job.handle):
                    logger.info("job %s outlived the previous server: watching it again", job.id)
                    continue
                if job.handle:
                    folder = job_dir(self.settings, job.id)
                    grace = self.settings.cancel_grace_seconds
                    self.executor.reap_orphan(job.handle, folder, grace)
                self._mark_ended(job, ERROR, None, RESTARTED)
                logger.warning("job %s was running when the server stopped: marked Error", job.id)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("job scheduler step failed")
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()

    # -- scheduling --------------------------------------------------------------------------

    def tick(self) -> None:
        """Reap ended jobs, then start queued ones in order while slots are free."""
        with self._lock, self.database.session() as session:
            running = session.scalars(select(Job).where(Job.status == RUNNING)).all()
            active = len(running)
            for job in running:
                ended = self.executor.poll(job.handle)
                if ended is not None:
                    self._finish(job, ended)
                    active -= 1
            session.flush()
            pending = session.scalars(
                select(Job).where(Job.status == PENDING).order_by(Job.seq)
            ).all()
            for job in pending:
                if active >= self.settings.max_jobs or time.monotonic() < self._launch_paused_until:
                    break
                if self._waits_for_parent(session, job):
                    continue
                if self._launch(session, job):
                    active += 1

    def _waits_for_parent(self, session: Session, job: Job) -> bool:
        if not job.parent_job_id:
            return False
        parent = session.get(Job, job.parent_job_id)
        return parent is not None and parent.status not in FINISHED_STATES

    def _launch(self, session: Session, job: Job) -> bool:
        folder = job_dir(self.settings, job.id)
        try:
            experiment = session.get(Experiment, job.experiment_id)
            plan = plan_job(
                session,
                self.settings,
                experiment,
                job.action,
                job.parent_job_id,
                job.specs,
                job.id,
                launching=True,
            )
        except ReidnetError as error:
            self._mark_ended(job, ERROR, None, f"the job could not start: {error}")
            return False
        folder.mkdir(parents=True, exist_ok=True)
        spec_file = folder / SPEC_FILE
        spec_file.write_text(yaml.safe_dump(plan.spec, sort_keys=False))
        log_file = folder / LOG_FILE
        with open(log_file, "a") as log:
            log.write(f"==== {job.action} job {job.id} started {utcnow().isoformat()} ====\n")
        launch = Launch(job.id, job.action, folder, spec_file, log_file, seq=job.seq)
        try:
            job.handle = self.executor.launch(launch)
        except ReidnetError as error:
            self._mark_ended(job, ERROR, None, f"the job could not start: {error}")
            return False
        except ExecutorUnavailable as error:
            self._launch_paused_until = time.monotonic() + LAUNCH_RETRY_SECONDS
            logger.warning(
                "job %s stays queued: %s (next try in %g s)", job.id, error, LAUNCH_RETRY_SECONDS
            )
            return False
        job.status, job.started_at = RUNNING, utcnow()
        job.finished_at, job.exit_code, job.error, job.result = None, None, None, None
        logger.info("job %s (%s) started", job.id, job.action)
        return True

    def _finish(self, job: Job, ended: Ended) -> None:
        code = ended.exit_code
        if job.cancel_requested:
            self._mark_ended(job, CANCELED, code, None)
        elif code == 0 and ended.error is None:
            self._mark_ended(job, DONE, code, None)
        else:
            log_file = job_dir(self.settings, job.id) / LOG_FILE
            self._mark_ended(job, ERROR, code, ended.error or error_from_log(log_file, code))
        logger.info("job %s ended: %s", job.id, job.status)

    def _mark_ended(self, job: Job, status: str, code: int | None, error: str | None) -> None:
        job.status, job.exit_code, job.error = status, code, error
        job.finished_at = utcnow()
        job.cancel_requested = False
        job.result = job_result(job_dir(self.settings, job.id), job.action)

    # -- requests from the API ---------------------------------------------------------------

    def submit(
        self,
        session: Session,
        experiment: Experiment,
        action: str,
        parent_job_id: str | None,
        user_specs: Any,
    ) -> Job:
        job = Job(
            id=new_id(),
            experiment_id=experiment.id,
            owner_id=experiment.owner_id,
            action=action,
            parent_job_id=parent_job_id,
        )
        plan = plan_job(
            session, self.settings, experiment, action, parent_job_id, user_specs, job.id
        )
        with self._lock:
            job.specs = plan.specs
            job.seq = self._next_seq(session)
            job.status = PENDING
            session.add(job)
            session.commit()
        self.wake()
        return job

    def cancel(self, session: Session, job: Job) -> Job:
        with self._lock:
            session.refresh(job)
            if job.status == PENDING:
                self._mark_ended(job, CANCELED, None, None)
            elif job.status == RUNNING:
                if not job.cancel_requested:
                    job.cancel_requested = True
                    self.executor.stop(job.handle, self.settings.cancel_grace_seconds)
            else:
                raise ServiceError(f"job {job.id!r} has already ended ({job.status})", 409)
            session.commit()
        return job

    def resume(self, session: Session, job: Job, user_specs: Any = None) -> Job:
        with self._lock:
            session.refresh(job)
            if job.status not in (CANCELED, ERROR):
                raise ServiceError(
                    f"job {job.id!r} is {job.status}: only a Canceled or Error job can be resumed",
                    409,
                )
            specs = deep_merge(job.specs, job_specs.check_user_specs(user_specs))
            experiment = session.get(Experiment, job.experiment_id)
            plan_job(
                session, self.settings, experiment, job.action, job.parent_job_id, specs, job.id
            )
            job.specs = specs
            job.status, job.seq, job.queued_at = PENDING, self._next_seq(session), utcnow()
            job.finished_at, job.error, job.exit_code = None, None, None
            job.cancel_requested = False
            session.commit()
        self.wake()
        return job

    def delete(self, session: Session, job: Job) -> None:
        with self._lock:
            session.refresh(job)
            if job.status in (PENDING, RUNNING):
                raise ServiceError(
                    f"job {job.id!r} is {job.status}: cancel it first (POST .../jobs/{job.id}"
                    ":cancel)",
                    409,
                )
            waiting = session.scalar(
                select(Job.id).where(Job.parent_job_id == job.id, Job.status == PENDING)
            )
            if waiting:
                raise ServiceError(
                    f"job {waiting!r} waits for this job's checkpoint: cancel or delete it first",
                    409,
                )
            session.delete(job)
            session.commit()
        remove_job_files(self.settings, job.id)

    def queue_position(self, session: Session, job: Job) -> int | None:
        """1 for the next job to start, among every user's queued jobs."""
        if job.status != PENDING:
            return None
        ahead = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == PENDING, Job.seq < job.seq)
        )
        return int(ahead or 0) + 1

    @staticmethod
    def _next_seq(session: Session) -> int:
        return int(session.scalar(select(func.max(Job.seq))) or 0) + 1


def remove_job_files(settings: ServiceSettings, job_id: str) -> None:
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
    for cached in settings.cache_dir.glob(f"{job_id}-*"):
        cached.unlink(missing_ok=True)
