"""API keys: a random token shown once at creation, stored only as its SHA-256.

Keys carry 256 random bits, so a plain SHA-256 (no salt, no slow hash) is enough: there is no
dictionary to attack, and looking a key up by its hash needs no per-row work.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reidnet.errors import ReidnetError
from reidnet.service.db import Database, User

KEY_PREFIX = "reid_"
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
