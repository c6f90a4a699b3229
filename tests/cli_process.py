"""The `reidnet` command run as a user runs it: a separate process, output captured."""

from __future__ import annotations

import subprocess
import sys


def run_reidnet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reidnet", *args], capture_output=True, text=True, timeout=timeout
    )


def user_error(done: subprocess.CompletedProcess) -> str:
    """The message of a user error (exit 2, no traceback), on one line: rich wraps long lines."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())
