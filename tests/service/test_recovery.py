"""What a server killed with SIGKILL leaves behind is finished or removed at the next start
(red-team faults 12 and 13)."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import threading
import time

import httpx
import pytest

from live_server import (
    TINY_TRAIN,
    LiveServer,
    create_user,
    job_processes,
    make_archive,
    upload,
    wait_for_dataset,
    wait_for_job,
)
from reidnet.service.datasets import DatasetProcessor
from reidnet.service.db import INVALID, PROCESSING, PULL_COMPLETE, Database, Dataset, User
from reidnet.service.settings import ServiceSettings


def processing_dataset(tmp_path, name: str) -> tuple[ServiceSettings, Database, str]:
    """A data folder whose database holds one dataset still marked processing."""
    settings = ServiceSettings(data_dir=tmp_path / "data")
    settings.make_folders()
    database = Database(settings.url)
    database.create_all()
    with database.session() as session:
        user = User(name=name, key_hash="0" * 64)
        session.add(user)
        session.flush()
        dataset = Dataset(owner_id=user.id, name=name, status=PROCESSING, archive_name="d.tar.gz")
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id
    return settings, database, dataset_id


def recover(settings: ServiceSettings, database: Database) -> None:
    processor = DatasetProcessor(database, settings)
    processor.recover()
    processor.shutdown()  # waits for the resubmitted work


def stored(database: Database, dataset_id: str) -> Dataset:
    with database.session() as session:
        return session.get(Dataset, dataset_id)


def test_a_dataset_killed_while_validated_is_validated_again(tmp_path, synthetic_data):
    """The state an older server left: archive removed after extraction, validation cut off."""
    settings, database, dataset_id = processing_dataset(tmp_path, "killed-validating")
    shutil.copytree(synthetic_data, settings.datasets_dir / dataset_id)
    recover(settings, database)
    dataset = stored(database, dataset_id)
    assert dataset.status == PULL_COMPLETE, dataset.error
    assert set(dataset.splits) == {"train", "test", "query"}
    # `dataset synth` output carries its .reidnet-synthetic marker: counted as synthetic
    assert dataset.stats["train"]["synthetic"]["identities"] == 16
    database.dispose()


def test_a_dataset_killed_while_extracted_is_processed_again(tmp_path, synthetic_data):
    """The archive stays until the outcome is stored: a half-made folder is made again."""
    settings, database, dataset_id = processing_dataset(tmp_path, "killed-extracting")
    make_archive(synthetic_data, settings.uploads_dir / dataset_id)
    half = settings.datasets_dir / f".staging-{dataset_id}"
    half.mkdir()
    (half / "partial.jpg").write_bytes(b"cut off")
    recover(settings, database)
    dataset = stored(database, dataset_id)
    assert dataset.status == PULL_COMPLETE, dataset.error
    assert not (settings.uploads_dir / dataset_id).exists()
    assert not half.exists()
    database.dispose()


def test_a_dataset_with_neither_archive_nor_folder_is_invalid_and_says_why(tmp_path):
    settings, database, dataset_id = processing_dataset(tmp_path, "lost")
    recover(settings, database)
    dataset = stored(database, dataset_id)
    assert dataset.status == INVALID
    assert "archive is gone" in dataset.error and "upload it again" in dataset.error
    database.dispose()


def test_folders_of_datasets_that_have_no_row_are_removed(tmp_path):
    settings, database, _dataset_id = processing_dataset(tmp_path, "orphans")
    (settings.datasets_dir / "0123456789abcdef0123456789abcdef").mkdir()
    recover(settings, database)
    assert list(settings.datasets_dir.iterdir()) == []
    database.dispose()


def test_an_upload_cut_off_by_sigkill_is_removed_at_the_next_start(tmp_path):
    server = LiveServer(tmp_path / "data").start()
    uploads = server.data_dir / "uploads"
    key = create_user(server.data_dir, "uploader")
    release = threading.Event()
    boundary = "reidnetboundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.tar.gz"\r\n\r\n'
        ).encode()
        for _ in range(4):
            yield bytes(256 * 1024)
        release.wait(60)  # the rest never comes: the server dies first
        yield b"\r\n"

    def send():
        with contextlib.suppress(httpx.TransportError):
            httpx.post(
                f"{server.url}/api/v1/datasets",
                content=body(),
                headers={
                    "Authorization": f"Bearer {key}",
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                },
                timeout=60,
            )

    sender = threading.Thread(target=send)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            p.stat().st_size >= 1 << 20 for p in uploads.iterdir()
        ):
            time.sleep(0.1)
        server.kill()
        partial = list(uploads.iterdir())
        assert len(partial) == 1 and partial[0].stat().st_size >= 1 << 20
    finally:
        release.set()
        sender.join()
    server.start()
    try:
        assert list(uploads.iterdir()) == []
        with server.client(key) as client:
            assert client.get("/api/v1/datasets").json() == []
    finally:
        server.stop()


@pytest.mark.slow
def test_a_job_that_finished_while_the_server_was_down_is_done_and_one_killed_is_error(
    tmp_path, dataset_archive
):
    server = LiveServer(tmp_path / "data", "--max-jobs", "2").start()
    try:
        client = server.client(create_user(server.data_dir, "erin"))
        dataset = wait_for_dataset(client, upload(client, dataset_archive).json()["id"])
        experiment = client.post(
            "/api/v1/experiments", json={"name": "down", "train_datasets": [dataset["id"]]}
        ).json()["id"]
        jobs = f"/api/v1/experiments/{experiment}/jobs"
        short, long = copy.deepcopy(TINY_TRAIN), copy.deepcopy(TINY_TRAIN)
        short["train"]["num_epochs"], long["train"]["num_epochs"] = 2, 500
        finishing = client.post(jobs, json={"action": "train", "specs": short}).json()["id"]
        dying = client.post(jobs, json={"action": "train", "specs": long}).json()["id"]
        for job_id in (finishing, dying):
            wait_for_job(client, experiment, job_id, until=lambda job: job["status"] == "Running")
        server.kill()  # seconds before either job has even imported torch

        for pid in job_processes(str(server.data_dir / "jobs" / dying)):
            os.kill(pid, signal.SIGKILL)  # dies midway, while no server watches
        deadline = time.monotonic() + 300
        while job_processes(str(server.data_dir / "jobs" / finishing)):
            assert time.monotonic() < deadline, "the 2-epoch job never ended"
            time.sleep(0.2)

        server.start()
        done = client.get(f"{jobs}/{finishing}").json()
        assert (done["status"], done["exit_code"], done["error"]) == ("Done", 0, None)
        assert done["result"]["epochs_completed"] == 2
        assert done["result"]["checkpoint"] == "train/reid_model_latest.pth"
        died = client.get(f"{jobs}/{dying}").json()
        assert died["status"] == "Error" and died["exit_code"] is None
        assert "ended while the server was down, without recording an exit status" in died["error"]
        client.close()
    finally:
        server.stop()
