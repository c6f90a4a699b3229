"""The service's error type: a user error (ReidnetError) that knows its HTTP status."""

from __future__ import annotations

from reidnet.errors import ReidnetError


class ServiceError(ReidnetError):
    """A request the service refuses; the API answers `status_code` with the message as detail."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


def not_found(kind: str, identifier: str) -> ServiceError:
    """The same answer whether the thing does not exist or belongs to someone else."""
    return ServiceError(f"{kind} {identifier!r} not found", 404)
