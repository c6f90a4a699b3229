"""The one exception type for errors a user can cause (bad spec, bad data, bad checkpoint).

The CLI prints its message without a traceback and exits with status 2, so every message must name
the file, key or value at fault and say how to fix it.
"""


class ReidnetError(Exception):
    """A problem in the user's input: spec, dataset, checkpoint or command line."""


def exception_chain(error: BaseException | None):
    """`error`, then what it was raised from or while handling, and so on (each once): a
    library often reports an OS or import failure as another exception raised over it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
