"""Planning a job: checking a request and resolving the spec it runs (the user's overrides, what
it inherits from its parent or the experiment's base, the server's dataset folders and the
parent's checkpoint).

Submission plans a job to refuse a bad request at once (400/404/409); the scheduler plans it
again when it starts, once the parent's checkpoint exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from reidnet.config import deep_merge
from reidnet.contracts import LATEST_CHECKPOINT, action_dir, latest_checkpoint
from reidnet.service import specs as job_specs
from reidnet.service.db import PULL_COMPLETE, Dataset, Experiment, Job
from reidnet.service.errors import ServiceError
from reidnet.service.ownership import owned_dataset, owned_job
from reidnet.service.settings import ServiceSettings

CHILD_ACTIONS = ("evaluate", "inference", "export")


@dataclass
class JobPlan:
    specs: dict[str, Any]  # the user's overrides plus what the job inherited: stored with it
    spec: dict[str, Any]  # what the job runs, server paths included


def plan_job(
    session: Session,
    settings: ServiceSettings,
    experiment: Experiment,
    action: str,
    parent_job_id: str | None,
    user_specs: Any,
    job_id: str,
    launching: bool = False,
) -> JobPlan:
    """Check a job request and resolve its spec. Raises ServiceError (400/404/409).

    At submission the parent's checkpoint may not exist yet (the job waits for its parent);
    `launching` requires it.
    """
    overrides = job_specs.check_user_specs(user_specs)
    owner = experiment.owner_id
    parent = owned_job(session, owner, parent_job_id) if parent_job_id else None
    if parent is not None and parent.action != "train":
        raise ServiceError(
            f"parent job {parent.id!r} is a {parent.action} job: a parent must be a train job "
            "(its checkpoint is what this job uses)"
        )
    if action in CHILD_ACTIONS and parent is None:
        raise ServiceError(
            f"a {action} job needs parent_job_id: the train job whose checkpoint it uses"
        )
    source = parent
    if source is None and action == "train" and experiment.base_experiment:
        source = owned_job(session, owner, experiment.base_experiment)
    specs = deep_merge(job_specs.inherited_specs(source.specs if source else None), overrides)
    paths = job_specs.JobPaths(settings.job_dir(job_id), train_dirs=[])
    _plan_data(session, settings, experiment, action, paths)
    if source is not None:
        checkpoint = _source_checkpoint(settings, source, launching)
        if action == "train":
            paths.pretrained = checkpoint
        else:
            paths.checkpoint = checkpoint
    spec = job_specs.resolved_spec(action, specs, paths)
    job_specs.validate_job_spec(action, spec)
    return JobPlan(specs, spec)


def _plan_data(session, settings, experiment: Experiment, action: str, paths) -> None:
    owner = experiment.owner_id
    if action == "train":
        if not experiment.train_datasets:
            raise ServiceError(
                f"experiment {experiment.id!r} has no train_datasets: PATCH it with the ids of "
                "uploaded datasets"
            )
        for dataset_id in experiment.train_datasets:
            folders = _ready_dataset(session, settings, owner, dataset_id)
            if "train" not in folders:
                raise ServiceError(
                    f"dataset {dataset_id!r} has no training folder (bounding_box_train or "
                    "sample_train): it can only be an eval_dataset"
                )
            paths.train_dirs.append(folders["train"])
    candidates = [experiment.eval_dataset] if experiment.eval_dataset else []
    candidates += list(experiment.train_datasets or [])
    for dataset_id in candidates:
        folders = _ready_dataset(session, settings, owner, dataset_id)
        if "test" in folders and "query" in folders:
            paths.test_dir, paths.query_dir = folders["test"], folders["query"]
            break
        if dataset_id == experiment.eval_dataset:
            raise ServiceError(
                f"eval_dataset {dataset_id!r} needs both a gallery folder (bounding_box_test or "
                "sample_test) and a query folder (query or sample_query)"
            )
    if action in ("evaluate", "inference") and paths.query_dir is None:
        raise ServiceError(
            f"a {action} job needs query and gallery images: set the experiment's eval_dataset "
            "to a dataset with query and gallery folders"
        )


def _ready_dataset(session: Session, settings: ServiceSettings, owner_id: int, dataset_id: str):
    dataset = owned_dataset(session, owner_id, dataset_id)
    if dataset.status != PULL_COMPLETE:
        raise ServiceError(
            f"dataset {dataset_id!r} is {dataset.status}, not pull_complete: wait for it "
            "(GET /api/v1/datasets/{id}) or fix the findings it lists and upload again",
            409 if dataset.status == "processing" else 400,
        )
    return _dataset_folders(settings, dataset)


def _dataset_folders(settings: ServiceSettings, dataset: Dataset) -> dict[str, str]:
    root = settings.datasets_dir / dataset.id
    return {split: str(root / relative) for split, relative in dataset.splits.items()}


def _source_checkpoint(settings: ServiceSettings, source: Job, launching: bool) -> str:
    train_dir = action_dir(settings.job_dir(source.id), "train")
    found = latest_checkpoint(train_dir)
    if found is not None:
        return str(found)
    if launching:
        raise ServiceError(
            f"train job {source.id!r} ended {source.status} without writing a checkpoint"
        )
    return str(train_dir / LATEST_CHECKPOINT)
