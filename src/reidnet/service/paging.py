"""Lists come in pages: `?limit` (default 100, at most 1000) and `?offset`.

The body stays a JSON array, as v1 clients read it; the `X-Total-Count` header says how many
items the whole list holds. A list endpoint takes `page: PageDep` and declares
`responses=PAGED`, so the schema shows the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_OFFSET = 2**63 - 1  # what SQL's OFFSET (a BIGINT) holds; past it SQLite fails with a 500
TOTAL_HEADER = "X-Total-Count"

PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            TOTAL_HEADER: {
                "description": "How many items the whole list holds (this page has at most "
                "`limit` of them, from `offset` on).",
                "schema": {"type": "integer"},
            }
        }
    }
}


@dataclass(frozen=True)
class Page:
    """The part of a list a request asks for; it sets the response's total."""

    limit: int
    offset: int
    response: Response

    def rows(self, session: Session, statement: Select) -> list[Any]:
        """This page of an ordered query's rows."""
        counted = select(func.count()).select_from(statement.order_by(None).subquery())
        self._total(session.scalar(counted) or 0)
        return list(session.scalars(statement.limit(self.limit).offset(self.offset)))

    def owned_newest_first(self, session: Session, model: Any, owner_id: int) -> list[Any]:
        """This page of an owner's rows of `model` (datasets, experiments), newest first, the
        id breaking ties of the same creation time so pages neither overlap nor miss."""
        statement = (
            select(model)
            .where(model.owner_id == owner_id)
            .order_by(model.created_at.desc(), model.id.desc())
        )
        return self.rows(session, statement)

    def items(self, everything: list[Any]) -> list[Any]:
        """This page of a list already in memory."""
        self._total(len(everything))
        return everything[self.offset : self.offset + self.limit]

    def _total(self, total: int) -> None:
        self.response.headers[TOTAL_HEADER] = str(total)


def _page(
    response: Response,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description="Items of the list to skip.")
    ] = 0,
) -> Page:
    return Page(limit, offset, response)


PageDep = Annotated[Page, Depends(_page)]
