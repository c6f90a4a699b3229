"""The one exception type for errors a user can cause (bad spec, bad data, bad checkpoint).

The CLI prints its message without a traceback and exits with status 2, so every message must name
the file, key or value at fault and say how to fix it.
"""


class ReidnetError(Exception):
    """A problem in the user's input: spec, dataset, checkpoint or command line."""
