"""Where the service keeps its state and the limits it enforces.

Each setting has its default here only. `reidnet serve` options set them (sizes in MiB there, in
bytes here); an option left out comes from the environment variable REIDNET_<SETTING>
(REIDNET_MAX_JOBS=4, REIDNET_MAX_UPLOAD_BYTES=...), else the default below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
GIB = 1024 * MIB
ENV_PREFIX = "REIDNET_"
# "local": child processes here; "ray": Ray jobs (ray_* below)
Executor = Literal["local", "ray"]
# "auto": ask for GPUs only if the cluster has some; "always": even when it has none yet
GpuPolicy = Literal["auto", "always"]
GPU_POLICIES = get_args(GpuPolicy)


class ServiceSettings(BaseSettings):
    """Everything `create_app` needs; every folder lies under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path
    database_url: str | None = None
    max_jobs: int = Field(1, ge=1)
    max_upload_bytes: int = Field(20 * GIB, ge=1)
    max_dataset_bytes: int = Field(50 * GIB, ge=1)
    max_dataset_files: int = Field(1_000_000, ge=1)
    # A request's line and headers together; over it, 431 (reidnet.service.head_limit).
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    # The download cache (tar.gz of ended jobs): past this size the least recently downloaded
    # archives are removed; the one being served stays, even when it alone is larger.
    max_cache_bytes: int = Field(5 * GIB, ge=0)
    cancel_grace_seconds: float = Field(60.0, ge=0)
    poll_seconds: float = Field(0.5, gt=0)
    # Niceness of local jobs (0-19): a job training on the server's machine yields the CPU to
    # the API (0: the same priority as the server).
    job_nice: int = Field(10, ge=0, le=19)
    executor: Executor = "local"
    ray_address: str | None = None  # the cluster's Jobs API (dashboard) URL
    ray_gpus: GpuPolicy = "auto"
    ray_job_cpus: float = Field(1.0, ge=0)
    # A Ray job waits this long to be placed, then ends Error if no node could ever hold it.
    ray_schedule_timeout_seconds: float = Field(600.0, ge=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, data_dir: Path) -> Path:
        return data_dir.resolve()

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
