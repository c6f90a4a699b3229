"""Executors start, watch and stop job processes; the job manager decides what runs when.

`LocalProcessExecutor` runs each job as a child process on this machine; `RayJobExecutor`
(reidnet.service.ray_executor, imported only when chosen) submits each job to a Ray cluster. Both
implement the same methods, and nothing in the API changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from reidnet.service.exit_status import EXIT_STATUS_ENV, EXIT_STATUS_FILE, recorded_exit_code
from reidnet.service.settings import ServiceSettings

logger = logging.getLogger(__name__)

RESTARTED = (
    "server restarted while the job was running: its process was stopped; resume the job to "
    "continue from its latest checkpoint"
)
ENDED_UNSEEN = (
    "the job's process ended while the server was down, without recording an exit status (it "
    "was killed, or its machine restarted), so it did not finish; resume the job to continue "
    "from its latest checkpoint"
)


@dataclass(frozen=True)
class Launch:
    """What an executor needs to start one job."""

    job_id: str
    action: str
    job_dir: Path
    spec_file: Path
    log_file: Path
    options: tuple[str, ...] = ()
    seq: int = 0  # the job's place in the queue: a resumed job is queued again with a new one


@dataclass(frozen=True)
class Ended:
    """How a job ended, as its executor saw it."""

    exit_code: int | None  # negative: killed by that signal; None: no process exit status
    error: str | None = None  # why it failed when the executor knows better than the job's log


class ExecutorUnavailable(Exception):
    """The executor cannot start jobs right now (its cluster does not answer): jobs stay queued."""


class JobExecutor(ABC):
    """Starts, watches and stops job processes; a handle is JSON stored with the job."""

    @abstractmethod
    def launch(self, launch: Launch) -> dict[str, Any]:
        """Start the job; return its handle.

        Raises ReidnetError for a job that can never run here (it ends Error with the message),
        ExecutorUnavailable for one that cannot start now (it stays queued).
        """

    @abstractmethod
    def poll(self, handle: dict[str, Any]) -> Ended | None:
        """How the job ended, once it has; else None."""

    @abstractmethod
    def stop(self, handle: dict[str, Any], grace_seconds: float) -> None:
        """Ask the job to stop (a train job checkpoints first); force it after the grace period.

        Returns at once; `poll` reports the end.
        """

    @abstractmethod
    def reap_orphan(self, handle: dict[str, Any], job_dir: Path, grace_seconds: float) -> Ended:
        """End a job a previous server process started, if it still runs; blocks until it has.

        Returns how it ended: a job that finished while no server watched it, with its exit
        status; one that was still running or cannot be told, with the error that says so.
        """

    def outlives_server(self, handle: dict[str, Any]) -> bool:
        """Whether the job runs on when this server process ends, for the next one to watch.

        Such jobs are neither stopped at shutdown nor reaped at start-up: the next server polls
        them through the same handle. A local child process is not one of them.
        """
        return False


class LocalProcessExecutor(JobExecutor):
    """Each job is a child process in a new session (its own process group) on this machine.

    Stopping sends SIGTERM to the job's main process only: the trainer then finishes its step and
    writes a checkpoint, while data-loader workers, had they received the signal too, would die
    under it and make the step fail. Once the main process has exited, or the grace period has
    passed, the whole group is killed, so no worker outlives its job.

    Jobs run `nice` (niceness `job_nice`, inherited by their workers and torchrun's processes):
    on a machine that also serves the API, a training job takes the CPU time the server leaves,
    so status polls stay fast while it trains; with idle cores it loses nothing.
    """

    def __init__(self, job_nice: int = 0) -> None:
        self.job_nice = job_nice
        self._processes: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def launch(self, launch: Launch) -> dict[str, Any]:
        command = [sys.executable, "-m", "reidnet", launch.action, "-e", str(launch.spec_file)]
        command += launch.options
        nice = shutil.which("nice") if self.job_nice else None
        if nice:  # exec'd: the job keeps nice's pid, and its command line names the job folder
            command = [nice, "-n", str(self.job_nice), *command]
        # The log is a file: plain text (no colours or progress bars even if the server was
        # started from a terminal that forces them), lines wide enough not to wrap.
        env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE")}
        env.update(
            PYTHONUNBUFFERED="1",
            NO_COLOR="1",
            TERM="dumb",
            COLUMNS="160",
            REIDNET_JOB_ID=launch.job_id,
        )
        # The job records its exit status for a server that restarts before it ends (see
        # reap_orphan); a record left by an earlier run of the job must not count for this one.
        exit_status = launch.job_dir / EXIT_STATUS_FILE
        exit_status.unlink(missing_ok=True)
        env[EXIT_STATUS_ENV] = str(exit_status)
        with open(launch.log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=launch.job_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        with self._lock:
            self._processes[process.pid] = process
        return {"executor": "local", "host": socket.gethostname(), "pid": process.pid}

    def poll(self, handle: dict[str, Any]) -> Ended | None:
        pid = handle["pid"]
        with self._lock:
            process = self._processes.get(pid)
        if process is None:  # not started by this server process: see reap_orphan
            return None if _alive(pid) else Ended(-signal.SIGKILL)
        code = process.poll()
        if code is None:
            return None
        with self._lock:
            self._processes.pop(pid, None)
        _kill_group(pid)  # workers that outlived the main process
        return Ended(code)

    def stop(self, handle: dict[str, Any], grace_seconds: float) -> None:
        pid = handle["pid"]
        with self._lock:
            process = self._processes.get(pid)
        if process is None or process.poll() is not None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        timer = threading.Timer(grace_seconds, self._force_stop, args=(process,))
        timer.daemon = True
        timer.start()

    @staticmethod
    def _force_stop(process: subprocess.Popen) -> None:
        if process.poll() is None:
            logger.warning("job process %d ignored SIGTERM: killing its group", process.pid)
            _kill_group(process.pid)

    def reap_orphan(self, handle: dict[str, Any], job_dir: Path, grace_seconds: float) -> Ended:
        leader = handle.get("pid")
        if not leader or handle.get("host") != socket.gethostname():
            return Ended(None, RESTARTED)
        if not _job_processes(leader, str(job_dir)):  # it ended while no server watched
            code = recorded_exit_code(job_dir / EXIT_STATUS_FILE, leader)
            return Ended(code) if code is not None else Ended(None, ENDED_UNSEEN)
        self._stop_orphan(leader, job_dir, grace_seconds)
        code = recorded_exit_code(job_dir / EXIT_STATUS_FILE, leader)
        return Ended(0) if code == 0 else Ended(code, RESTARTED)  # 0: it finished meanwhile

    @staticmethod
    def _stop_orphan(leader: int, job_dir: Path, grace_seconds: float) -> None:
        members = _job_processes(leader, str(job_dir))
        logger.warning("stopping job process group %d left by the previous server", leader)
        if leader in members:
            _signal(leader, signal.SIGTERM)  # the trainer checkpoints before it exits
        deadline = time.monotonic() + grace_seconds
        while members and time.monotonic() < deadline:
            time.sleep(0.2)
            members = _job_processes(leader, str(job_dir))
        for pid in members:
            _signal(pid, signal.SIGKILL)
        # A killed process runs until the kernel has torn it down: wait (briefly) until it is
        # gone or a zombie, so the job counts as stopped only when its processes are.
        deadline = time.monotonic() + 5
        while members and time.monotonic() < deadline:
            time.sleep(0.05)
            members = _job_processes(leader, str(job_dir))


def executor_for(settings: ServiceSettings) -> JobExecutor:
    """The executor `reidnet serve --executor` chose; Ray is imported only when it is."""
    if settings.executor == "ray":
        from reidnet.service.ray_executor import RayJobExecutor

        return RayJobExecutor.from_settings(settings)
    return LocalProcessExecutor(settings.job_nice)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's: it exists
        return True


def _group(pgid: int) -> list[psutil.Process]:
    """Live processes of process group `pgid`, zombies left out."""
    members = []
    for process in psutil.process_iter(["status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except OSError:  # ended meanwhile
            continue
    return members


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`, by process id (zombies left out)."""
    return [process.pid for process in _group(pgid)]


def _job_processes(pgid: int, marker: str) -> list[int]:
    """Live processes of group `pgid` whose command line names the job folder.

    Checking the command line keeps a reused process id from being killed.
    """
    members = []
    for process in _group(pgid):
        try:
            command_line = process.cmdline()
        except psutil.Error:  # ended meanwhile, or not ours to read
            continue
        if any(marker in argument for argument in command_line):
            members.append(process.pid)
    return members
