"""The bound on a request's head (its request line and headers): over it, 431.

Two parts, because uvicorn's HTTP parser sets no bound. httptools (llhttp, the parser uvicorn
picks when it is installed, as `uvicorn[standard]` installs it) hands each header over only once
it has ended and gathers it in memory until then; uvicorn keeps every header of the request. A
1 MiB header was parsed and answered 200, and one endless header would fill the server's memory.
(Only uvicorn's pure-Python h11 parser has a bound, `h11_max_incomplete_event_size`, and answers
400 past it.) So:

* `HeaderLimit`, an ASGI middleware, measures every head that has ended, under any server.
* `BoundedHeadProtocol`, the HTTP protocol `reidnet serve` gives uvicorn, answers a head that is
  still growing past the bound, so the server holds at most the bound and a read of it.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# After its 431, a connection reads on (and drops) what the client still sends, this long at
# most: a server that closes with unread data resets the connection, and the client, still
# sending, would lose the answer.
LINGER_SECONDS = 5.0


def head_too_large(limit: int) -> str:
    return (
        f"the request line and headers are over {limit} bytes: send large values in the body "
        "(the server's limit is its setting REIDNET_MAX_HEADER_BYTES)"
    )


def head_size(scope: dict) -> int:
    """The bytes of a request's line and headers, as sent but for spaces and the HTTP version."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    fields = sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # ": ", CRLF
    return len(scope["method"]) + target + fields


class HeaderLimit:
    """Refuse (431) a request whose line and headers are over `limit` bytes."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and head_size(scope) > self.limit:
            answer = JSONResponse({"detail": head_too_large(self.limit)}, status_code=431)
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 431 once a head still unfinished is over
    `max_head_bytes`.

    The reads that begin and end inside one head are counted (all their bytes are the head's),
    so the count never exceeds the head; a head that ends within the read that began it is
    left to `HeaderLimit`.
    """

    def __init__(self, *args, max_head_bytes: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self._open_head: list | None = None  # the header list of the head being read
        self._head_bytes = 0
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._open_head, self._head_bytes = self.headers, 0

    def on_headers_complete(self) -> None:
        self._open_head = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered: what the client still sends is dropped (LINGER_SECONDS)
            return
        head = self._open_head
        super().data_received(data)
        if head is not None and head is self._open_head:  # the same head, before and after
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        self.logger.warning(
            "%s sent a request head over %d bytes: answered 431", self.client, self.max_head_bytes
        )
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head while the previous answer is still being sent: no room for ours.
            self.transport.close()
            return
        body = json.dumps({"detail": head_too_large(self.max_head_bytes)}).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
