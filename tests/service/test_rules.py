"""The service's pure rules, checked without a server: archive names, spec paths, job specs."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from reidnet.service.reporting import error_from_log, public_error
from reidnet.service.routers.jobs import job_archive
from reidnet.service.settings import ServiceSettings
from reidnet.service.specs import (
    JobPaths,
    check_user_specs,
    default_specs,
    resolved_spec,
    server_owned_keys,
)
from reidnet.service.storage import ArchiveRejected, safe_parts


@pytest.mark.parametrize(
    "name, parts",
    [
        ("query/0001_c1.jpg", ("query", "0001_c1.jpg")),
        ("./data//query/./0001_c1.jpg", ("data", "query", "0001_c1.jpg")),
        ("data\\query\\0001_c1.jpg", ("data", "query", "0001_c1.jpg")),
        ("name..with..dots.jpg", ("name..with..dots.jpg",)),
    ],
)
def test_safe_archive_names_keep_their_components(name, parts):
    assert safe_parts(name) == parts


@pytest.mark.parametrize(
    "name, reason",
    [
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/x.jpg", "absolute path"),
        ("\\\\server\\share\\x.jpg", "absolute path"),
        ("../x.jpg", "'..' component"),
        ("query/../../x.jpg", "'..' component"),
        ("query\\..\\..\\x.jpg", "'..' component"),
    ],
)
def test_unsafe_archive_names_are_refused(name, reason):
    with pytest.raises(ArchiveRejected, match=reason):
        safe_parts(name)


def test_path_keys_are_found_at_any_depth_and_null_ones_ignored():
    specs = {
        "results_dir": None,
        "model": {"backbone": "resnet_18", "pretrained_model_path": "/x"},
        "export": {"onnx_file": "/y", "opset_version": 17},
        "dataset": {"batch_size": 16, "test_dataset_dir": None},
    }
    assert server_owned_keys(specs) == ["model.pretrained_model_path", "export.onnx_file"]


def test_defaults_hold_no_path_key_and_are_accepted_back():
    defaults = default_specs()
    assert server_owned_keys(defaults) == []
    assert check_user_specs(defaults)["train"]["num_epochs"] == 120


def test_a_resolved_spec_gets_every_path_from_the_server():
    paths = JobPaths(
        Path("/srv/jobs/j1"),
        train_dirs=["/srv/datasets/a/bounding_box_train", "/srv/datasets/b/sample_train"],
        test_dir="/srv/datasets/a/bounding_box_test",
        query_dir="/srv/datasets/a/query",
        checkpoint="/srv/jobs/t1/train/reid_model_latest.pth",
    )
    spec = resolved_spec("export", {"export": {"opset_version": 18}}, paths)
    assert spec["results_dir"] == "/srv/jobs/j1"
    assert spec["dataset"]["train_dataset_dir"] == paths.train_dirs
    assert spec["dataset"]["query_dataset_dir"] == "/srv/datasets/a/query"
    assert spec["export"] == {
        "opset_version": 18,
        "checkpoint": "/srv/jobs/t1/train/reid_model_latest.pth",
        "onnx_file": "/srv/jobs/j1/export/reid_model.onnx",
    }
    assert "model" not in spec  # only what the user set: the checkpoint decides the rest


def test_a_fine_tune_starts_from_the_source_checkpoint_unless_told_otherwise():
    paths = JobPaths(Path("/j"), train_dirs=["/d/train"], pretrained="/t/train/latest.pth")
    spec = resolved_spec("train", {}, paths)
    assert spec["model"] == {"pretrain_choice": "self", "pretrained_model_path": paths.pretrained}
    scratch = resolved_spec("train", {"model": {"pretrain_choice": "none"}}, paths)
    assert scratch["model"]["pretrain_choice"] == "none"


def test_a_failed_job_reports_the_cli_error_else_the_exit_and_last_lines(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("loading\nerror: dataset folder /x does not exist:\n  check the path\n")
    assert error_from_log(log, 2) == "dataset folder /x does not exist:\n  check the path"
    log.write_text("step 1\nstep 2\n")
    assert error_from_log(log, -9) == (
        "the job process killed by signal SIGKILL; last log lines:\nstep 1\nstep 2"
    )


def test_a_job_error_hides_tracebacks_and_server_paths_but_keeps_routes_and_urls():
    job = Path("/tmp/data/jobs/j1")  # /tmp exists on every machine the tests run on
    text = (
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3/trainer.py", line 3, in save\n'
        "    torch.save(state, stream)\n"
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "OSError: no room for /tmp/data/jobs/j1/train/model_epoch_002.pth on /tmp/data/jobs/j1.\n"
        "see GET /api/v1/experiments/{id}/jobs or http://head:8265/jobs for /tmp/data/datasets/d1"
    )
    assert public_error(text, job) == (
        "OSError: no room for train/model_epoch_002.pth on the job folder.\n"
        "see GET /api/v1/experiments/{id}/jobs or http://head:8265/jobs for <server>/d1\n"
        "(the traceback is in the job's log)"
    )


def test_the_download_cache_keeps_the_recently_downloaded_archives_within_its_bound(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, max_cache_bytes=250_000)
    settings.make_folders()
    jobs = {}
    for name in ("a", "b", "c"):
        folder = settings.job_dir(name)
        folder.mkdir()
        (folder / "weights.bin").write_bytes(os.urandom(100_000))  # gzip cannot shrink it
        jobs[name] = SimpleNamespace(id=name, finished_at=datetime(2026, 1, 1, tzinfo=timezone.utc))

    def cached() -> list[str]:
        return sorted(p.name.split("-")[0] for p in settings.cache_dir.iterdir())

    def downloaded(name: str, at: int) -> None:
        archive = job_archive(settings, jobs[name])
        os.utime(archive, (at, at))  # downloads a second apart, whatever the clock's resolution

    downloaded("a", 1000)
    downloaded("b", 2000)
    assert cached() == ["a", "b"]  # about 200 kB: within the bound
    downloaded("c", 3000)
    assert cached() == ["b", "c"]  # a, the least recently downloaded, made room for c
    downloaded("b", 4000)  # served from the cache, and now the most recent
    downloaded("a", 5000)  # built again: c goes, not b
    assert cached() == ["a", "b"]
    tiny = settings.model_copy(update={"max_cache_bytes": 0})
    job_archive(tiny, jobs["c"])
    assert cached() == ["c"]  # the archive being sent stays, even past the bound
