"""Jobs as Ray jobs, through Ray's Jobs API: `reidnet serve --executor ray --ray-address URL`.

Each run of a job is one Ray job (submission id `reidnet-<job id>-<queue seq>`, so a restarted
server finds it again and a resumed job gets a new one) whose entrypoint runs, in the job folder
on the shared data folder, the same `python -m reidnet ACTION -e spec.yaml` the local executor
runs, under reidnet.service.ray_entry (which appends its output to the job's log.txt and stops it
gracefully). It asks for the GPUs the spec trains on and `--ray-job-cpus` CPUs; Ray places it on
a node that has them. Ray jobs outlive the server: a restarted server watches them again.

Ray is imported here only, and this module only when `--executor ray` is chosen.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from reidnet.errors import ReidnetError
from reidnet.service.executor import (
    RESTARTED,
    Ended,
    ExecutorUnavailable,
    JobExecutor,
    Launch,
    LocalProcessExecutor,
)
from reidnet.service.ray_entry import CONTROL_FILE, Control, read_control, write_control
from reidnet.service.settings import GPU_POLICIES, ServiceSettings

logger = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 30.0  # Ray's client sets no timeout: a hung dashboard must not hang us
STOP_MARGIN_SECONDS = 15.0  # after the grace period, before Ray's own stop is used
WARN_EVERY_SECONDS = 60.0
ENTRY_PYTHON = "python"  # the node's Python (the one that runs Ray), where reidnet is installed


def submission_id(job_id: str, seq: int) -> str:
    return f"reidnet-{job_id}-{seq}"


class RayJobExecutor(JobExecutor):
    """Submits each job to a Ray cluster; polls, stops and re-attaches by submission id."""

    def __init__(
        self,
        address: str,
        gpus: str = "auto",
        cpus_per_job: float = 1.0,
        schedule_timeout_seconds: float = 600.0,
        cancel_grace_seconds: float = 60.0,
    ):
        if gpus not in GPU_POLICIES:
            raise ReidnetError(f"--ray-gpus {gpus!r} must be one of {', '.join(GPU_POLICIES)}")
        try:
            from ray.job_submission import JobStatus, JobSubmissionClient
        except ImportError:
            raise ReidnetError(
                "--executor ray needs Ray's Jobs API: pip install 'reidnet[ray]' (ray[default])"
            ) from None
        self.address, self.gpus, self.cpus_per_job = address, gpus, cpus_per_job
        self.schedule_timeout_seconds = schedule_timeout_seconds
        self.cancel_grace_seconds = cancel_grace_seconds
        self._status = JobStatus
        self._calls = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="reidnet-ray")
        self._local = LocalProcessExecutor()  # for jobs a local-executor server left behind
        self._warned_at = 0.0
        try:
            self._client = self._call(JobSubmissionClient, address)
        except (ExecutorUnavailable, RuntimeError, ValueError) as error:
            why = str(error).rstrip(".")
            raise ReidnetError(
                f"cannot reach the Ray Jobs API at --ray-address {address!r}: {why}. Start "
                "the cluster (`ray start --head --dashboard-host=0.0.0.0`) or give its "
                "dashboard address, e.g. http://HEAD:8265"
            ) from None
        logger.info("jobs run on the Ray cluster at %s", address)

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RayJobExecutor:
        address = settings.ray_address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise ReidnetError(
                "--executor ray needs --ray-address: the Ray cluster's dashboard (Jobs API) "
                "URL, e.g. http://HEAD:8265"
            )
        return cls(
            address,
            gpus=settings.ray_gpus,
            cpus_per_job=settings.ray_job_cpus,
            schedule_timeout_seconds=settings.ray_schedule_timeout_seconds,
            cancel_grace_seconds=settings.cancel_grace_seconds,
        )

    # -- the executor's methods ----------------------------------------------------------------

    def launch(self, launch: Launch) -> dict[str, Any]:
        run_id = submission_id(launch.job_id, launch.seq)
        control = launch.job_dir / CONTROL_FILE
        write_control(control, Control(run_id))
        num_gpus = self._gpus_for(launch)
        handle = {
            "executor": "ray",
            "address": self.address,
            "submission_id": run_id,
            "action": launch.action,
            "control": str(control),
            "log": str(launch.log_file),
            "log_bytes": launch.log_file.stat().st_size,
            "num_gpus": num_gpus,
            "num_cpus": self.cpus_per_job,
        }
        if self._info(run_id) is not None:  # submitted by a server killed before it said so
            logger.warning("job %s: Ray job %s exists already: watching it", launch.job_id, run_id)
            return handle
        options = launch.options
        if launch.action == "train" and num_gpus:  # Ray shows the job its GPUs as 0..n-1
            options += (f"train.gpu_ids=[{', '.join(str(i) for i in range(num_gpus))}]",)
        self._call(
            self._client.submit_job,
            entrypoint=_entrypoint(launch, control, run_id, options),
            submission_id=run_id,
            entrypoint_num_cpus=self.cpus_per_job,
            entrypoint_num_gpus=num_gpus,
            runtime_env={"env_vars": self._job_env(launch)},
            metadata={"reidnet_job_id": launch.job_id, "reidnet_action": launch.action},
        )
        logger.info(
            "job %s submitted to Ray as %s (%g GPU, %g CPU)",
            launch.job_id,
            run_id,
            num_gpus,
            self.cpus_per_job,
        )
        return handle

    def poll(self, handle: dict[str, Any]) -> Ended | None:
        run_id = handle["submission_id"]
        try:
            info = self._info(run_id)
        except ExecutorUnavailable as error:
            self._warn(f"cannot ask the Ray cluster about {run_id} ({error}); trying again")
            return None
        if info is None:
            return Ended(
                None,
                f"the Ray job {run_id} is gone: the cluster at {self.address} has no record of "
                "it (it was restarted, or the job was deleted there); resume the job to run it "
                "again",
            )
        status = info.status
        if status == self._status.PENDING:
            return self._poll_pending(handle, info)
        if status == self._status.RUNNING:
            return None
        if status == self._status.SUCCEEDED:
            return Ended(0)
        if status == self._status.STOPPED:
            return Ended(
                None,
                f"the Ray job {run_id} was stopped on the cluster (`ray job stop` or the Ray "
                "dashboard), not by the service; resume the job to continue",
            )
        return self._failure(handle, info)

    def stop(self, handle: dict[str, Any], grace_seconds: float) -> None:
        run_id = handle["submission_id"]
        write_control(Path(handle["control"]), Control(run_id, True, grace_seconds))
        # ray_entry stops the job within the grace period; Ray's own stop is the last resort.
        timer = threading.Timer(
            grace_seconds + STOP_MARGIN_SECONDS, self._force_stop, args=(run_id,)
        )
        timer.daemon = True
        timer.start()

    def reap_orphan(self, handle: dict[str, Any], job_dir: Path, grace_seconds: float) -> Ended:
        if handle.get("executor") != "ray":
            return self._local.reap_orphan(handle, job_dir, grace_seconds)
        self.stop(handle, grace_seconds)
        deadline = time.monotonic() + grace_seconds + 2 * STOP_MARGIN_SECONDS
        while (ended := self.poll(handle)) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return ended or Ended(None, RESTARTED)

    def outlives_server(self, handle: dict[str, Any]) -> bool:
        return bool(handle) and handle.get("executor") == "ray"

    # -- resources ----------------------------------------------------------------------------

    def _gpus_for(self, launch: Launch) -> int:
        """train.num_gpus for a train job, one for the others; none under `--ray-gpus auto` when
        the cluster has no GPU at all (the job then runs on a CPU, as the local executor's)."""
        wanted = 1
        if launch.action == "train":
            train = (yaml.safe_load(launch.spec_file.read_text()) or {}).get("train") or {}
            if int(train.get("num_nodes", 1)) > 1:
                raise ReidnetError(
                    f"train.num_nodes is {train['num_nodes']}: the Ray executor runs a job on "
                    "one node (up to all of its GPUs, train.num_gpus); set train.num_nodes to 1"
                )
            wanted = int(train.get("num_gpus", 1))
        if self.gpus == "auto" and not any(n.get("GPU", 0) > 0 for n in self._nodes()):
            return 0
        return wanted

    def _nodes(self) -> list[dict[str, float]]:
        """The total resources of each live node of the cluster."""
        from ray.util.state import list_nodes

        nodes = self._call(list_nodes, address=self.address, filters=[("state", "=", "ALIVE")])
        return [dict(node.resources_total or {}) for node in nodes]

    def _missing(self, handle: dict[str, Any]) -> str | None:
        """Why no node of the cluster can ever hold the job, or None if one can (it waits for
        a busy node to free up) or the cluster cannot tell now."""
        need = {"GPU": handle["num_gpus"], "CPU": handle["num_cpus"]}
        need = {name: amount for name, amount in need.items() if amount > 0}
        try:
            nodes = self._nodes()
        except ExecutorUnavailable:
            return None
        if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            return None
        most = {name: max((node.get(name, 0) for node in nodes), default=0) for name in need}
        short = [name for name, amount in need.items() if most[name] < amount]
        asked = " and ".join(f"{amount:g} {name}" for name, amount in need.items())
        why = (
            f"no node has {' or '.join(f'{need[n]:g} {n}' for n in short)} (the largest has "
            + ", ".join(f"{most[n]:g} {n}" for n in short)
            + ")"
            if short
            else f"no single node has {asked} together"
        )
        source = (
            f"train.num_gpus is {handle['num_gpus']}"
            if handle["action"] == "train"
            else f"a {handle['action']} job uses one GPU"
        )
        fix = "add a node that has them (or let the autoscaler start one)"
        if "GPU" in short:
            fix += (
                ", lower train.num_gpus, or serve with --ray-gpus auto so that a cluster "
                "without GPUs runs jobs on CPUs"
            )
        return (
            f"the Ray cluster at {self.address} cannot run this job: it asks for {asked} "
            f"({source}, --ray-job-cpus {handle['num_cpus']:g}) and after "
            f"{self.schedule_timeout_seconds:g} s {why}; {fix}"
        )

    # -- Ray job states -----------------------------------------------------------------------

    def _poll_pending(self, handle: dict[str, Any], info) -> Ended | None:
        run_id = handle["submission_id"]
        control = read_control(Path(handle["control"]))
        if control is not None and control.stop and control.submission_id == run_id:
            self._stop_quietly(run_id)  # canceled before it was placed: it never runs
            return Ended(None)
        if time.time() - info.start_time / 1000 < self.schedule_timeout_seconds:
            return None
        missing = self._missing(handle)
        if missing is None:
            return None
        write_control(Path(handle["control"]), Control(run_id, True, 0.0))  # should it ever start
        self._stop_quietly(run_id)
        return Ended(None, missing)

    def _failure(self, handle: dict[str, Any], info) -> Ended:
        run_id, code = handle["submission_id"], info.driver_exit_code
        ray_says = _tail(info.message or "", 1500)
        if code is None:
            return Ended(None, f"the Ray job {run_id} failed before its command ran: {ray_says}")
        try:
            wrote = os.path.getsize(handle["log"]) > handle["log_bytes"]
        except OSError:
            wrote = False
        if not wrote:  # e.g. the node does not mount the data folder, or lacks reidnet
            return Ended(
                code,
                f"the Ray job {run_id} exited with status {code} before reidnet wrote to the "
                f"job's log (does the node mount the data folder and have reidnet "
                f"installed?): {ray_says}",
            )
        return Ended(code)

    def _force_stop(self, run_id: str) -> None:
        try:
            info = self._info(run_id)
        except ExecutorUnavailable:
            return
        if info is not None and not info.status.is_terminal():
            logger.warning("Ray job %s did not stop in its grace period: ray job stop", run_id)
            self._stop_quietly(run_id)

    def _stop_quietly(self, run_id: str) -> None:
        try:
            self._call(self._client.stop_job, run_id)
        except (ExecutorUnavailable, RuntimeError) as error:
            logger.warning("could not stop Ray job %s: %s", run_id, error)

    # -- calls to the cluster -----------------------------------------------------------------

    def _info(self, run_id: str):
        """The Ray job's details, or None if the cluster has no such job."""
        try:
            return self._call(self._client.get_job_info, run_id)
        except RuntimeError as error:
            if "status code 404" in str(error):
                return None
            raise ExecutorUnavailable(str(error)) from None

    def _call(self, function, *args, **kwargs):
        """`function(...)` with a time limit; connection problems raise ExecutorUnavailable."""
        future = self._calls.submit(function, *args, **kwargs)
        try:
            return future.result(timeout=CALL_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            raise ExecutorUnavailable(
                f"the Ray cluster at {self.address} did not answer in {CALL_TIMEOUT_SECONDS:g} s"
            ) from None
        except OSError as error:  # ConnectionError, requests' errors
            raise ExecutorUnavailable(f"{type(error).__name__}: {error}") from None
        except Exception as error:
            if type(error).__name__ == "RayStateApiException":
                raise ExecutorUnavailable(str(error)) from None
            raise

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = time.monotonic()
            logger.warning(message)

    def _job_env(self, launch: Launch) -> dict[str, str]:
        return {
            # the log is a file: plain text, lines wide enough not to wrap
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "160",
            "REIDNET_JOB_ID": launch.job_id,
            # Ray's own stop (`ray job stop`, or ours as a last resort) grants the same grace.
            "RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(self.cancel_grace_seconds)),
        }


def _entrypoint(launch: Launch, control: Path, run_id: str, options: tuple[str, ...]) -> str:
    """The shell command of the Ray job: in the job folder, output appended to its log."""
    command = [ENTRY_PYTHON, "-m", "reidnet.service.ray_entry", str(control), run_id, "--"]
    command += [launch.action, "-e", str(launch.spec_file), *options]
    quoted = " ".join(shlex.quote(part) for part in command)
    return (
        f"cd {shlex.quote(str(launch.job_dir))} && "
        f"exec {quoted} >> {shlex.quote(str(launch.log_file))} 2>&1"
    )


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
