"""API fuzzing in CI: a bounded schemathesis run over every operation, with a valid key.

benchmarks/service_fuzz.py runs the same with many more examples per operation.
"""

from __future__ import annotations

import pytest

from fuzz_api import fuzz_api
from live_server import TINY_TRAIN, LiveServer, create_user, upload, wait_for_dataset, wait_for_job

pytest.importorskip("schemathesis")
pytestmark = pytest.mark.slow

EXAMPLES = 8


def real_ids(client, dataset_archive) -> dict[str, str]:
    dataset = wait_for_dataset(client, upload(client, dataset_archive).json()["id"])
    experiment = client.post(
        "/api/v1/experiments", json={"name": "fuzz", "train_datasets": [dataset["id"]]}
    ).json()["id"]
    job = client.post(
        f"/api/v1/experiments/{experiment}/jobs", json={"action": "train", "specs": TINY_TRAIN}
    ).json()["id"]
    assert wait_for_job(client, experiment, job)["status"] == "Done"
    return {
        "dataset_id": dataset["id"],
        "experiment_id": experiment,
        "job_id": job,
        "action": "train",
    }


def test_fuzzing_every_operation_finds_no_server_error_and_no_schema_violation(
    tmp_path, dataset_archive
):
    server = LiveServer(tmp_path / "data", "--max-upload-mb", "2", "--cancel-grace", "5").start()
    try:
        key = create_user(server.data_dir, "fuzzer")
        with server.client(key) as client:
            ids = real_ids(client, dataset_archive)
        report = fuzz_api(server.url, key, ids, EXAMPLES)
    finally:
        server.stop()
    assert len(report.calls) >= 15, report.calls  # every operation was reached
    assert report.server_errors == 0, report.failures
    assert report.failures == []
    assert "unexpected error" not in server.log()  # every 500 is logged so
