"""The entrypoint of a reidnet job on a Ray node: runs `python -m reidnet ACTION ...` and stops it
the way the local executor does.

Ray's own `stop_job` sends SIGTERM to every process of the job at once: data-loader workers die
under it and fail the step, and under torchrun every rank gets it twice (once from Ray, once
forwarded by torchrun), which the trainer reads as "stop now, no checkpoint". So the service asks
for a stop through the job's control file on the shared data folder instead, and this process
sends SIGTERM to the reidnet process alone, then kills the whole group once the grace period has
passed. Ray's stop stays the service's last resort.

The control file is rewritten in place, never replaced: on NFS a reader's open() revalidates the
file it already knows (close-to-open consistency), while a renamed-over name can stay stale.
Usage (what `RayJobExecutor` submits, run in the job folder):
`python -m reidnet.service.ray_entry CONTROL_FILE SUBMISSION_ID -- ACTION -e spec.yaml ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reidnet.service.executor import group_members

CONTROL_FILE = ".ray-control.json"  # a dot name: not listed or downloaded with the job's files
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Control:
    """What the service wants of one run of a job (a run is one Ray submission)."""

    submission_id: str
    stop: bool = False
    grace_seconds: float = 0.0


def write_control(path: Path, control: Control) -> None:
    text = json.dumps(
        {
            "submission_id": control.submission_id,
            "stop": control.stop,
            "grace_seconds": control.grace_seconds,
        }
    )
    with open(path, "a+") as stream:  # in place: see the module's docstring
        stream.seek(0)
        stream.truncate()
        stream.write(text + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_control(path: Path) -> Control | None:
    """The control file's request, or None while it is missing or half written."""
    try:
        values = json.loads(path.read_text())
        return Control(
            str(values["submission_id"]), bool(values["stop"]), float(values["grace_seconds"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_request(path: Path, submission_id: str) -> Control | None:
    """The stop this run must obey, if any: an explicit stop, or the job queued again under
    another submission (a resume) while this one still lives. None while unreadable."""
    control = read_control(path)
    if control is None:
        return None
    if control.submission_id != submission_id:
        return Control(submission_id, True, control.grace_seconds)
    return control if control.stop else None


def run(control_file: Path, submission_id: str, arguments: list[str]) -> int:
    """Run reidnet with `arguments` until it ends; obey the control file. Its exit status."""
    # Ray delivers its own stop signal to the reidnet process too: this process only waits. A
    # handler, not SIG_IGN, so the child starts with the default disposition.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if stop_request(control_file, submission_id) is not None:
            _say(f"stop requested before {submission_id} started: not running it")
            return 128 + signal.SIGTERM
        child = subprocess.Popen(
            [sys.executable, "-m", "reidnet", *arguments], stdin=subprocess.DEVNULL
        )
        code = _supervise(child, control_file, submission_id)
        _kill_job(child)  # workers that outlived the main process
        return 128 - code if code < 0 else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(child: subprocess.Popen, control_file: Path, submission_id: str) -> int:
    """Wait for the child; on a stop request SIGTERM it, after the grace period kill the job."""
    stopping: Control | None = None
    deadline = 0.0
    while True:
        try:
            return child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if stopping is None:
            stopping = stop_request(control_file, submission_id)
            if stopping is not None:
                deadline = time.monotonic() + stopping.grace_seconds
                _signal(child.pid, signal.SIGTERM)
                _say(
                    f"stop requested: SIGTERM sent to the job process {child.pid}; "
                    f"killed if it still runs in {stopping.grace_seconds:g} s"
                )
        elif time.monotonic() > deadline:
            _say(f"the job process {child.pid} ignored SIGTERM: killing its processes")
            _kill_job(child)


def _kill_job(child: subprocess.Popen) -> None:
    """SIGKILL the job's processes. Ray starts this entrypoint as the leader of a process group
    of its own, which the job's processes share: all of them but this one. Anywhere else (a
    test) the group is someone else's too: the child alone."""
    if os.getpgrp() != os.getpid():
        child.kill()
        return
    for pid in group_members(os.getpgrp()):
        if pid != os.getpid():
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _say(message: str) -> None:
    print(f"==== {message} ====", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 4 or argv[2] != "--":
        print(
            "usage: python -m reidnet.service.ray_entry CONTROL_FILE SUBMISSION_ID -- "
            "ACTION -e SPEC [OVERRIDES...]",
            file=sys.stderr,
        )
        return 2
    return run(Path(argv[0]), argv[1], argv[3:])


if __name__ == "__main__":
    sys.exit(main())
