"""Jobs on a real Ray cluster (`reidnet serve --executor ray`): the full flow, cancel and resume,
a kill -9 of the server while a job runs, and a job asking for a GPU the cluster lacks.

The session starts one Ray head on loopback (2 CPUs, no GPU, the dashboard for the Jobs API
only) and stops it at the end. Without Ray installed these tests skip, unless
REIDNET_REQUIRE_RAY=1 (as in .ci/run) makes that a failure.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from live_server import (
    TINY_TRAIN,
    LiveServer,
    create_user,
    job_processes,
    upload,
    wait_for_dataset,
    wait_for_job,
)
from reidnet.client import Client

if importlib.util.find_spec("ray") is None:
    if os.environ.get("REIDNET_REQUIRE_RAY") == "1":
        raise ImportError("REIDNET_REQUIRE_RAY=1 but Ray is not installed: pip install -e '.[ray]'")
    pytest.skip("Ray is not installed (pip install -e '.[ray]')", allow_module_level=True)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="session")
def ray_address():
    """The Jobs API URL of a one-node Ray cluster on loopback, stopped at the session's end."""
    from ray_head import RayHead

    head = RayHead().start()
    try:
        yield head.address
    finally:
        head.stop()


@pytest.fixture(scope="session")
def ray_jobs(ray_address):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray_address)


def ray_server(data_dir: Path, address: str, *options: str) -> LiveServer:
    return LiveServer(
        data_dir, "--executor", "ray", "--ray-address", address, "--cancel-grace", "30", *options
    )


@pytest.fixture(scope="session")
def on_ray(ray_address, tmp_path_factory):
    """A server whose jobs run on the Ray cluster, a user's client and an uploaded dataset."""
    server = ray_server(tmp_path_factory.mktemp("ray-service") / "data", ray_address).start()
    client = Client(server.url, create_user(server.data_dir, "rayuser"))
    yield server, client
    client.close()
    server.stop()


def new_experiment(client: Client, synthetic_data: Path, name: str) -> str:
    dataset = client.upload_dataset(synthetic_data, name=name)
    assert client.wait_for_dataset(dataset)["status"] == "pull_complete"
    return client.create_experiment(name, train_datasets=[dataset])


def train_specs(**train) -> dict:
    specs = copy.deepcopy(TINY_TRAIN)
    specs["train"].update(train)
    return specs


def ray_job(jobs, job: dict, run: int = 1):
    """The Ray job of a service job's `run`-th run (its submission id holds the queue seq)."""
    found = [j for j in jobs.list_jobs() if (j.metadata or {}).get("reidnet_job_id") == job["id"]]
    found.sort(key=lambda j: j.start_time)
    return found[run - 1]


def test_full_flow_runs_every_job_on_ray(on_ray, ray_jobs, synthetic_data, tmp_path):
    server, client = on_ray
    experiment = new_experiment(client, synthetic_data, "flow")
    train = client.submit_job(experiment, "train", specs=train_specs(num_epochs=2))

    streamed = "".join(client.follow_logs(experiment, train))  # returns when the job ends
    assert "epoch 2/2" in streamed and "checkpoint" in streamed
    job = client.wait(experiment, train, progress=False)
    assert job["status"] == "Done", job["error"]
    assert job["progress"]["epoch"] == 2 and job["result"]["checkpoint"].endswith("latest.pth")

    on_cluster = ray_job(ray_jobs, job)
    assert on_cluster.status == "SUCCEEDED" and on_cluster.submission_id.startswith(
        f"reidnet-{train}-"
    )
    handle = stored_handle(server, train)
    assert handle["submission_id"] == on_cluster.submission_id
    assert (handle["num_cpus"], handle["num_gpus"]) == (1, 0)  # auto: the cluster has no GPU
    assert "reidnet.service.ray_entry" in on_cluster.entrypoint

    evaluate = client.submit_job(experiment, "evaluate", parent_job_id=train)
    export = client.submit_job(experiment, "export", parent_job_id=train)
    queued = [client.job(experiment, job_id) for job_id in (evaluate, export)]
    assert sum(j["status"] == "Running" for j in queued) <= 1  # --max-jobs 1 holds on Ray
    finished = [client.wait(experiment, job_id, progress=False) for job_id in (evaluate, export)]
    assert [j["status"] for j in finished] == ["Done", "Done"], [j["error"] for j in finished]
    assert {"mAP", "rank-1"} <= set(finished[0]["result"])
    assert moment(finished[1]["started_at"]) >= moment(finished[0]["finished_at"])
    for finished_job in finished:
        assert ray_job(ray_jobs, finished_job).status == "SUCCEEDED"

    onnx_file = client.download(experiment, export, file="export/reid_model.onnx", dest=tmp_path)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file))
    crops = np.random.default_rng(0).random((2, 3, 32, 16), dtype=np.float32)
    (embeddings,) = session.run(None, {"input": crops})
    assert embeddings.shape == (2, 32) and np.isfinite(embeddings).all()
    archive = client.download(experiment, evaluate, dest=tmp_path)
    assert archive.stat().st_size > 0


