"""What a job reports, read from its folder: a train job's progress (the trainer's status.json),
a finished job's result (metrics or output files), and why a failed one failed (its log).

Readers only: a job view must not fail over a file that is missing or half written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

from reidnet.contracts import (
    EVALUATION_FILE,
    STATUS_FILE,
    TrainingStatus,
    action_dir,
    latest_checkpoint,
)
from reidnet.errors import ReidnetError
from reidnet.service.schemas import JobProgress

logger = logging.getLogger(__name__)

_METRIC_KEYS = ("mAP", "rank-1", "rank-5", "rank-10", "mINP", "num_valid_queries", "re_ranking")


def training_status(folder: Path) -> TrainingStatus | None:
    """The status.json the trainer of a train job writes after each epoch (None before the
    first, or when it is unreadable: a job view must not fail over it)."""
    try:
        return TrainingStatus.read(action_dir(folder, "train") / STATUS_FILE)
    except ReidnetError as error:
        logger.warning("%s", error)
        return None


def job_progress(folder: Path, action: str) -> JobProgress | None:
    """A train job's progress from its status.json."""
    status = training_status(folder) if action == "train" else None
    if status is None:
        return None
    figures = status.progress().model_dump()
    figures["validation"] = _metrics(figures["validation"])
    return JobProgress(**figures)


def job_result(folder: Path, action: str) -> dict[str, Any] | None:
    """What a finished job produced: metrics for train/evaluate, the files of the others."""
    if action == "train":
        status = training_status(folder)
        checkpoint = latest_checkpoint(action_dir(folder, "train"))
        if status is None and checkpoint is None:
            return None
        return {
            "epochs_completed": status.epoch if status else None,
            "checkpoint": _relative(checkpoint, folder),
            **(_metrics(status.validation if status else None) or {}),
        }
    if action == "evaluate":
        return _metrics(_read_json(action_dir(folder, "evaluate") / EVALUATION_FILE))
    outputs = action_dir(folder, action)
    if not outputs.is_dir():
        return None
    return {"files": sorted(_relative(p, folder) for p in outputs.rglob("*") if p.is_file())}


def error_from_log(log_file: Path, exit_code: int | None) -> str:
    """The CLI's `error: ...` message, else the exit status and the log's last lines."""
    try:
        with open(log_file, "rb") as stream:
            stream.seek(max(0, stream.seek(0, os.SEEK_END) - 16384))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    marker = text.rfind("error: ")
    if marker >= 0 and (marker == 0 or text[marker - 1] == "\n"):
        return text[marker + len("error: ") :].strip()[:4000]
    how = f"exited with status {exit_code}"
    if exit_code is None:
        how = "ended without an exit status"
    elif exit_code < 0:
        try:
            how = f"killed by signal {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"killed by signal {-exit_code}"
    tail = "\n".join(text.strip().splitlines()[-15:])
    return f"the job process {how}" + (f"; last log lines:\n{tail}" if tail else "")


_FRAME = re.compile(r'\s+File "[^"]*", line \d+')  # the first line of a traceback frame
_CHAINED = (
    "Traceback (most recent call last):",
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
# An absolute POSIX path: a slash that does not continue a word, a URL or another path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"`:;,()<>\[\]{}|]+")
OUTSIDE_JOB = "<server>"


def public_error(text: str, job_dir: Path) -> str:
    """`text` as a job's `error` may show it to its owner: without tracebacks (they stay in the
    job's log) and without server paths: a path inside the job folder becomes relative to it,
    any other keeps only its last name, under `<server>/`."""
    kept, in_traceback, dropped = [], False, False
    for line in text.splitlines():
        if line.startswith(_CHAINED) or _FRAME.match(line):
            in_traceback = dropped = True
        elif not (in_traceback and (line[:1].isspace() or not line.strip())):
            in_traceback = False
            kept.append(line)
    message = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    if dropped:
        message += "\n(the traceback is in the job's log)"
    return _ABSOLUTE_PATH.sub(lambda match: _shown_path(match.group(0), job_dir), message)


def _shown_path(path: str, job_dir: Path) -> str:
    trailing = path[len(path.rstrip(".")) :]  # a full stop ending the sentence
    path = path[: len(path) - len(trailing)]
    folder = str(job_dir)
    if path == folder:
        return "the job folder" + trailing
    if path.startswith(folder + "/"):
        return path[len(folder) + 1 :] + trailing
    top = path.split("/")[1]
    # Only what names this machine's folders (/srv, /usr, /tmp...) is a server path: an API
    # route (GET /api/v1/...) in a message stays as it is.
    if not top or not os.path.exists("/" + top):
        return path + trailing
    return f"{OUTSIDE_JOB}/{path.rstrip('/').rsplit('/', 1)[-1]}{trailing}"


def _metrics(values: Any) -> dict[str, Any] | None:
    if not isinstance(values, dict):
        return None
    return {k: values[k] for k in _METRIC_KEYS if k in values}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _relative(path: Path | None, folder: Path) -> str | None:
    return str(path.relative_to(folder)) if path is not None else None
