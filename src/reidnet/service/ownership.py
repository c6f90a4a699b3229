"""The caller's experiments, jobs and datasets by id.

Another user's row answers exactly as a missing one does (404 naming the id), so ids reveal
nothing. The routers take these through the dependencies in reidnet.service.deps; job planning
uses them for a job's parent and datasets.
"""

from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from reidnet.service.db import Dataset, Experiment, Job
from reidnet.service.errors import not_found


def _impossible(row_id: str) -> bool:
    """An id no row can have: PostgreSQL refuses a NUL in a query (an error, not "no row")."""
    return "\x00" in row_id


def owned_experiment(session: Session, owner_id: int, experiment_id: str) -> Experiment:
    experiment = None if _impossible(experiment_id) else session.get(Experiment, experiment_id)
    if experiment is None or experiment.owner_id != owner_id:
        raise not_found("experiment", experiment_id)
    return experiment


def owned_job(session: Session, owner_id: int, job_id: str) -> Job:
    job = None if _impossible(job_id) else session.get(Job, job_id)
    if job is None or job.owner_id != owner_id:
        raise not_found("job", job_id)
    return job


def experiment_job(session: Session, owner_id: int, experiment_id: str, job_id: str) -> Job:
    """A job of one of the owner's experiments, in one query (a status poll's only lookup).

    The experiment is joined with the job left outer, so a missing experiment and a missing job
    still get their own 404.
    """
    if _impossible(experiment_id):
        raise not_found("experiment", experiment_id)
    if _impossible(job_id):
        owned_experiment(session, owner_id, experiment_id)
        raise not_found("job", job_id)
    row = session.execute(
        select(Experiment, Job)
        .outerjoin(
            Job,
            and_(Job.experiment_id == Experiment.id, Job.id == job_id, Job.owner_id == owner_id),
        )
        .where(Experiment.id == experiment_id, Experiment.owner_id == owner_id)
    ).first()
    if row is None:
        raise not_found("experiment", experiment_id)
    if row.Job is None:
        raise not_found("job", job_id)
    return row.Job


def owned_dataset(session: Session, owner_id: int, dataset_id: str) -> Dataset:
    dataset = None if _impossible(dataset_id) else session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != owner_id:
        raise not_found("dataset", dataset_id)
    return dataset
