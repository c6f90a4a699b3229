"""How a local job's process ended, as the process itself records it.

The server learns a local job's exit status by waiting for its child process. A server killed
meanwhile cannot: the job runs on, ends, and its status goes to whichever process adopts it. So
the local executor names a file in REIDNET_EXIT_STATUS_FILE, `python -m reidnet` writes its exit
status and process id there as it exits, and the next server reads it back: a job that finished
while no server watched it ends Done, one that failed ends Error with its own message. A process
killed by a signal writes nothing, and neither does any process but the job's own (torchrun's
ranks inherit the variable; their records carry their own ids).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXIT_STATUS_ENV = "REIDNET_EXIT_STATUS_FILE"
EXIT_STATUS_FILE = ".exit-status.json"  # a dot name: not listed or downloaded with the job


@dataclass(frozen=True)
class ExitStatus:
    pid: int
    exit_code: int

    def write(self, path: Path) -> None:
        """Atomically: a reader never sees half a record."""
        partial = path.with_name(f".{path.name}.{self.pid}")
        partial.write_text(json.dumps({"pid": self.pid, "exit_code": self.exit_code}) + "\n")
        os.replace(partial, path)

    @classmethod
    def read(cls, path: Path) -> ExitStatus | None:
        """The record at `path`; None when there is none (or it is not a record)."""
        try:
            values = json.loads(path.read_text())
            return cls(int(values["pid"]), int(values["exit_code"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def recorded_exit_code(path: Path, pid: int) -> int | None:
    """The exit status process `pid` recorded at `path`; None if it recorded none."""
    record = ExitStatus.read(path)
    return record.exit_code if record is not None and record.pid == pid else None


def run_recording_exit_status(main: Callable[[], None], path: Path) -> None:
    """Run `main`, then record the exit status it leaves with, however it leaves."""
    code = 1  # an exception that escapes `main`: Python exits with 1
    try:
        main()
        code = 0
    except SystemExit as leaving:
        code = _exit_code(leaving.code)
        raise
    finally:
        ExitStatus(os.getpid(), code).write(path)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1  # sys.exit("message") prints it and exits 1
