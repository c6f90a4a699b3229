"""Key management: `reidnet users list | revoke | rotate | delete` on a running server's data."""

from __future__ import annotations

import subprocess

from live_server import (
    TINY_TRAIN,
    create_user,
    database_options,
    reidnet_command,
    upload,
    wait_for_dataset,
    wait_for_job,
)


def users(server, *args: str) -> subprocess.CompletedProcess:
    options = ("--data-dir", str(server.data_dir), *database_options(server.data_dir))
    return subprocess.run(
        reidnet_command("users", *args, *options), capture_output=True, text=True, timeout=120
    )


def test_a_revoked_key_is_refused_at_the_next_request_and_rotate_gives_a_new_one(server):
    key = create_user(server.data_dir, "carol")
    with server.client(key) as carol:
        assert carol.get("/api/v1/datasets").status_code == 200
        done = users(server, "revoke", "carol")
        assert done.returncode == 0, done.stderr
        answer = carol.get("/api/v1/datasets")
        assert answer.status_code == 401
    listing = users(server, "list")
    assert listing.returncode == 0, listing.stderr
    carol_row = next(line for line in listing.stdout.splitlines() if "carol" in line)
    assert "revoked" in carol_row
    rotated = users(server, "rotate", "carol")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key.startswith("reid_") and new_key != key
    with server.client(new_key) as carol:
        assert carol.get("/api/v1/datasets").status_code == 200
    with server.client(key) as old:
        assert old.get("/api/v1/datasets").status_code == 401


def test_unknown_users_are_a_clean_error(server):
    for command in ("revoke", "rotate", "delete"):
        done = users(server, command, "nobody-here")
        assert done.returncode == 2
        assert "no user 'nobody-here'" in done.stderr and "Traceback" not in done.stderr


def test_delete_waits_for_active_jobs_then_removes_everything(server, dataset_archive):
    key = create_user(server.data_dir, "dave")
    with server.client(key) as dave:
        dataset = wait_for_dataset(dave, upload(dave, dataset_archive).json()["id"])
        experiment = dave.post(
            "/api/v1/experiments", json={"name": "d", "train_datasets": [dataset["id"]]}
        ).json()["id"]
        jobs = f"/api/v1/experiments/{experiment}/jobs"
        specs = {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "num_epochs": 500}}
        job = dave.post(jobs, json={"action": "train", "specs": specs}).json()["id"]
        refused = users(server, "delete", "dave")
        assert refused.returncode == 2
        assert "1 queued or running job(s)" in refused.stderr
        assert dave.get(f"{jobs}/{job}").status_code == 200
        dave.post(f"{jobs}/{job}:cancel")
        wait_for_job(dave, experiment, job)
        assert (server.data_dir / "datasets" / dataset["id"]).is_dir()
        assert (server.data_dir / "jobs" / job).is_dir()
        deleted = users(server, "delete", "dave")
        assert deleted.returncode == 0, deleted.stderr
        assert "1 dataset(s), 1 experiment(s) and 1 job(s)" in deleted.stdout
        assert dave.get("/api/v1/datasets").status_code == 401
    assert not (server.data_dir / "datasets" / dataset["id"]).exists()
    assert not (server.data_dir / "jobs" / job).exists()
    assert "dave" not in users(server, "list").stdout
