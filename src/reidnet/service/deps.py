"""FastAPI dependencies: the service's state, a database session per request, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from reidnet.service.auth import Caller, caller_for_key
from reidnet.service.datasets import DatasetProcessor
from reidnet.service.db import Database
from reidnet.service.jobs import JobManager
from reidnet.service.settings import ServiceSettings


@dataclass
class ServiceState:
    settings: ServiceSettings
    database: Database
    jobs: JobManager
    datasets: DatasetProcessor


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def get_session(state: ServiceState = Depends(get_state)) -> Iterator[Session]:
    """A session around the endpoint function. Routes take it with `scope="function"`, so it is
    committed and its connection returned before the response is sent: a slow client or a big
    download then holds no pooled connection."""
    with state.database.session() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="An API key from `reidnet users create`.")


def current_caller(
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    state: ServiceState = Depends(get_state),
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
