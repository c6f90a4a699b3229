"""The FIFO scheduler that runs jobs: `JobManager`.

A job runs exactly what the CLI runs, `python -m reidnet <action> -e spec.yaml`, in its own folder
and its own process group. The `JobManager` owns every state change (submit, start, finish,
cancel, resume, delete) under one lock, starts queued jobs in submission order up to `max_jobs`,
and recovers after a restart. What a job runs is planned in reidnet.service.planning, what it
reports is read by reidnet.service.reporting. Processes are started and stopped through a
`JobExecutor` (reidnet.service.executor): a child process here, or a Ray job (`--executor ray`),
whose jobs outlive the server and are watched again by the next one.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reidnet.config import deep_merge
from reidnet.errors import ReidnetError
from reidnet.service import specs as job_specs
from reidnet.service.db import (
    CANCELED,
    DONE,
    ERROR,
    FINISHED_STATES,
    PENDING,
    RUNNING,
    Database,
    Experiment,
    Job,
    new_id,
    utcnow,
)
from reidnet.service.errors import ServiceError
from reidnet.service.executor import (
    RESTARTED,
    Ended,
    ExecutorUnavailable,
    JobExecutor,
    Launch,
    executor_for,
)
from reidnet.service.planning import plan_job
from reidnet.service.reporting import error_from_log, job_result, public_error
from reidnet.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

SPEC_FILE, LOG_FILE = "spec.yaml", "log.txt"
LAUNCH_RETRY_SECONDS = 10.0  # between tries to reach an executor that did not answer
STOPPED = (
    "server stopped while the job was running; resume the job to continue from its latest "
    "checkpoint"
)


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
        others it left running (Error), and record how those that ended meanwhile ended (Done
        if they finished)."""
        with self._lock, self.database.session() as session:
            for job in session.scalars(select(Job).where(Job.status == RUNNING)).all():
                if job.handle and self.executor.outlives_server(job.handle):
                    logger.info("job %s outlived the previous server: watching it again", job.id)
                    continue
                ended = Ended(None, RESTARTED)
                if job.handle:
                    folder = self.settings.job_dir(job.id)
                    grace = self.settings.cancel_grace_seconds
                    ended = self.executor.reap_orphan(job.handle, folder, grace)
                self._finish(job, ended)
                logger.warning(
                    "job %s was running when the server stopped: now %s", job.id, job.status
                )

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
        folder = self.settings.job_dir(job.id)
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
            log_file = self.settings.job_dir(job.id) / LOG_FILE
            self._mark_ended(job, ERROR, code, ended.error or error_from_log(log_file, code))
        logger.info("job %s ended: %s", job.id, job.status)

    def _mark_ended(self, job: Job, status: str, code: int | None, error: str | None) -> None:
        folder = self.settings.job_dir(job.id)
        job.status, job.exit_code = status, code
        job.error = public_error(error, folder) if error is not None else None
        job.finished_at = utcnow()
        job.cancel_requested = False
        job.result = job_result(folder, job.action)

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
    shutil.rmtree(settings.job_dir(job_id), ignore_errors=True)
    for cached in settings.cache_dir.glob(f"{job_id}-*"):
        cached.unlink(missing_ok=True)
