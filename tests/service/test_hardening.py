"""The faults a red-team run found in `reidnet serve`, each reproduced against a live server.

Every test here failed before its fix: a 500, a body stored that should have been refused, or
a file left behind. Numbers refer to the faults of issue 12.
"""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import httpx
import pytest
from test_uploads import JPEG, member, tar_with

from live_server import TINY_TRAIN, upload, wait_for_dataset, wait_for_job


def jobs_url(experiment_id: str) -> str:
    return f"/api/v1/experiments/{experiment_id}/jobs"


def long_train() -> dict:
    """A train job that runs until canceled (as far as a test is concerned)."""
    return {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "num_epochs": 500}}


def end_jobs(client: httpx.Client, experiment_id: str, *job_ids: str) -> None:
    for job_id in job_ids:
        client.post(f"{jobs_url(experiment_id)}/{job_id}:cancel")
    for job_id in job_ids:
        wait_for_job(client, experiment_id, job_id)


# -- 1: DELETE of an experiment that has jobs ---------------------------------------------------


def test_deleting_an_experiment_deletes_its_ended_jobs(alice, experiment_id):
    jobs = jobs_url(experiment_id)
    train = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    child = alice.post(jobs, json={"action": "evaluate", "parent_job_id": train}).json()["id"]
    end_jobs(alice, experiment_id, child, train)
    answer = alice.delete(f"/api/v1/experiments/{experiment_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": experiment_id, "deleted": True}
    assert alice.get(f"{jobs}/{train}").status_code == 404
    assert alice.get(f"/api/v1/experiments/{experiment_id}").status_code == 404


# -- 2: followed log streams hold no database connection ---------------------------------------


def test_more_followed_log_streams_than_pooled_connections_leave_the_service_answering(
    alice, bob, server, experiment_id
):
    jobs = jobs_url(experiment_id)
    train = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    waiting = alice.post(jobs, json={"action": "evaluate", "parent_job_id": train}).json()["id"]
    # More streams than the connection pool holds (10 + 40 overflow): before the fix each
    # stream held a connection, and the next request waited 30 s for one, then got a 500
    # (QueuePool limit reached); the red-team run saw it at 30 streams with a pool of 5 + 10.
    streams = httpx.Client(
        base_url=server.url,
        headers=alice.headers,
        timeout=60,
        limits=httpx.Limits(max_connections=70, max_keepalive_connections=70),
    )
    opened = []
    try:
        for _ in range(55):
            request = streams.build_request("GET", f"{jobs}/{waiting}/logs?follow=true")
            response = streams.send(request, stream=True)
            opened.append(response)
            assert response.status_code == 200, response.read()
        answer = bob.get("/api/v1/datasets")
        assert answer.status_code == 200, answer.text
        assert alice.get(f"{jobs}/{waiting}").json()["status"] == "Pending"
    finally:
        for response in opened:
            response.close()
        streams.close()
        end_jobs(alice, experiment_id, waiting, train)


# -- 3, 4: request bodies are capped however they are sent -------------------------------------


