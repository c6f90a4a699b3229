"""A real `reidnet serve` on a free loopback port, two users, and a small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from live_server import LiveServer, create_user, make_archive, upload, wait_for_dataset
from reidnet.datatools.synthetic import generate_synthetic_dataset

# Small caps so the safety tests stay small: 2 MiB uploads, 4 MiB unpacked, 400 entries.
SERVER_OPTIONS = (
    "--max-upload-mb",
    "2",
    "--max-dataset-mb",
    "4",
    "--max-dataset-files",
    "400",
    "--cancel-grace",
    "30",
)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """16 training and 8 test identities over 3 cameras, 64x32 crops (145 images)."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(
        root,
        identities=24,
        test_identities=8,
        cameras=3,
        images_per_identity=6,
        size=(64, 32),
        seed=1,
    )
    return root


@pytest.fixture(scope="session")
def dataset_archive(synthetic_data, tmp_path_factory) -> Path:
    return make_archive(synthetic_data, tmp_path_factory.mktemp("archives") / "synthetic.tar.gz")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("service") / "data", *SERVER_OPTIONS).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def alice(server):
    with server.client(create_user(server.data_dir, "alice")) as client:
        yield client


@pytest.fixture(scope="session")
def bob(server):
    with server.client(create_user(server.data_dir, "bob")) as client:
        yield client


@pytest.fixture(scope="session")
def dataset_id(alice, dataset_archive) -> str:
    created = upload(alice, dataset_archive)
    assert created.status_code == 201, created.text
    dataset = wait_for_dataset(alice, created.json()["id"])
    assert dataset["status"] == "pull_complete", dataset
    return dataset["id"]


@pytest.fixture
def experiment_id(alice, dataset_id) -> str:
    created = alice.post(
        "/api/v1/experiments", json={"name": "tiny", "train_datasets": [dataset_id]}
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]
