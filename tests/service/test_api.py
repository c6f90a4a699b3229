"""The REST contract without running jobs: keys, ownership, specs, and 4xx answers for bad input."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from live_server import TINY_TRAIN, upload, wait_for_dataset
from reidnet.service.auth import hash_key
from reidnet.service.db import Database


def test_health_and_docs_need_no_key_everything_else_does(server):
    assert httpx.get(f"{server.url}/api/v1/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/api/v1/datasets" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for headers in ({}, {"Authorization": "Bearer reid_not-a-key"}, {"Authorization": "Basic x"}):
        answer = httpx.get(f"{server.url}/api/v1/datasets", headers=headers)
        assert answer.status_code == 401
        assert "Authorization: Bearer" in answer.json()["detail"]


def test_users_create_stores_only_the_hash_of_the_key(server, alice):
    key = alice.headers["Authorization"].removeprefix("Bearer ")
    assert key.startswith("reid_") and len(key) > 40
    database = Database(server.database_url)
    with database.session() as session:
        rows = [tuple(map(str, row)) for row in session.execute(text("SELECT * FROM users"))]
    database.dispose()
    assert any(hash_key(key) in row for row in rows)
    assert not any(key in value for row in rows for value in row)
    if server.database_url.startswith("sqlite"):
        assert key.encode() not in (server.data_dir / "reidnet.db").read_bytes()


def test_another_user_gets_404_never_the_data(alice, bob, dataset_id, experiment_id):
    job = alice.post(
        f"/api/v1/experiments/{experiment_id}/jobs",
        json={"action": "train", "specs": TINY_TRAIN},
    ).json()["id"]
    jobs = f"/api/v1/experiments/{experiment_id}/jobs"
    for method, path in [
        ("GET", f"/api/v1/datasets/{dataset_id}"),
        ("DELETE", f"/api/v1/datasets/{dataset_id}"),
        ("GET", f"/api/v1/experiments/{experiment_id}"),
        ("PATCH", f"/api/v1/experiments/{experiment_id}"),
        ("DELETE", f"/api/v1/experiments/{experiment_id}"),
        ("GET", f"/api/v1/experiments/{experiment_id}/specs/train/schema"),
        ("GET", jobs),
        ("GET", f"{jobs}/{job}"),
        ("GET", f"{jobs}/{job}/logs"),
        ("GET", f"{jobs}/{job}:list_files"),
        ("GET", f"{jobs}/{job}:download"),
        ("POST", f"{jobs}/{job}:cancel"),
        ("POST", f"{jobs}/{job}:resume"),
        ("DELETE", f"{jobs}/{job}"),
    ]:
        kwargs = {"json": {}} if method in ("PATCH", "POST") else {}
        answer = bob.request(method, path, **kwargs)
        assert answer.status_code == 404, (method, path, answer.text)
        assert set(answer.json()) == {"detail"} and "not found" in answer.json()["detail"]
    assert bob.get("/api/v1/datasets").json() == []
    assert bob.get("/api/v1/experiments").json() == []
    # Nor can bob build on alice's things.
    stolen = bob.post("/api/v1/experiments", json={"name": "x", "train_datasets": [dataset_id]})
    assert stolen.status_code == 404 and dataset_id in stolen.json()["detail"]
    mine = bob.post("/api/v1/experiments", json={"name": "x"}).json()["id"]
    child = bob.post(
        f"/api/v1/experiments/{mine}/jobs", json={"action": "evaluate", "parent_job_id": job}
    )
    assert child.status_code == 404
    alice.post(f"{jobs}/{job}:cancel")


def test_a_job_is_found_only_under_its_own_experiment_of_its_own_owner(alice, bob, experiment_id):
    jobs = f"/api/v1/experiments/{experiment_id}/jobs"
    job = alice.post(jobs, json={"action": "train", "specs": TINY_TRAIN}).json()["id"]
    others = alice.post("/api/v1/experiments", json={"name": "other"}).json()["id"]
    bobs = bob.post("/api/v1/experiments", json={"name": "bob's"}).json()["id"]
    try:
        for client, experiment, expected in [
            (alice, others, f"job {job!r} not found"),  # hers, but not of that experiment
            (alice, "nope", "experiment 'nope' not found"),
            (bob, experiment_id, f"experiment {experiment_id!r} not found"),  # not his
            (bob, bobs, f"job {job!r} not found"),  # his experiment, her job
        ]:
            for method, suffix in [("GET", ""), ("GET", "/logs"), ("POST", ":cancel")]:
                path = f"/api/v1/experiments/{experiment}/jobs/{job}{suffix}"
                answer = client.request(method, path)
                assert (answer.status_code, answer.json()) == (404, {"detail": expected}), path
        assert alice.get(f"{jobs}/{job}").json()["experiment_id"] == experiment_id
    finally:
        alice.post(f"{jobs}/{job}:cancel")


def test_spec_schema_gives_submittable_defaults_without_path_keys(alice, experiment_id):
    answer = alice.get(f"/api/v1/experiments/{experiment_id}/specs/train/schema")
    assert answer.status_code == 200
    body = answer.json()
    assert body["default"]["train"]["num_epochs"] == 120
    assert body["default"]["model"]["backbone"] == "resnet_50"
    assert "results_dir" not in body["default"]
    assert "train_dataset_dir" not in body["default"]["dataset"]
    assert "checkpoint" not in body["default"]["evaluate"]
    assert {"results_dir", "dataset.train_dataset_dir", "export.onnx_file"} <= set(
        body["server_owned"]
    )
    assert "properties" in body["schema"]
    unknown = alice.get(f"/api/v1/experiments/{experiment_id}/specs/fly/schema")
    assert unknown.status_code == 404 and "unknown action 'fly'" in unknown.json()["detail"]


@pytest.mark.parametrize(
    "specs, key",
    [
        ({"results_dir": "/tmp/elsewhere"}, "results_dir"),
        ({"train": {"results_dir": "/tmp/x"}}, "train.results_dir"),
        ({"dataset": {"train_dataset_dir": "/etc"}}, "dataset.train_dataset_dir"),
        ({"dataset": {"train_dataset_dir": [{"path": "/etc"}]}}, "dataset.train_dataset_dir"),
        ({"dataset": {"query_dataset_dir": "/etc"}}, "dataset.query_dataset_dir"),
        ({"model": {"pretrained_model_path": "/root/x.pth"}}, "model.pretrained_model_path"),
        (
            {"train": {"resume_training_checkpoint_path": "/x.pth"}},
            "train.resume_training_checkpoint_path",
        ),
        ({"evaluate": {"checkpoint": "/x.pth"}}, "evaluate.checkpoint"),
        ({"evaluate": {"output_cmc_curve_plot": "/x.png"}}, "evaluate.output_cmc_curve_plot"),
        ({"inference": {"output_file": "/x.json"}}, "inference.output_file"),
        ({"export": {"onnx_file": "/x.onnx"}}, "export.onnx_file"),
    ],
)
def test_user_values_for_path_keys_are_refused(alice, experiment_id, specs, key):
    answer = alice.post(
        f"/api/v1/experiments/{experiment_id}/jobs", json={"action": "train", "specs": specs}
    )
    assert answer.status_code == 400
    assert f"spec key {key} is set by the server" in answer.json()["detail"]


def test_path_keys_left_null_as_in_the_defaults_are_accepted(alice, experiment_id):
    defaults = alice.get(f"/api/v1/experiments/{experiment_id}/specs/train/schema").json()
    specs = defaults["default"]
    specs["results_dir"] = None
    specs["evaluate"]["checkpoint"] = None
    answer = alice.post(
        f"/api/v1/experiments/{experiment_id}/jobs", json={"action": "train", "specs": specs}
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()["id"]
    alice.post(f"/api/v1/experiments/{experiment_id}/jobs/{job}:cancel")


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'{"action": "train", ', 400, "not valid JSON"),
        (b'["train"]', 422, "body"),
        (b'{"action": "fly"}', 422, "body.action"),
        (b'{"action": "train", "specs": "fast"}', 422, "body.specs"),
        (b'{"action": "train", "colour": 1}', 422, "body.colour"),
        (b'{"action": "train", "specs": {"train": {"num_epochs": "many"}}}', 400, "num_epochs"),
        (b'{"action": "train", "specs": {"train": {"num_epoch": 3}}}', 400, "num_epochs"),
        (b'{"action": "train", "specs": {"model": {"backbone": "vgg"}}}', 400, "model.backbone"),
        (b'{"action": "evaluate"}', 400, "needs parent_job_id"),
        (b'{"action": "evaluate", "parent_job_id": "nope"}', 404, "job 'nope' not found"),
    ],
)
def test_bad_job_requests_get_4xx_with_a_clear_detail(alice, experiment_id, body, status, words):
    answer = alice.post(
        f"/api/v1/experiments/{experiment_id}/jobs",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/api/v1/datasets/unknown", None, 404),
        ("GET", "/api/v1/experiments/unknown", None, 404),
        ("GET", "/api/v1/experiments/unknown/jobs", None, 404),
        ("POST", "/api/v1/experiments", {"name": ""}, 422),
        ("POST", "/api/v1/experiments", {"name": "x", "train_datasets": "abc"}, 422),
        ("POST", "/api/v1/experiments", {"name": "x", "train_datasets": ["unknown"]}, 404),
        ("POST", "/api/v1/experiments", {"name": "x", "base_experiment": "unknown"}, 404),
        ("POST", "/api/v1/datasets", None, 415),
    ],
)
def test_unknown_ids_and_wrong_types_get_4xx(alice, method, path, body, status):
    answer = alice.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["detail"], str) and answer.json()["detail"]


def test_unknown_job_ids_and_verbs_get_404(alice, experiment_id):
    jobs = f"/api/v1/experiments/{experiment_id}/jobs"
    for method, path in [
        ("GET", f"{jobs}/unknown"),
        ("GET", f"{jobs}/unknown/logs"),
        ("GET", f"{jobs}/unknown:list_files"),
        ("GET", f"{jobs}/unknown:download"),
        ("POST", f"{jobs}/unknown:cancel"),
        ("GET", f"{jobs}/unknown:explode"),
    ]:
        answer = alice.request(method, path)
        assert answer.status_code in (404, 405), (path, answer.text)


def test_a_train_job_needs_ready_training_data(alice):
    bare = alice.post("/api/v1/experiments", json={"name": "empty"}).json()["id"]
    answer = alice.post(f"/api/v1/experiments/{bare}/jobs", json={"action": "train"})
    assert answer.status_code == 400 and "no train_datasets" in answer.json()["detail"]


def test_experiments_patch_and_delete(alice, dataset_id):
    experiment = alice.post("/api/v1/experiments", json={"name": "first"}).json()
    patched = alice.patch(
        f"/api/v1/experiments/{experiment['id']}",
        json={"name": "second", "train_datasets": [dataset_id], "eval_dataset": dataset_id},
    ).json()
    assert (patched["name"], patched["train_datasets"]) == ("second", [dataset_id])
    assert patched["eval_dataset"] == dataset_id
    in_use = alice.delete(f"/api/v1/datasets/{dataset_id}")
    assert in_use.status_code == 409 and "is used by experiment" in in_use.json()["detail"]
    assert alice.delete(f"/api/v1/experiments/{experiment['id']}").status_code == 200
    assert alice.get(f"/api/v1/experiments/{experiment['id']}").status_code == 404


def test_datasets_can_be_listed_and_deleted(alice, dataset_archive, server):
    created = upload(alice, dataset_archive, name="to delete").json()
    dataset = wait_for_dataset(alice, created["id"])
    assert dataset["name"] == "to delete" and dataset["status"] == "pull_complete"
    assert dataset["splits"] == {
        "train": "bounding_box_train",
        "test": "bounding_box_test",
        "query": "query",
    }
    assert dataset["stats"]["train"]["total"]["identities"] == 16
    assert dataset["stats"]["query"]["total"]["identities"] == 8
    assert dataset["validation"]["ok"] is True
    assert created["id"] in [d["id"] for d in alice.get("/api/v1/datasets").json()]
    assert alice.delete(f"/api/v1/datasets/{created['id']}").status_code == 200
    assert not (server.data_dir / "datasets" / created["id"]).exists()
    assert alice.get(f"/api/v1/datasets/{created['id']}").status_code == 404