def test_a_chunked_json_body_over_the_cap_is_refused(alice, experiment_id):
    spec = b'{"action": "train", "specs": {"wandb": {"name": "' + b"x" * (3 << 20) + b'"}}}'

    def chunked():  # no Content-Length: the body arrives in 64 KiB pieces
        for start in range(0, len(spec), 65536):
            yield spec[start : start + 65536]

    answer = alice.post(
        jobs_url(experiment_id), content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.text[:200]
    assert "request body over 1048576 bytes" in answer.json()["detail"]
    assert alice.get(jobs_url(experiment_id)).json() == []


def test_a_small_chunked_json_body_still_works(alice):
    body = b'{"name": "chunked"}'
    answer = alice.post(
        "/api/v1/experiments",
        content=iter([body[:5], body[5:]]),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "chunked"


def multipart(boundary: str, fields: list[tuple[str, bytes]], archive: bytes) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value
        + b"\r\n"
        for name, value in fields
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="data.tar.gz"\r\n\r\n'.encode()
        + archive
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def post_form(client, body: bytes, boundary: str = "reidnetboundary") -> httpx.Response:
    return client.post(
        "/api/v1/datasets",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def test_a_form_with_thousands_of_fields_is_refused(alice, server):
    fields = [(f"f{i}", b"v" * 100) for i in range(2000)]
    answer = post_form(alice, multipart("reidnetboundary", fields, JPEG))
    assert answer.status_code == 400, answer.text
    assert "more than 8 parts" in answer.json()["detail"]
    assert list((server.data_dir / "uploads").iterdir()) == []


def test_form_fields_count_against_the_upload_cap(alice, server):
    archive = bytes(1900 * 1024)  # under the 2 MiB cap on its own
    fields = [(f"f{i}", b"v" * 60 * 1024) for i in range(3)]  # 180 KiB more: over it
    answer = post_form(alice, multipart("reidnetboundary", fields, archive))
    assert answer.status_code == 413, answer.text
    assert list((server.data_dir / "uploads").iterdir()) == []


# -- 5, 11: entry names the file system or JSON cannot hold ------------------------------------


def raw_name_tar(path: Path, name: bytes) -> Path:
    """A tar whose entry name is raw bytes (tarfile writes surrogate escapes back as bytes)."""
    with tarfile.open(path, "w:gz", encoding="utf-8", errors="surrogateescape") as tar:
        info = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
        info.size = len(JPEG)
        tar.addfile(info, io.BytesIO(JPEG))
    return path


@pytest.mark.parametrize(
    "name",
    [b"bounding_box_train/0001_c1s1_\xff\xfe_00.jpg", b"\xe9t\xe9/query/0001_c1s1_000001_00.jpg"],
)
def test_non_utf8_entry_names_are_refused_and_the_list_still_answers(alice, server, tmp_path, name):
    created = upload(alice, raw_name_tar(tmp_path / "latin1.tar.gz", name))
    assert created.status_code == 201, created.text
    answer = alice.get(f"/api/v1/datasets/{created.json()['id']}")
    while answer.status_code == 200 and answer.json()["status"] == "processing":
        answer = alice.get(f"/api/v1/datasets/{created.json()['id']}")
    assert answer.status_code == 200, answer.text
    dataset = answer.json()
    assert dataset["status"] == "invalid"
    assert "not UTF-8" in dataset["error"]
    assert alice.get("/api/v1/datasets").status_code == 200
    assert not (server.data_dir / "datasets" / dataset["id"]).exists()


def test_an_over_long_entry_name_is_refused_and_its_archive_removed(alice, server, tmp_path):
    archive = tar_with(tmp_path / "long.tar.gz", member(f"query/{'a' * 300}_c1.jpg"))
    dataset = wait_for_dataset(alice, upload(alice, archive).json()["id"])
    assert dataset["status"] == "invalid"
    assert "too long for the file system" in dataset["error"]
    assert "internal error" not in dataset["error"]
    assert not (server.data_dir / "uploads" / dataset["id"]).exists()
    assert not (server.data_dir / "datasets" / dataset["id"]).exists()


# -- 6, 7, 8, 9, 10: job specs -----------------------------------------------------------------


def post_raw(client, url: str, text: str) -> httpx.Response:
    return client.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


def test_a_lone_surrogate_in_a_spec_string_is_refused(alice, experiment_id):
    body = '{"action": "train", "specs": {"wandb": {"name": "bad \\ud800 text"}}}'
    answer = post_raw(alice, jobs_url(experiment_id), body)
    assert answer.status_code == 400, answer.text
    assert "not valid Unicode" in answer.json()["detail"]
    assert "specs.wandb.name" in answer.json()["detail"]
    assert alice.get(jobs_url(experiment_id)).status_code == 200


def test_a_lone_surrogate_in_an_experiment_name_is_refused(alice):
    answer = post_raw(alice, "/api/v1/experiments", '{"name": "\\udc80"}')
    assert answer.status_code == 400, answer.text
    assert alice.get("/api/v1/experiments").status_code == 200


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/experiments", '{"name": "a\\u0000b"}'),
        ("/api/v1/experiments", '{"name": "ok", "eval_dataset": "\\u0000"}'),
    ],
)
def test_a_nul_character_is_refused_before_the_database_sees_it(alice, url, body):
    # PostgreSQL refuses NUL in text and JSON columns (SQLite stores it): found by the fuzzer.
    answer = post_raw(alice, url, body)
    assert answer.status_code == 400, answer.text
    assert "NUL" in answer.json()["detail"]
    assert alice.get("/api/v1/experiments").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/api/v1/datasets/a%00b", "/api/v1/experiments/a%00b", "/api/v1/experiments/x/jobs/a%00b"],
)
def test_a_nul_character_in_an_id_is_a_404_like_any_unknown_id(alice, path):
    answer = alice.get(path)
    assert answer.status_code == 404, answer.text


def test_a_nul_character_in_a_log_or_file_name_is_no_server_error(alice, experiment_id):
    job = alice.post(jobs_url(experiment_id), json={"action": "train", "specs": TINY_TRAIN})
    base = f"{jobs_url(experiment_id)}/{job.json()['id']}"
    for path in (f"{base}:download?file=a%00b", f"{base}/logs?tail=a%00"):
        assert alice.get(path).status_code < 500, path
    alice.post(f"{base}:cancel")


def test_a_nul_character_in_a_spec_string_is_refused(alice, experiment_id):
    body = '{"action": "train", "specs": {"wandb": {"name": "bad \\u0000 text"}}}'
    answer = post_raw(alice, jobs_url(experiment_id), body)
    assert answer.status_code == 400, answer.text
    assert "specs.wandb.name" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("specs", "section"),
    [
        ({"dataset": 1}, "dataset"),
        ({"dataset": None}, "dataset"),
        ({"export": None}, "export"),
        ({"evaluate": 3}, "evaluate"),
        ({"train": {"optim": [1]}}, "train.optim"),
    ],
)
def test_a_section_that_is_not_a_mapping_is_a_400(alice, experiment_id, specs, section):
    answer = alice.post(jobs_url(experiment_id), json={"action": "train", "specs": specs})
    assert answer.status_code == 400, answer.text
    assert f"specs.{section} must be a section" in answer.json()["detail"]


