"""The record of a run: what every action leaves in its results folder besides its outputs.

    <results_dir>/<action>/resolved_spec.yaml   the spec it ran with, defaults and overrides applied
    <results_dir>/<action>/<action>.log         its log, one plain line per record (appended to)
    <results_dir>/<action>/environment.json     reidnet, Python, torch, CUDA, device, git commit

Under torchrun only rank 0 writes them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from reidnet._version import __version__

SPEC_NAME = "resolved_spec.yaml"
ENVIRONMENT_NAME = "environment.json"


def refuse_overwrite(paths, action: str, force: bool) -> None:
    """The one rule for every action's outputs: an earlier run's results are never replaced
    without being asked (`--force`, or `force=True` in Python). `train` continues its run instead.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        from reidnet.errors import ReidnetError

        raise ReidnetError(
            f"{action} would overwrite {', '.join(existing)}: pass --force to replace "
            f"{'it' if len(existing) == 1 else 'them'}, or set {action}.results_dir (or the "
            "output key) to another path"
        )


def log_name(action: str) -> str:
    return f"{action}.log"


def now_iso() -> str:
    """The current time in ISO 8601 with the local offset, to the second."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


@contextmanager
def run_record(
    spec,
    action: str,
    device: torch.device | str | None = None,
    enabled: bool = True,
    out_dir: Path | None = None,
):
    """Write the resolved spec and the environment, and log to `<action>.log` while the run
    lasts. Yields the folder they go to: `out_dir`, else the action's results folder."""
    out_dir = Path(out_dir) if out_dir is not None else spec.action_results_dir(action)
    if not enabled:
        yield out_dir
        return
    from reidnet.config import dump_spec
    from reidnet.logs import RunLog
    from reidnet.utils.atomic import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEC_NAME, dump_spec(spec))
    atomic_write_text(
        out_dir / ENVIRONMENT_NAME, json.dumps(environment(device, action), indent=2) + "\n"
    )
    with RunLog(out_dir / log_name(action)):
        yield out_dir


def environment(device: torch.device | str | None = None, action: str | None = None) -> dict:
    """What a run ran on: versions, the device, the command and the source checkout."""
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "action": action,
        "started": now_iso(),
        "command": sys.argv,
        "reidnet": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "device": str(device) if device is not None else ("cuda" if cuda else "cpu"),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    for package in ("torchvision", "onnx", "onnxruntime", "numpy"):
        info[package] = _version_of(package)
    return info


def git_commit() -> dict | None:
    """{commit, dirty} of the checkout reidnet runs from (an editable install), else None."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists() or not (root / "pyproject.toml").is_file():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip()), "checkout": str(root)}


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
