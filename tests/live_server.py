"""A real `reidnet serve` process on a free loopback port, for the service and notebook tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

# Set to a PostgreSQL URL (an account that may CREATE DATABASE), every LiveServer keeps its
# state in a fresh database of that server instead of SQLite: .ci/run runs the service suite so.
DATABASE_URL = os.environ.get("REIDNET_TEST_DATABASE_URL", "")
_DATABASES: dict[Path, str] = {}  # data folder -> the database its server uses

# Train specs that make a job take seconds on a CPU.
TINY_TRAIN = {
    "model": {
        "backbone": "resnet_18",
        "pretrain_choice": "none",
        "input_height": 32,
        "input_width": 16,
        "feat_dim": 32,
    },
    "dataset": {"batch_size": 16, "num_instances": 4, "num_workers": 0, "padding": 2},
    "re_ranking": {"num_query": 3, "max_rank": 5},  # a small sampled-matches plot
    "train": {
        "num_epochs": 1,
        "checkpoint_interval": 1,
        "validation_interval": 1,
        "seed": 3,
        "optim": {"base_lr": 0.001, "warmup_iters": 0, "lr_steps": [50]},
    },
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(url: str, timeout: float, process: subprocess.Popen | None = None) -> bool:
    """Poll `url` until it answers 200: True. False after `timeout` seconds, or as soon as
    `process` (the server that should answer) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def reidnet_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reidnet", *args]


def fresh_database(admin_url: str) -> str:
    """The URL of a new, empty database on the server `admin_url` points to."""
    from sqlalchemy import create_engine, make_url, text

    name = f"reidnet_test_{uuid.uuid4().hex[:16]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def database_options(data_dir: Path, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """`--database-url` of the server on `data_dir` when the suite runs on PostgreSQL."""
    if "--database-url" in options or Path(data_dir) not in _DATABASES:
        return ()
    return ("--database-url", _DATABASES[Path(data_dir)])


def create_user(data_dir: Path, name: str, *options: str) -> str:
    """`reidnet users create`; the API key is the last line of its output."""
    options = (*options, *database_options(data_dir, options))
    done = subprocess.run(
        reidnet_command("users", "create", name, "--data-dir", str(data_dir), *options),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


class LiveServer:
    """Start, kill and restart `reidnet serve` on a data folder; its output goes to a log."""

    def __init__(self, data_dir: Path, *options: str):
        self.data_dir = Path(data_dir)
        if DATABASE_URL and "--database-url" not in options:
            _DATABASES.setdefault(self.data_dir, fresh_database(DATABASE_URL))
        self.options = (*options, *database_options(self.data_dir, options))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = reidnet_command(
            "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.options
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        if wait_until_answers(f"{self.url}/api/v1/health", timeout, self.process):
            return self
        if self.process.poll() is not None:
            raise RuntimeError(f"reidnet serve exited:\n{self.log()}")
        raise RuntimeError(f"reidnet serve did not answer in {timeout} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the server only: its job processes (own sessions) keep running."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def database_url(self) -> str:
        if "--database-url" in self.options:
            return self.options[self.options.index("--database-url") + 1]
        return f"sqlite:///{self.data_dir / 'reidnet.db'}"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.is_file() else ""

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )


def make_archive(source: Path, target: Path) -> Path:
    """A tar.gz of a dataset folder (its split folders at the top)."""
    with tarfile.open(target, "w:gz") as tar:
        for child in sorted(source.iterdir()):
            tar.add(child, arcname=child.name)
    return target


def job_processes(marker: str) -> list[int]:
    """Process ids whose command line mentions `marker`, zombies excluded."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(marker in argument for argument in process.info["cmdline"] or ()):
            found.append(process.pid)
    return found


def upload(client: httpx.Client, archive: Path, name: str = "synthetic") -> httpx.Response:
    with open(archive, "rb") as stream:
        return client.post(
            "/api/v1/datasets", files={"file": (archive.name, stream)}, data={"name": name}
        )


def wait_for_dataset(client: httpx.Client, dataset_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = client.get(f"/api/v1/datasets/{dataset_id}").json()
        if dataset["status"] != "processing":
            return dataset
        time.sleep(0.2)
    raise AssertionError(f"dataset {dataset_id} still processing after {timeout} s")


def wait_for_job(
    client: httpx.Client, experiment_id: str, job_id: str, timeout: float = 300, until=None
) -> dict:
    """Poll a job until `until(job)` holds (default: it has ended)."""
    until = until or (lambda job: job["status"] in ("Done", "Error", "Canceled"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/experiments/{experiment_id}/jobs/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
