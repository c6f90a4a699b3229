"""`/api/v1/experiments`: which datasets a line of jobs uses, and the specs they take."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from reidnet.config import ACTIONS, spec_json_schema
from reidnet.service import schemas
from reidnet.service.auth import Caller
from reidnet.service.db import PENDING, RUNNING, Experiment, Job, new_id
from reidnet.service.deps import CallerDep, OwnedExperiment, SessionDep, StateDep
from reidnet.service.errors import ServiceError
from reidnet.service.jobs import remove_job_files
from reidnet.service.ownership import owned_dataset, owned_job
from reidnet.service.paging import PAGED, PageDep
from reidnet.service.specs import all_server_owned_keys, default_specs

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])


def _check_references(session: Session, caller: Caller, values: dict) -> None:
    """Every dataset and job an experiment names must exist and belong to the caller."""
    for dataset_id in values.get("train_datasets") or []:
        owned_dataset(session, caller.id, dataset_id)
    if values.get("eval_dataset"):
        owned_dataset(session, caller.id, values["eval_dataset"])
    if values.get("base_experiment"):
        base = owned_job(session, caller.id, values["base_experiment"])
        if base.action != "train":
            raise ServiceError(
                f"base_experiment {base.id!r} is a {base.action} job: give a train job, whose "
                "checkpoint new train jobs fine-tune from"
            )


@router.post("", status_code=201, response_model=schemas.Experiment)
def create_experiment(
    request: schemas.ExperimentCreate, caller: CallerDep, session: SessionDep
) -> Experiment:
    values = request.model_dump()
    _check_references(session, caller, values)
    experiment = Experiment(id=new_id(), owner_id=caller.id, **values)
    session.add(experiment)
    session.commit()
    return experiment


@router.get("", response_model=list[schemas.Experiment], responses=PAGED)
def list_experiments(caller: CallerDep, session: SessionDep, page: PageDep) -> list[Experiment]:
    """The caller's experiments, newest first, a page at a time."""
    return page.owned_newest_first(session, Experiment, caller.id)


@router.get("/{experiment_id}", response_model=schemas.Experiment)
def get_experiment(experiment: OwnedExperiment) -> Experiment:
    return experiment


@router.patch("/{experiment_id}", response_model=schemas.Experiment)
def update_experiment(
    request: schemas.ExperimentUpdate,
    experiment: OwnedExperiment,
    caller: CallerDep,
    session: SessionDep,
) -> Experiment:
    """Change the name, datasets or base; fields left out keep their value, null clears one."""
    values = request.model_dump(exclude_unset=True)
    if "name" in values and values["name"] is None:
        raise ServiceError("name cannot be null")
    if "train_datasets" in values and values["train_datasets"] is None:
        values["train_datasets"] = []
    _check_references(session, caller, values)
    for key, value in values.items():
        setattr(experiment, key, value)
    session.commit()
    return experiment


@router.delete("/{experiment_id}", response_model=schemas.Deleted)
def delete_experiment(
    experiment: OwnedExperiment, session: SessionDep, state: StateDep
) -> schemas.Deleted:
    """Delete an experiment and all its jobs' files; refused while one of its jobs is active."""
    jobs = list(session.scalars(select(Job).where(Job.experiment_id == experiment.id)))
    active = [job.id for job in jobs if job.status in (PENDING, RUNNING)]
    if active:
        raise ServiceError(
            f"experiment {experiment.id!r} has active jobs ({', '.join(active)}): cancel them "
            "first",
            409,
        )
    for job in jobs:
        session.delete(job)
    session.flush()  # the jobs' rows go first: they reference the experiment (foreign key)
    session.delete(experiment)
    session.commit()
    for job in jobs:
        remove_job_files(state.settings, job.id)
    return schemas.Deleted(id=experiment.id)


@router.get("/{experiment_id}/specs/{action}/schema", response_model=schemas.SpecSchema)
def spec_schema(
    experiment_id: str,  # declared so the docs list it first, as the path does
    action: str,
    _experiment: OwnedExperiment,
) -> schemas.SpecSchema:
    """Every spec key with its default and the JSON schema; path keys are the server's.

    Submit a job with `specs` holding only the keys to change (the defaults need not be sent).
    """
    if action not in ACTIONS:
        raise ServiceError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}", 404)
    return schemas.SpecSchema(
        default=default_specs(), schema=spec_json_schema(), server_owned=all_server_owned_keys()
    )