def stored_handle(server: LiveServer, job_id: str) -> dict:
    """What the executor stored with the job: the Ray submission and what it asked for."""
    from reidnet.service.db import Database, Job

    database = Database(server.database_url)
    try:
        with database.session() as session:
            return session.get(Job, job_id).handle
    finally:
        database.dispose()


def moment(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_cancel_checkpoints_on_sigterm_and_resume_continues_on_ray(
    on_ray, ray_jobs, synthetic_data, tmp_path
):
    from reidnet.runtime.checkpoint import load_checkpoint

    server, client = on_ray
    experiment = new_experiment(client, synthetic_data, "cancel")
    specs = train_specs(num_epochs=50, validation_interval=50)
    specs["dataset"]["num_workers"] = 1  # a data-loader worker that must not get the SIGTERM
    job_id = client.submit_job(experiment, "train", specs=specs)
    folder = server.data_dir / "jobs" / job_id
    wait_for_epoch(folder, 1)

    assert client.cancel(experiment, job_id)["status"] in ("Running", "Canceled")
    job = client.wait(experiment, job_id, poll_seconds=0.3, progress=False)
    assert job["status"] == "Canceled" and job["error"] is None
    log = client.logs(experiment, job_id)
    assert "stop requested: SIGTERM sent to the job process" in log
    # the trainer's main process got it once: no second signal (it would skip the checkpoint)
    assert log.count("SIGTERM received: finishing the current step") == 1
    assert "checkpoint" in log.split("SIGTERM received: finishing")[1]
    assert ray_job(ray_jobs, job).driver_exit_code == 128 + 15  # the trainer's own exit
    assert job_processes(str(folder)) == []

    saved = client.download(experiment, job_id, "train/reid_model_latest.pth", tmp_path)
    done_epochs = load_checkpoint(saved)["epoch"]
    assert 1 <= done_epochs < 50
    client.resume(experiment, job_id, specs={"train": {"num_epochs": done_epochs + 1}})
    job = client.wait(experiment, job_id, poll_seconds=0.3, progress=False)
    assert job["status"] == "Done", job["error"]
    assert "resuming from" in client.logs(experiment, job_id)
    epochs = [m["epoch"] for m in client.metrics(experiment, job_id)]
    assert epochs == list(range(1, done_epochs + 2))  # no epoch trained twice
    first, second = ray_job(ray_jobs, job, 1), ray_job(ray_jobs, job, 2)
    assert first.submission_id != second.submission_id and second.status == "SUCCEEDED"


def wait_for_epoch(folder: Path, epoch: int, timeout: float = 180) -> float:
    """Wait until the trainer's status.json reports `epoch`; the time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = json.loads((folder / "train" / "status.json").read_text())
            if status.get("epoch", 0) >= epoch:
                return time.monotonic()
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{folder} did not reach epoch {epoch} in {timeout} s")


def test_a_server_killed_with_sigkill_reattaches_to_its_ray_job_which_ends_done(
    ray_address, ray_jobs, synthetic_data, tmp_path
):
    server = ray_server(tmp_path / "data", ray_address).start()
    client = Client(server.url, create_user(server.data_dir, "restart"))
    try:
        experiment = new_experiment(client, synthetic_data, "restart")
        job_id = client.submit_job(
            experiment, "train", specs=train_specs(num_epochs=6, validation_interval=6)
        )
        folder = server.data_dir / "jobs" / job_id
        started = time.monotonic()
        wait_for_epoch(folder, 1)
        killed = time.monotonic()
        server.kill()
        assert job_processes(str(folder))  # the job outlived its server
        trained_meanwhile = wait_for_epoch(folder, 2)  # and kept training, serverless

        server.start()
        restarted = time.monotonic()
        job = client.job(experiment, job_id)
        assert job["status"] == "Running", job  # watched again, not marked Error
        reattached = time.monotonic()
        assert "outlived the previous server: watching it again" in server.log()

        job = client.wait(experiment, job_id, poll_seconds=0.3, progress=False)
        done = time.monotonic()
        assert job["status"] == "Done", job["error"]
        assert job["result"]["epochs_completed"] == 6
        files = {f["path"] for f in client.list_files(experiment, job_id)}
        assert {"train/reid_model_latest.pth", "train/model_epoch_006.pth"} <= files
        assert client.logs(experiment, job_id).count("job " + job_id + " started") == 1
        assert ray_job(ray_jobs, job).status == "SUCCEEDED"
        print(
            "restart timeline (s after submit): "
            f"killed {killed - started:.1f}, epoch 2 done serverless "
            f"{trained_meanwhile - started:.1f}, restarted {restarted - started:.1f}, "
            f"re-attached {reattached - started:.1f}, Done {done - started:.1f}"
        )
    finally:
        client.close()
        server.stop()


def test_a_job_asking_for_a_gpu_the_cluster_lacks_ends_error_naming_it(
    ray_address, dataset_archive, tmp_path
):
    server = ray_server(
        tmp_path / "data", ray_address, "--ray-gpus", "always", "--ray-schedule-timeout", "2"
    ).start()
    try:
        with server.client(create_user(server.data_dir, "gpuless")) as client:
            dataset = wait_for_dataset(client, upload(client, dataset_archive).json()["id"])
            experiment = client.post(
                "/api/v1/experiments", json={"name": "gpu", "train_datasets": [dataset["id"]]}
            ).json()["id"]
            job_id = client.post(
                f"/api/v1/experiments/{experiment}/jobs",
                json={"action": "train", "specs": TINY_TRAIN},
            ).json()["id"]
            job = wait_for_job(client, experiment, job_id, timeout=60)
        assert job["status"] == "Error"
        assert "asks for 1 GPU and 1 CPU (train.num_gpus is 1" in job["error"]
        assert "no node has 1 GPU (the largest has 0 GPU)" in job["error"]
        assert job["exit_code"] is None
    finally:
        server.stop()


# -- the executor's choices, against the same cluster (no job submitted) ------------------------


@pytest.fixture
def executor(ray_address):
    from reidnet.service.ray_executor import RayJobExecutor

    return RayJobExecutor(ray_address, schedule_timeout_seconds=0)


def launch_of(tmp_path: Path, action: str, **train) -> object:
    from reidnet.service.executor import Launch

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps({"train": train}))  # JSON is YAML
    return Launch("j", action, tmp_path, spec_file, tmp_path / "log.txt")


def test_gpu_requests_follow_the_spec_and_the_cluster(executor, tmp_path, monkeypatch):
    from reidnet.errors import ReidnetError

    (node,) = executor._nodes()  # the session's one real node
    assert node["CPU"] == 2 and node.get("GPU", 0) == 0
    assert executor._gpus_for(launch_of(tmp_path, "train", num_gpus=2)) == 0  # no GPU at all
    assert executor._gpus_for(launch_of(tmp_path, "evaluate")) == 0

    monkeypatch.setattr(executor, "_nodes", lambda: [{"CPU": 8, "GPU": 4}, {"CPU": 2}])
    assert executor._gpus_for(launch_of(tmp_path, "train", num_gpus=2)) == 2
    for action in ("evaluate", "inference", "export"):
        assert executor._gpus_for(launch_of(tmp_path, action)) == 1
    with pytest.raises(ReidnetError, match=r"train\.num_nodes is 2: the Ray executor runs a job"):
        executor._gpus_for(launch_of(tmp_path, "train", num_gpus=1, num_nodes=2))


def test_the_missing_resource_is_named_only_when_no_node_could_hold_the_job(executor, monkeypatch):
    handle = {"action": "train", "num_gpus": 2, "num_cpus": 1.0}
    monkeypatch.setattr(executor, "_nodes", lambda: [{"CPU": 8, "GPU": 1}, {"CPU": 4, "GPU": 1}])
    message = executor._missing(handle)
    assert "asks for 2 GPU and 1 CPU (train.num_gpus is 2" in message
    assert "no node has 2 GPU (the largest has 1 GPU)" in message
    assert "lower train.num_gpus" in message
    monkeypatch.setattr(executor, "_nodes", lambda: [{"CPU": 8, "GPU": 2}])
    assert executor._missing(handle) is None  # it fits: busy nodes free up, the job waits
    monkeypatch.setattr(executor, "_nodes", lambda: [{"CPU": 0.5, "GPU": 2}, {"CPU": 8}])
    assert "no single node has 2 GPU and 1 CPU together" in executor._missing(handle)


def test_a_ray_job_the_cluster_has_no_record_of_ends_with_that_reason(executor, tmp_path):
    handle = {"submission_id": "reidnet-nosuchjob-1", "control": str(tmp_path / "c")}
    ended = executor.poll(handle)
    assert ended.exit_code is None
    assert "the Ray job reidnet-nosuchjob-1 is gone" in ended.error and "resume" in ended.error
