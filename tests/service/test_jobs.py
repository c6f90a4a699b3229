"""Jobs on a real server: the full flow, the queue, logs, cancel, resume and restart recovery."""

from __future__ import annotations

import copy
import itertools
import tarfile
import threading
from datetime import datetime

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
from reidnet.client import ApiError, Client

pytestmark = pytest.mark.slow


def train_specs(**train) -> dict:
    specs = copy.deepcopy(TINY_TRAIN)
    specs["train"].update(train)
    return specs


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_full_flow_upload_train_evaluate_export_download(server, alice, synthetic_data, tmp_path):
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    with Client(server.url, key) as client:
        dataset = client.upload_dataset(synthetic_data, name="flow")
        assert client.wait_for_dataset(dataset)["status"] == "pull_complete"
        experiment = client.create_experiment("flow", train_datasets=[dataset])
        assert client.spec_defaults(experiment, "train")["train"]["num_epochs"] == 120
        specs = train_specs(num_epochs=2, validation_interval=2)
        train = client.submit_job(experiment, "train", specs=specs)

        streamed = "".join(client.follow_logs(experiment, train))  # returns when the job ends
        assert "epoch 2/2" in streamed and "checkpoint" in streamed
        job = client.wait(experiment, train, progress=False)
        assert job["status"] == "Done", job["error"]
        assert job["progress"]["epoch"] == job["progress"]["num_epochs"] == 2
        assert {"id", "triplet", "total"} <= set(job["progress"]["losses"])
        assert job["result"]["checkpoint"] == "train/reid_model_latest.pth"
        assert 0 <= job["result"]["mAP"] <= 1 and "rank-1" in job["result"]
        assert [m["epoch"] for m in client.metrics(experiment, train)] == [1, 2]
        assert len(client.logs(experiment, train, tail=3).splitlines()) == 3

        # Submissions at the same moment with --max-jobs 1: one runs, the other waits its turn.
        children: dict[str, str] = {}

        def submit(action: str) -> None:
            children[action] = client.submit_job(experiment, action, parent_job_id=train)

        threads = [threading.Thread(target=submit, args=(a,)) for a in ("evaluate", "export")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        queued = [client.job(experiment, job_id) for job_id in children.values()]
        assert sum(j["status"] == "Running" for j in queued) <= 1
        assert 1 in [j["queue_position"] for j in queued if j["status"] == "Pending"]
        finished = [client.wait(experiment, children[a], progress=False) for a in children]
        assert all(j["status"] == "Done" for j in finished), [j["error"] for j in finished]
        by_queue = sorted(finished, key=lambda j: moment(j["queued_at"]))
        for earlier, later in itertools.pairwise(by_queue):
            assert moment(later["started_at"]) >= moment(earlier["finished_at"])

        evaluation = client.job(experiment, children["evaluate"])["result"]
        assert {"mAP", "rank-1", "rank-5", "rank-10"} <= set(evaluation)
        evaluate_files = [f["path"] for f in client.list_files(experiment, children["evaluate"])]
        assert {"evaluate/results.json", "evaluate/cmc_curve.png"} <= set(evaluate_files)

        export_files = [f["path"] for f in client.list_files(experiment, children["export"])]
        assert "export/reid_model.onnx" in export_files
        onnx_file = client.download(
            experiment, children["export"], file="export/reid_model.onnx", dest=tmp_path
        )
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_file))
        crops = np.random.default_rng(0).random((2, 3, 32, 16), dtype=np.float32)
        (embeddings,) = session.run(None, {"input": crops})
        assert embeddings.shape == (2, 32) and np.isfinite(embeddings).all()

        # A partial download continues with a Range request and ends byte-identical.
        whole = onnx_file.read_bytes()
        partial = tmp_path / "again" / "reid_model.onnx.part"
        partial.parent.mkdir()
        partial.write_bytes(whole[:1000])
        again = client.download(
            experiment, children["export"], file="export/reid_model.onnx", dest=tmp_path / "again"
        )
        assert again.read_bytes() == whole
        ranged = alice.get(
            f"/api/v1/experiments/{experiment}/jobs/{children['export']}:download",
            params={"file": "export/reid_model.onnx"},
            headers={"Range": "bytes=10-19"},
        )
        assert ranged.status_code == 206 and ranged.content == whole[10:20]

        evaluate = children["evaluate"]  # a small folder: the train one holds 100 MB checkpoints
        folder = client.download(experiment, evaluate, dest=tmp_path)
        with tarfile.open(folder) as archive:
            names = set(archive.getnames())
        assert {f"{evaluate}/{name}" for name in evaluate_files} <= names
        assert f"{evaluate}/spec.yaml" in names


def test_job_files_cannot_be_read_outside_the_job_folder(alice, experiment_id):
    job = alice.post(
        f"/api/v1/experiments/{experiment_id}/jobs", json={"action": "train", "specs": TINY_TRAIN}
    ).json()["id"]
    alice.post(f"/api/v1/experiments/{experiment_id}/jobs/{job}:cancel")
    download = f"/api/v1/experiments/{experiment_id}/jobs/{job}:download"
    for path in ("../../reidnet.db", "/etc/passwd", "train/../../../reidnet.db"):
        answer = alice.get(download, params={"file": path})
        assert answer.status_code == 400 and "inside the job folder" in answer.json()["detail"]
    missing = alice.get(download, params={"file": "nothing.txt"})
    assert missing.status_code == 404


