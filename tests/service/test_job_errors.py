"""What a failed job's `error` shows its owner: the message, never a traceback or a server path
(the log keeps both)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reidnet.service.db import ERROR, PULL_COMPLETE, Database, Dataset, Experiment, Job, User
from reidnet.service.executor import Ended, JobExecutor, Launch
from reidnet.service.jobs import LOG_FILE, JobManager
from reidnet.service.settings import ServiceSettings


class ScriptExecutor(JobExecutor):
    """Runs a Python script in the job's folder in place of reidnet, logged as a job is."""

    def __init__(self, script: Path):
        self.script = script
        self.processes: dict[int, subprocess.Popen] = {}

    def launch(self, launch: Launch) -> dict[str, Any]:
        with open(launch.log_file, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(self.script)],
                cwd=launch.job_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[process.pid] = process
        return {"pid": process.pid}

    def poll(self, handle: dict[str, Any]) -> Ended | None:
        code = self.processes[handle["pid"]].poll()
        return None if code is None else Ended(code)

    def stop(self, handle: dict[str, Any], grace_seconds: float) -> None:
        self.processes[handle["pid"]].kill()

    def reap_orphan(self, handle: dict[str, Any], job_dir: Path, grace_seconds: float) -> None:
        pass


def test_a_crash_shows_its_message_with_job_relative_paths_and_no_traceback(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path / "data")
    settings.make_folders()
    database = Database(settings.url)
    database.create_all()
    # The server's own code, outside every job folder, crashes with paths in its message.
    source = tmp_path / "server-src" / "trainer.py"
    source.parent.mkdir()
    source.write_text(
        "import os\n"
        "def save():\n"
        "    raise OSError(f'cannot write {os.getcwd()}/train/model_epoch_001.pth: '\n"
        "                  f'{os.path.dirname(__file__)}/quota.cfg says no')\n"
        "save()\n"
    )
    manager = JobManager(database, settings, ScriptExecutor(source))
    with database.session() as session:
        user = User(name="carol", key_hash="0" * 64)
        session.add(user)
        session.flush()
        dataset = Dataset(
            owner_id=user.id,
            name="d",
            status=PULL_COMPLETE,
            archive_name="d.tar",
            splits={"train": "bounding_box_train"},
        )
        session.add(dataset)
        session.flush()
        experiment = Experiment(owner_id=user.id, name="e", train_datasets=[dataset.id])
        session.add(experiment)
        session.flush()
        job_id = manager.submit(session, experiment, "train", None, {}).id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        manager.tick()
        with database.session() as session:
            job = session.get(Job, job_id)
            if job.status == ERROR:
                break
        time.sleep(0.1)
    assert job.status == ERROR and job.exit_code == 1
    last_lines = job.error.splitlines()[-2:]
    assert last_lines == [
        "OSError: cannot write train/model_epoch_001.pth: <server>/quota.cfg says no",
        "(the traceback is in the job's log)",
    ]
    assert str(tmp_path) not in job.error and "Traceback" not in job.error
    assert 'File "' not in job.error
    log = (settings.job_dir(job_id) / LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in log and f'File "{source}"' in log
    database.dispose()
