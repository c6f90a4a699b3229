"""Where the service keeps its state and the limits it enforces, set by `reidnet serve` options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass
class ServiceSettings:
    """Everything `create_app` needs; every folder lies under `data_dir`."""

    data_dir: Path
    database_url: str | None = None
    max_jobs: int = 1
    max_upload_bytes: int = 20 * GIB
    max_dataset_bytes: int = 50 * GIB
    max_dataset_files: int = 1_000_000
    cancel_grace_seconds: float = 60.0
    poll_seconds: float = 0.5
    executor: str = "local"  # "local": child processes here; "ray": Ray jobs (ray_* below)
    ray_address: str | None = None  # the cluster's Jobs API (dashboard) URL
    ray_gpus: str = "auto"  # "auto": ask for GPUs only if the cluster has some; "always"
    ray_job_cpus: float = 1.0
    ray_schedule_timeout_seconds: float = 600.0  # then a job no node can hold ends Error

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def url(self) -> str:
        """The database URL: the given one, else a SQLite file in the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir / 'reidnet.db'}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def job_dir(self, job_id: str) -> Path:
        """A job's folder: its spec, log and results (the job's results_dir)."""
        return self.jobs_dir / job_id

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def make_folders(self) -> None:
        for folder in (self.uploads_dir, self.datasets_dir, self.jobs_dir, self.cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