def test_a_failing_job_ends_in_error_with_the_library_message(alice, experiment_id):
    jobs = f"/api/v1/experiments/{experiment_id}/jobs"
    specs = train_specs()
    specs["dataset"]["batch_size"] = 80  # 20 identities per batch; the data has 16
    job_id = alice.post(jobs, json={"action": "train", "specs": specs}).json()["id"]
    job = wait_for_job(alice, experiment_id, job_id)
    assert job["status"] == "Error" and job["exit_code"] == 2
    assert "one batch needs 20" in job["error"] and not job["error"].startswith("error:")


def test_cancel_leaves_a_loadable_checkpoint_and_resume_continues(
    server, alice, experiment_id, tmp_path
):
    from reidnet.runtime.checkpoint import load_checkpoint

    client = Client(server.url, alice.headers["Authorization"].removeprefix("Bearer "))
    specs = train_specs(num_epochs=50, checkpoint_interval=1, validation_interval=50)
    job_id = client.submit_job(experiment_id, "train", specs=specs)

    def has_checkpoint(_job):
        files = client.list_files(experiment_id, job_id)
        return any(f["path"] == "train/model_epoch_001.pth" for f in files)

    wait_for_job(alice, experiment_id, job_id, until=has_checkpoint)
    assert client.cancel(experiment_id, job_id)["status"] in ("Running", "Canceled")
    job = client.wait(experiment_id, job_id, poll_seconds=0.3, progress=False)
    assert job["status"] == "Canceled" and job["error"] is None
    assert job_processes(str(server.data_dir / "jobs" / job_id)) == []  # the whole group ended
    with pytest.raises(ApiError, match="already ended") as refused:
        client.cancel(experiment_id, job_id)
    assert refused.value.status_code == 409

    saved = client.download(experiment_id, job_id, "train/reid_model_latest.pth", tmp_path)
    done_epochs = load_checkpoint(saved)["epoch"]
    assert 1 <= done_epochs < 50

    resumed = client.resume(experiment_id, job_id, specs={"train": {"num_epochs": done_epochs + 1}})
    assert resumed["status"] in ("Pending", "Running")
    job = client.wait(experiment_id, job_id, poll_seconds=0.3, progress=False)
    assert job["status"] == "Done", job["error"]
    log = client.logs(experiment_id, job_id)
    assert "resuming from" in log and log.count("started") >= 2
    epochs = [m["epoch"] for m in client.metrics(experiment_id, job_id)]
    assert epochs == list(range(1, done_epochs + 2))  # no epoch trained twice
    client.delete_job(experiment_id, job_id)
    assert not (server.data_dir / "jobs" / job_id).exists()
    client.close()


def test_restart_marks_running_jobs_error_stops_them_and_restarts_the_queue(
    tmp_path, dataset_archive
):
    server = LiveServer(tmp_path / "data", "--cancel-grace", "30").start()
    try:
        client = server.client(create_user(server.data_dir, "carol"))
        dataset = wait_for_dataset(client, upload(client, dataset_archive).json()["id"])
        experiment = client.post(
            "/api/v1/experiments", json={"name": "restart", "train_datasets": [dataset["id"]]}
        ).json()["id"]
        jobs = f"/api/v1/experiments/{experiment}/jobs"
        long_specs = train_specs(num_epochs=50, checkpoint_interval=1, validation_interval=50)
        running = client.post(jobs, json={"action": "train", "specs": long_specs}).json()["id"]
        queued = client.post(jobs, json={"action": "inference", "parent_job_id": running}).json()[
            "id"
        ]  # waits for its parent to end, then embeds with its latest checkpoint

        def has_checkpoint(job):
            files = client.get(f"{jobs}/{running}:list_files").json()
            return any(f["path"] == "train/model_epoch_001.pth" for f in files)

        wait_for_job(client, experiment, running, until=has_checkpoint)
        assert client.get(f"{jobs}/{queued}").json()["status"] == "Pending"
        server.kill()
        job_folder = str(server.data_dir / "jobs" / running)
        assert job_processes(job_folder)  # the job outlived its server

        server.start()
        job = client.get(f"{jobs}/{running}").json()
        assert job["status"] == "Error" and "server restarted" in job["error"]
        assert job_processes(job_folder) == []
        inference = wait_for_job(client, experiment, queued)
        assert inference["status"] == "Done", inference["error"]
        assert "inference/result.json" in inference["result"]["files"]

        done_epochs = job["result"]["epochs_completed"] or 1
        client.post(
            f"{jobs}/{running}:resume", json={"specs": {"train": {"num_epochs": done_epochs + 1}}}
        )
        job = wait_for_job(client, experiment, running)
        assert job["status"] == "Done", job["error"]
        assert "resuming from" in client.get(f"{jobs}/{running}/logs").text
        client.close()
    finally:
        server.stop()
