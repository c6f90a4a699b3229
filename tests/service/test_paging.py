"""Every list comes in pages (`?limit`, default 100, at most 1000; `?offset`), in a stable order,
with the whole list's size in the X-Total-Count header; the Python client reads every page."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from live_server import create_user
from reidnet.client import Client
from reidnet.service.db import CANCELED, INVALID, Database, Dataset, Job, User

FILES = ["a.txt", "b.txt", "train/c.txt", "train/d.txt", "train/e.txt"]


@dataclass
class Lists:
    """A user who owns 5 datasets, 5 experiments, 5 jobs in `experiment` and 5 files in `job`."""

    http: httpx.Client
    key: str
    experiment: str
    job: str

    @property
    def paths(self) -> dict[str, str]:
        jobs = f"/api/v1/experiments/{self.experiment}/jobs"
        return {
            "datasets": "/api/v1/datasets",
            "experiments": "/api/v1/experiments",
            "jobs": jobs,
            "files": f"{jobs}/{self.job}:list_files",
        }


@pytest.fixture(scope="module")
def lists(server):
    key = create_user(server.data_dir, "pager")
    http = server.client(key)
    experiments = [
        http.post("/api/v1/experiments", json={"name": f"paged-{n}"}).json()["id"] for n in range(5)
    ]
    database = Database(server.database_url)
    with database.session() as session:
        owner = session.query(User).filter_by(name="pager").one().id
        for n in range(5):
            session.add(Dataset(owner_id=owner, name=f"d{n}", status=INVALID, archive_name="x"))
        jobs = [
            Job(experiment_id=experiments[0], owner_id=owner, action="train", status=CANCELED)
            for _ in range(5)
        ]
        session.add_all(jobs)
        session.flush()
        job_id = jobs[0].id
    database.dispose()
    folder = server.data_dir / "jobs" / job_id
    (folder / "train").mkdir(parents=True)
    for name in FILES:
        (folder / name).write_text(name)
    yield Lists(http, key, experiments[0], job_id)
    http.close()


def identity(item: dict) -> str:
    return item.get("id") or item["path"]


@pytest.mark.parametrize("listed", ["datasets", "experiments", "jobs", "files"])
def test_pages_of_2_split_5_items_into_2_2_1_in_the_order_of_the_whole_list(lists, listed):
    path = lists.paths[listed]
    whole = lists.http.get(path)
    assert whole.headers["X-Total-Count"] == "5"
    everything = [identity(item) for item in whole.json()]
    assert len(everything) == len(set(everything)) == 5
    pages = []
    for offset in (0, 2, 4):
        answer = lists.http.get(path, params={"limit": 2, "offset": offset})
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Total-Count"] == "5"
        pages.append([identity(item) for item in answer.json()])
    assert [len(page) for page in pages] == [2, 2, 1]
    assert pages[0] + pages[1] + pages[2] == everything  # disjoint, together the whole list
    past_the_end = lists.http.get(path, params={"offset": 5})
    assert past_the_end.json() == [] and past_the_end.headers["X-Total-Count"] == "5"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 1001}, ("limit", "less than or equal to 1000")),
        ({"limit": 0}, ("limit", "greater than or equal to 1")),
        ({"offset": -1}, ("offset", "greater than or equal to 0")),
    ],
)
def test_a_page_over_1000_or_a_negative_offset_is_refused_naming_it(lists, params, words):
    for path in lists.paths.values():
        answer = lists.http.get(path, params=params)
        assert answer.status_code == 422, answer.text
        assert all(word in answer.json()["detail"] for word in words), answer.json()["detail"]


def test_the_schema_shows_the_paging_parameters_and_the_total_header(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for path in (
        "/api/v1/datasets",
        "/api/v1/experiments",
        "/api/v1/experiments/{experiment_id}/jobs",
        "/api/v1/experiments/{experiment_id}/jobs/{job_id}:list_files",
    ):
        listing = schema["paths"][path]["get"]
        assert {"limit", "offset"} <= {p["name"] for p in listing["parameters"]}
        assert "X-Total-Count" in listing["responses"]["200"]["headers"]


def test_the_client_reads_every_page(lists, server, monkeypatch):
    monkeypatch.setattr("reidnet.client.PAGE_SIZE", 2)  # 5 items: pages of 2, 2 and 1
    whole = {name: lists.http.get(path).json() for name, path in lists.paths.items()}
    with Client(server.url, lists.key) as client:
        assert client.datasets() == whole["datasets"]
        assert client.experiments() == whole["experiments"]
        assert client.jobs(lists.experiment) == whole["jobs"]
        assert client.list_files(lists.experiment, lists.job) == whole["files"]