def test_a_null_model_section_on_a_fine_tune_is_a_400(alice, experiment_id):
    jobs = jobs_url(experiment_id)
    parent = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    try:
        answer = alice.post(
            jobs, json={"action": "train", "parent_job_id": parent, "specs": {"model": None}}
        )
        assert answer.status_code == 400, answer.text
        assert "specs.model must be a section" in answer.json()["detail"]
    finally:
        end_jobs(alice, experiment_id, parent)


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [50, 500, 5000])
def test_deeply_nested_specs_are_a_400(alice, experiment_id, depth):
    answer = post_raw(
        alice, jobs_url(experiment_id), f'{{"action": "train", "specs": {nested(depth)}}}'
    )
    assert answer.status_code == 400, answer.text[:300]
    assert len(answer.text) < 2000


def test_size_like_integers_are_bounded_in_job_specs(alice, experiment_id):
    specs = {
        "model": {"input_height": 10**6, "input_width": 10**6},
        "train": {"num_epochs": 10**12},
    }
    answer = alice.post(jobs_url(experiment_id), json={"action": "train", "specs": specs})
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "model.input_height: must be from 16 to 2048 (got 1000000)" in detail
    assert "train.num_epochs: must be from 1 to 100000" in detail


@pytest.mark.parametrize(
    ("number", "shown"),
    [("Infinity", "inf"), ("-Infinity", "-inf"), ("NaN", "nan"), ("1e309", "inf")],
)
def test_a_non_finite_number_in_job_specs_is_a_400_naming_the_key(
    alice, experiment_id, number, shown
):
    # Issue 30, item 10: Python's json reads these as floats; base_lr inf was a 201 whose job
    # trained to NaN.
    before = alice.get(jobs_url(experiment_id)).json()
    body = f'{{"action": "train", "specs": {{"train": {{"optim": {{"base_lr": {number}}}}}}}}}'
    answer = post_raw(alice, jobs_url(experiment_id), body)
    assert answer.status_code == 400, answer.text
    assert f"train.optim.base_lr: must be a finite number, not {shown} " in answer.json()["detail"]
    assert alice.get(jobs_url(experiment_id)).json() == before


def test_an_error_does_not_echo_a_huge_value(alice, experiment_id):
    specs = {"model": {"backbone": "x" * 900_000}}
    answer = alice.post(jobs_url(experiment_id), json={"action": "train", "specs": specs})
    assert answer.status_code == 400
    assert len(answer.content) < 2000 and "model.backbone" in answer.json()["detail"]


# -- 14: downloads -----------------------------------------------------------------------------


def test_an_over_long_file_name_on_download_is_a_404(alice, experiment_id):
    jobs = jobs_url(experiment_id)
    train = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    try:
        for name in ("a" * 300, "train/" + "b" * 5000):
            answer = alice.get(f"{jobs}/{train}:download", params={"file": name})
            assert answer.status_code == 404, answer.text
            assert len(answer.text) < 1000
    finally:
        end_jobs(alice, experiment_id, train)


def test_a_running_jobs_folder_streams_without_a_temporary_archive(alice, server, experiment_id):
    jobs = jobs_url(experiment_id)
    train = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    cache = server.data_dir / "cache"
    try:
        wait_for_job(
            alice, experiment_id, train, until=lambda j: (j["progress"] or {}).get("epoch")
        )
        before = set(cache.iterdir())
        with alice.stream("GET", f"{jobs}/{train}:download") as response:
            assert response.status_code == 200
            pieces = response.iter_bytes()
            body = next(pieces)
            # Before the fix a whole tar.gz was built in the cache folder for each request.
            assert set(cache.iterdir()) == before
            body += b"".join(pieces)
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            names = tar.getnames()
        assert f"{train}/spec.yaml" in names and f"{train}/log.txt" in names
    finally:
        end_jobs(alice, experiment_id, train)


def test_many_concurrent_folder_downloads_of_a_running_job(alice, experiment_id):
    """Four at once, as in the red-team run: each gets a complete, readable archive."""
    jobs = jobs_url(experiment_id)
    train = alice.post(jobs, json={"action": "train", "specs": long_train()}).json()["id"]
    results: list[list[str]] = []
    try:
        wait_for_job(alice, experiment_id, train, until=lambda j: j["status"] == "Running")

        def fetch():
            body = alice.get(f"{jobs}/{train}:download").content
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                results.append(tar.getnames())

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 4
        assert all(f"{train}/spec.yaml" in names for names in results)
    finally:
        end_jobs(alice, experiment_id, train)
