"""The service's state: users, datasets, experiments and jobs, in SQLAlchemy 2.

SQLite (a file in the data folder, in WAL mode so readers never wait for the scheduler's writes)
is the default; a PostgreSQL URL works too: nothing below is SQLite-specific except the pragmas,
which are applied only on that dialect.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from reidnet.errors import ReidnetError

# Dataset states (TAO's names) and job states.
PROCESSING, PULL_COMPLETE, INVALID = "processing", "pull_complete", "invalid"
PENDING, RUNNING, DONE, ERROR, CANCELED = "Pending", "Running", "Done", "Error", "Canceled"
FINISHED_STATES = (DONE, ERROR, CANCELED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """A timestamp that always reads back timezone-aware (SQLite drops the zone; it is UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default=PROCESSING)
    archive_name: Mapped[str] = mapped_column(String(300))
    archive_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    splits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    validation: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    stats: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    train_datasets: Mapped[list[Any]] = mapped_column(default=list)
    eval_dataset: Mapped[str | None] = mapped_column(String(32), nullable=True)
    base_experiment: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Job(Base):
    """One run of an action. `seq` orders the queue: it grows with every submission or resume."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(Integer, index=True, default=0)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    parent_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    specs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=PENDING, index=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    handle: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Database:
    """An engine and a session factory; `create_all` makes the tables on first use."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self.sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    # Up to 50 connections: more than the 40 threads FastAPI runs endpoints in (anyio's default)
    # plus the scheduler's and the dataset worker's, since sessions end with the endpoint
    # function: a burst of requests waits for a thread, never 30 s for a connection.
    pool = {"pool_size": 10, "max_overflow": 40}
    try:
        if url.startswith("sqlite"):
            engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
            )
        else:
            engine = create_engine(url, pool_pre_ping=True, **pool)
    except Exception as error:  # bad URL or a driver that is not installed
        raise ReidnetError(
            f"cannot use database URL {url!r}: {error} (for PostgreSQL install a driver, e.g. "
            "`pip install psycopg[binary]` and postgresql+psycopg://user:pass@host/db)"
        ) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
