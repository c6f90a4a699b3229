"""The API's contract: request and response models (pydantic), one group per resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reidnet.contracts import TrainingProgress
from reidnet.service.specs import check_json_value

Action = Literal["train", "evaluate", "inference", "export"]
JobStatus = Literal["Pending", "Running", "Done", "Error", "Canceled"]
DatasetStatus = Literal["processing", "pull_complete", "invalid"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Too deep or not Unicode: refused (400) before any recursive code sees it."""
        check_json_value(data, "the request body")
        return data


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


# -- datasets ----------------------------------------------------------------------------------


class DatasetCreated(BaseModel):
    id: str
    status: DatasetStatus


class Dataset(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: DatasetStatus
    archive_name: str
    archive_bytes: int
    splits: dict[str, str] = Field(
        description="train/test/query folder of the dataset, relative to its root."
    )
    validation: dict[str, Any] | None = Field(
        None, description="The validator's report: ok, images_checked, findings."
    )
    stats: dict[str, Any] | None = Field(
        None, description="Identities, images and cameras per subset (train/query/test)."
    )
    error: str | None = None
    created_at: datetime
    updated_at: datetime


# -- experiments -------------------------------------------------------------------------------


class ExperimentCreate(_Request):
    name: str = Field(min_length=1, max_length=200)
    train_datasets: list[str] = Field(
        default_factory=list, description="Dataset ids whose training folders a train job uses."
    )
    eval_dataset: str | None = Field(
        None,
        description="Dataset id with query and gallery folders; by default the first train "
        "dataset that has them.",
    )
    base_experiment: str | None = Field(
        None, description="Id of a train job whose checkpoint new train jobs fine-tune from."
    )


class ExperimentUpdate(_Request):
    name: str | None = Field(None, min_length=1, max_length=200)
    train_datasets: list[str] | None = None
    eval_dataset: str | None = None
    base_experiment: str | None = None


class Experiment(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    train_datasets: list[str]
    eval_dataset: str | None
    base_experiment: str | None
    created_at: datetime
    updated_at: datetime


class SpecSchema(BaseModel):
    default: dict[str, Any] = Field(
        description="Every key with its default, server-owned paths left out."
    )
    schema_: dict[str, Any] = Field(alias="schema", description="JSON schema of the spec.")
    server_owned: list[str] = Field(description="Path-valued keys the server sets itself.")

    model_config = ConfigDict(populate_by_name=True)


# -- jobs --------------------------------------------------------------------------------------


class JobCreate(_Request):
    action: Action
    parent_job_id: str | None = Field(
        None,
        description="A train job: its checkpoint is what evaluate, inference and export use, and "
        "what a train job fine-tunes from.",
    )
    specs: dict[str, Any] | None = Field(
        None, description="Partial spec overrides, merged onto the defaults."
    )


class JobResume(_Request):
    specs: dict[str, Any] | None = Field(
        None, description="Overrides merged onto the job's specs, e.g. more train.num_epochs."
    )


class JobCreated(BaseModel):
    id: str


class JobProgress(TrainingProgress):
    """A train job's progress: the figures of the status.json its trainer writes (one model,
    reidnet.contracts.TrainingProgress); validation keeps mAP, rank-1/5/10, mINP and counts."""


class Job(BaseModel):
    id: str
    experiment_id: str
    action: Action
    parent_job_id: str | None
    status: JobStatus
    specs: dict[str, Any]
    created_at: datetime
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_position: int | None = Field(None, description="1: the next job to start.")
    progress: JobProgress | None = None
    result: dict[str, Any] | None = Field(
        None,
        description="mAP, rank-1/5/10 and mINP for train (last validation) and evaluate; "
        "the written files for inference and export.",
    )
    exit_code: int | None = None
    error: str | None = None


class FileEntry(BaseModel):
    path: str
    size: int
    modified: datetime


class Deleted(BaseModel):
    id: str
    deleted: bool = True
