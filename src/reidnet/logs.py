"""Logging for the command line and for the files every run writes.

On a terminal, records go through rich (colour, aligned columns). Anywhere else (a pipe, a file, the
service's job log) a record is one plain line that is never wrapped, with an ISO 8601 timestamp:

    2026-12-02T14:51:23.412+00:00 INFO reidnet.training.trainer: epoch 2/2 loss 3.21 ...

so `grep "epoch 2/2" train.log` finds every record it should. Multi-line messages keep one line
per record: their line breaks are written as " | ".
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

# Libraries that log at DEBUG/INFO on import or per image (matplotlib's font search, PIL's PNG
# chunks): they stay at WARNING so that -v shows reidnet's own debug lines. uvicorn is left out:
# `serve` needs its access log.
QUIET_LOGGERS = (
    "matplotlib",
    "PIL",
    "fsspec",
    "urllib3",
    "httpx",
    "httpcore",
    "asyncio",
    "multipart",
    "python_multipart",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "torch",
    "h5py",
)


class PlainFormatter(logging.Formatter):
    """`<ISO 8601 time> <LEVEL> <logger>: <message>` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).astimezone()
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        message = " | ".join(line for line in message.splitlines() if line.strip())
        return (
            f"{stamp.isoformat(timespec='milliseconds')} {record.levelname} {record.name}: "
            f"{message}"
        )


def configure_logging(verbose: bool = False, stream=None) -> None:
    """Root logging for the CLI: rich on a terminal, PlainFormatter lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    if _is_terminal(stream):
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=Console(file=stream),
            show_path=False,
            rich_tracebacks=False,
            log_time_format="%Y-%m-%dT%H:%M:%S",
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(PlainFormatter())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class RunLog:
    """A log file of one action's run (`<results_dir>/<action>.log`), plain lines, appended to;
    attach it for the run's duration with `with RunLog(path):`."""

    def __init__(self, path: str | Path, level: int = logging.INFO) -> None:
        self.path = Path(path)
        self.level = level
        self._handler: logging.Handler | None = None
        self._previous_level: int | None = None

    def __enter__(self) -> RunLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setFormatter(PlainFormatter())
        handler.setLevel(self.level)
        root = logging.getLogger()
        if root.level > self.level or root.level == logging.NOTSET:
            self._previous_level = root.level
            root.setLevel(self.level)
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)
        root.addHandler(handler)
        self._handler = handler
        return self

    def __exit__(self, *exc_info) -> None:
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self._previous_level is not None:
            root.setLevel(self._previous_level)
            self._previous_level = None
