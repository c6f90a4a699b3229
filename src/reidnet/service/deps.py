"""FastAPI dependencies: the service's state, a database session per request, the caller, and
the caller's experiment, job or dataset named by the path.

Endpoints take them as annotated parameters (`caller: CallerDep`, `job: OwnedJob`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from reidnet.service.auth import Caller, caller_for_key
from reidnet.service.datasets import DatasetProcessor
from reidnet.service.db import Database, Dataset, Experiment, Job
from reidnet.service.jobs import JobManager
from reidnet.service.ownership import experiment_job, owned_dataset, owned_experiment
from reidnet.service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    database: Database
    jobs: JobManager
    datasets: DatasetProcessor


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """A session around the endpoint function (routes take it with `scope="function"`).

    Its end runs on the event loop, not in a worker thread: were it a sync dependency, the
    close would queue for a thread while the endpoints holding every thread wait for the
    connections those closes would return (40 threads, QueuePool timeouts under load). The
    endpoints commit their writes themselves; anything left pending is committed here.
    Closing returns the connection at once, before the response is sent.
    """
    session = state.database.sessions()
    try:
        yield session
        if session.new or session.dirty or session.deleted:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


_bearer = HTTPBearer(auto_error=False, description="An API key from `reidnet users create`.")


def current_caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    state: StateDep,
) -> Caller:
    """The user whose API key the request carries, or 401.

    The key is looked up in a session of its own, closed before the endpoint runs: a request
    that streams for minutes (a followed log) must not hold a pooled connection meanwhile.
    """
    caller = None
    if credentials:
        with state.database.session() as session:
            caller = caller_for_key(session, credentials.credentials)
    if caller is None:
        raise HTTPException(
            401,
            detail="missing or unknown API key: send the header 'Authorization: Bearer <key>' "
            "with a key from `reidnet users create`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


def _owned_experiment(experiment_id: str, caller: CallerDep, session: SessionDep) -> Experiment:
    return owned_experiment(session, caller.id, experiment_id)


def _experiment_job(experiment_id: str, job_id: str, caller: CallerDep, session: SessionDep) -> Job:
    return experiment_job(session, caller.id, experiment_id, job_id)


def _owned_dataset(dataset_id: str, caller: CallerDep, session: SessionDep) -> Dataset:
    return owned_dataset(session, caller.id, dataset_id)


# The path's experiment, job (of that experiment) or dataset, if the caller owns it; else 404.
# They share the endpoint's session (FastAPI resolves SessionDep once per request).
OwnedExperiment = Annotated[Experiment, Depends(_owned_experiment)]
OwnedJob = Annotated[Job, Depends(_experiment_job)]
OwnedDataset = Annotated[Dataset, Depends(_owned_dataset)]
