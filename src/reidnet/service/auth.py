"""API keys: a random token shown once at creation, stored only as its SHA-256.

Keys carry 256 random bits, so a plain SHA-256 (no salt, no slow hash) is enough: there is no
dictionary to attack, and looking a key up by its hash needs no per-row work.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reidnet.errors import ReidnetError
from reidnet.service.db import (
    PENDING,
    PROCESSING,
    RUNNING,
    Database,
    Dataset,
    Experiment,
    Job,
    User,
)
from reidnet.service.settings import ServiceSettings

KEY_PREFIX = "reid_"
# A revoked user's key_hash: 64 characters like a SHA-256 hex digest, but never one (not hex).
REVOKED_PREFIX = "revoked-"
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request."""

    id: int
    name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(database: Database, name: str) -> tuple[User, str]:
    """Add a user and return it with its new API key (the only time the key is visible)."""
    if not USER_NAME.fullmatch(name):
        raise ReidnetError(
            f"user name {name!r} is not allowed: use 1-100 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        with database.session() as session:
            user = User(name=name, key_hash=hash_key(key))
            session.add(user)
    except IntegrityError:
        raise ReidnetError(f"user {name!r} already exists: choose another name") from None
    return user, key


def caller_for_key(session: Session, key: str) -> Caller | None:
    user = session.scalar(select(User).where(User.key_hash == hash_key(key)))
    return Caller(user.id, user.name) if user else None


@dataclass(frozen=True)
class UserSummary:
    name: str
    created_at: datetime
    revoked: bool
    datasets: int
    experiments: int
    jobs: int


def list_users(database: Database) -> list[UserSummary]:
    """Every user with what they own, oldest first."""

    def counts(session: Session, model) -> dict[int, int]:
        rows = session.execute(select(model.owner_id, func.count()).group_by(model.owner_id))
        return dict(rows.all())

    with database.session() as session:
        owned = [counts(session, model) for model in (Dataset, Experiment, Job)]
        return [
            UserSummary(
                user.name,
                user.created_at,
                user.key_hash.startswith(REVOKED_PREFIX),
                *(by_owner.get(user.id, 0) for by_owner in owned),
            )
            for user in session.scalars(select(User).order_by(User.id))
        ]


def _named_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise ReidnetError(f"no user {name!r}: see `reidnet users list`")
    return user


def revoke_user(database: Database, name: str) -> None:
    """Make the user's key unusable from the next request on; their data stays."""
    with database.session() as session:
        _named_user(session, name).key_hash = REVOKED_PREFIX + secrets.token_hex(28)


def rotate_key(database: Database, name: str) -> str:
    """A new key for the user (revoked or not); the old one stops working."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with database.session() as session:
        _named_user(session, name).key_hash = hash_key(key)
    return key


def delete_user(database: Database, settings: ServiceSettings, name: str) -> UserSummary:
    """Delete a user with their datasets, experiments and jobs, rows and files.

    Refused while one of their jobs is queued or running or a dataset is processing: revoke
    the user first (nothing new can start), cancel the jobs, then delete.
    """
    with database.session() as session:
        user = _named_user(session, name)
        active = session.scalars(
            select(Job.id).where(Job.owner_id == user.id, Job.status.in_((PENDING, RUNNING)))
        ).all()
        processing = session.scalars(
            select(Dataset.id).where(Dataset.owner_id == user.id, Dataset.status == PROCESSING)
        ).all()
        if active or processing:
            raise ReidnetError(
                f"user {name!r} has "
                + (
                    f"{len(active)} queued or running job(s) ({', '.join(active[:5])})"
                    if active
                    else ""
                )
                + (" and " if active and processing else "")
                + (f"{len(processing)} dataset(s) processing" if processing else "")
                + ": revoke the user (`reidnet users revoke`), cancel the jobs (or wait), then "
                "delete"
            )
        jobs = session.scalars(select(Job.id).where(Job.owner_id == user.id)).all()
        datasets = session.scalars(select(Dataset.id).where(Dataset.owner_id == user.id)).all()
        experiments = session.scalar(
            select(func.count()).select_from(Experiment).where(Experiment.owner_id == user.id)
        )
        summary = UserSummary(
            user.name, user.created_at, False, len(datasets), int(experiments or 0), len(jobs)
        )
        # Children first: jobs reference experiments, everything references the user.
        for model in (Job, Experiment, Dataset):
            session.execute(delete(model).where(model.owner_id == user.id))
        session.delete(user)
    for job_id in jobs:
        shutil.rmtree(settings.jobs_dir / job_id, ignore_errors=True)
        for cached in settings.cache_dir.glob(f"{job_id}-*"):
            cached.unlink(missing_ok=True)
    for dataset_id in datasets:
        shutil.rmtree(settings.datasets_dir / dataset_id, ignore_errors=True)
        (settings.uploads_dir / dataset_id).unlink(missing_ok=True)
    return summary
