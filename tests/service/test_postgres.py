"""The service on PostgreSQL: set REIDNET_TEST_DATABASE_URL (an empty database) to run it."""

from __future__ import annotations

import os

import pytest

from live_server import TINY_TRAIN, LiveServer, create_user, upload, wait_for_dataset, wait_for_job

DATABASE_URL = os.environ.get("REIDNET_TEST_DATABASE_URL", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATABASE_URL.startswith("postgresql"),
        reason="set REIDNET_TEST_DATABASE_URL=postgresql+psycopg://... to test PostgreSQL",
    ),
]


def test_upload_and_train_with_state_in_postgresql(tmp_path, dataset_archive):
    options = ("--database-url", DATABASE_URL)
    server = LiveServer(tmp_path / "data", *options).start()
    try:
        client = server.client(create_user(server.data_dir, f"pg{os.getpid()}", *options))
        dataset = wait_for_dataset(client, upload(client, dataset_archive).json()["id"])
        assert dataset["status"] == "pull_complete", dataset
        assert not (server.data_dir / "reidnet.db").exists()
        experiment = client.post(
            "/api/v1/experiments", json={"name": "pg", "train_datasets": [dataset["id"]]}
        ).json()["id"]
        jobs = f"/api/v1/experiments/{experiment}/jobs"
        train = client.post(jobs, json={"action": "train", "specs": TINY_TRAIN}).json()["id"]
        waiting = client.post(jobs, json={"action": "evaluate", "parent_job_id": train})
        assert client.post(f"{jobs}/{waiting.json()['id']}:cancel").json()["status"] == "Canceled"
        job = wait_for_job(client, experiment, train)
        assert job["status"] == "Done", job["error"]
        assert job["result"]["epochs_completed"] == 1
        assert [j["id"] for j in client.get(jobs).json()] == [train, waiting.json()["id"]]
        client.close()
    finally:
        server.stop()
