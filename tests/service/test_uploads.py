"""Dataset uploads: layouts accepted, and every archive safety rule (nothing left behind)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from live_server import upload, wait_for_dataset

JPEG = b"\xff\xd8\xff\xe0 not decoded before the safety checks"


def tar_with(path: Path, *entries: tarfile.TarInfo, data: bytes = JPEG) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            if entry.isreg():
                entry.size = len(data) if entry.size == 0 else entry.size
                payload = data if entry.size == len(data) else bytes(entry.size)
                tar.addfile(entry, io.BytesIO(payload))
            else:
                tar.addfile(entry)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null
    return info


def zip_with(path: Path, name: str, mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.create_system = 3
            info.external_attr = mode << 16
        bundle.writestr(info, b"/etc/passwd" if mode and stat.S_ISLNK(mode) else JPEG)
    return path


UNSAFE = {
    "absolute path": (lambda p: tar_with(p, member("/tmp/evil_0001_c1.jpg")), "absolute path"),
    "dot-dot": (
        lambda p: tar_with(p, member("bounding_box_train/../../evil_0001_c1.jpg")),
        "'..' component",
    ),
    "symlink": (
        lambda p: tar_with(p, member("query/0001_c1.jpg", tarfile.SYMTYPE, "/etc/passwd")),
        "symbolic link",
    ),
    "hard link": (
        lambda p: tar_with(p, member("query/0001_c1.jpg", tarfile.LNKTYPE, "/etc/passwd")),
        "hard link",
    ),
    "device": (lambda p: tar_with(p, member("query/null", tarfile.CHRTYPE)), "device file"),
    "fifo": (lambda p: tar_with(p, member("query/pipe", tarfile.FIFOTYPE)), "device file or FIFO"),
    "unpacked size": (
        lambda p: tar_with(p, member("query/0001_c1.jpg", size=5 * 1024 * 1024)),
        "unpacks to more than 4.0 MiB",
    ),
    "file count": (
        lambda p: tar_with(p, *(member(f"query/{i:04d}_c1.jpg") for i in range(401))),
        "more than 400 entries",
    ),
    "zip dot-dot": (lambda p: zip_with(p, "../0001_c1.jpg"), "'..' component"),
    "zip absolute": (lambda p: zip_with(p, "C:\\Windows\\0001_c1.jpg"), "absolute path"),
    "zip symlink": (
        lambda p: zip_with(p, "query/0001_c1.jpg", stat.S_IFLNK | 0o777),
        "symbolic link",
    ),
    "not an archive": (
        lambda p: p.write_bytes(b"just text, not gzip") and p,
        "not a readable tar",
    ),
}


def assert_nothing_left(server, dataset_id: str) -> None:
    assert not (server.data_dir / "datasets" / dataset_id).exists()
    assert not (server.data_dir / "uploads" / dataset_id).exists()
    assert not list((server.data_dir / "datasets").glob(".staging-*"))


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_rejected_and_leave_nothing_behind(alice, server, tmp_path, case):
    build, reason = UNSAFE[case]
    suffix = ".zip" if case.startswith("zip") else ".tar.gz"
    archive = build(tmp_path / f"upload{suffix}")
    created = upload(alice, archive)
    assert created.status_code == 201, created.text
    dataset = wait_for_dataset(alice, created.json()["id"])
    assert dataset["status"] == "invalid"
    assert reason in dataset["error"], dataset["error"]
    assert_nothing_left(server, dataset["id"])
    assert not Path("/tmp/evil_0001_c1.jpg").exists()


def test_tao_folder_names_inside_a_top_folder_in_a_zip(alice, synthetic_data, tmp_path):
    archive = tmp_path / "tao.zip"
    names = {"bounding_box_train": "sample_train", "bounding_box_test": "sample_test"}
    names["query"] = "sample_query"
    with zipfile.ZipFile(archive, "w") as bundle:
        for market, tao in names.items():
            for image in sorted((synthetic_data / market).iterdir()):
                bundle.write(image, f"reid_data/{tao}/{image.name}")
    dataset = wait_for_dataset(alice, upload(alice, archive).json()["id"])
    assert dataset["status"] == "pull_complete", dataset
    assert dataset["splits"] == {
        "train": "reid_data/sample_train",
        "test": "reid_data/sample_test",
        "query": "reid_data/sample_query",
    }
    assert dataset["archive_name"] == "tao.zip"


def test_data_the_validator_refuses_is_invalid_with_its_findings(alice, server, tmp_path):
    archive = tar_with(tmp_path / "broken.tar.gz", member("bounding_box_train/0001_c1s1_01.jpg"))
    dataset = wait_for_dataset(alice, upload(alice, archive).json()["id"])
    assert dataset["status"] == "invalid"
    codes = {f["code"] for f in dataset["validation"]["findings"] if f["severity"] == "error"}
    assert "corrupt_image" in codes
    paths = [p for f in dataset["validation"]["findings"] for p in f["paths"]]
    assert "bounding_box_train/0001_c1s1_01.jpg" in paths  # relative: no server paths shown
    assert_nothing_left(server, dataset["id"])


def test_an_archive_without_split_folders_is_invalid(alice, tmp_path):
    archive = tar_with(tmp_path / "flat.tar.gz", member("images/0001_c1s1_01.jpg"))
    dataset = wait_for_dataset(alice, upload(alice, archive).json()["id"])
    assert dataset["status"] == "invalid" and "bounding_box_train" in dataset["error"]


def test_other_file_types_are_refused_at_once(alice, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    answer = upload(alice, notes)
    assert answer.status_code == 400 and ".tar.gz" in answer.json()["detail"]
    no_file = alice.post("/api/v1/datasets", files={"name": (None, "x")})
    assert no_file.status_code == 400 and "`file` part" in no_file.json()["detail"]


def uploads_in_flight(server) -> list[str]:
    return [p.name for p in (server.data_dir / "uploads").iterdir()]


def test_an_upload_over_the_limit_is_refused_by_its_declared_size(alice, server):
    body = os.urandom(3 * 1024 * 1024)  # the limit is 2 MiB
    answer = alice.post("/api/v1/datasets", files={"file": ("big.tar.gz", body)})
    assert answer.status_code == 413
    assert "larger than this server's limit of 2.0 MiB" in answer.json()["detail"]
    assert uploads_in_flight(server) == []


def test_a_streamed_upload_is_cut_off_once_it_passes_the_limit(alice, server):
    boundary = "reidnetboundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.tar.gz"\r\nContent-Type: application/gzip\r\n\r\n'
        ).encode()
        for _ in range(64):  # 8 MiB in all, with no Content-Length
            yield bytes(128 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = alice.post(
        "/api/v1/datasets",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert answer.status_code == 413, answer.text
    assert uploads_in_flight(server) == []
    datasets = alice.get("/api/v1/datasets").json()
    assert all(d["archive_name"] != "big.tar.gz" for d in datasets)
