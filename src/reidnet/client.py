"""A Python client for the fine-tuning service (`reidnet serve`), for notebooks and scripts.

    from reidnet.client import Client

    client = Client("http://127.0.0.1:8000", api_key)
    dataset = client.upload_dataset("data/market1501")          # a folder or an archive
    client.wait_for_dataset(dataset)
    experiment = client.create_experiment("market", train_datasets=[dataset])
    train = client.submit_job(experiment, "train", specs={"train": {"num_epochs": 10}})
    client.wait(experiment, train)
    client.download(experiment, train, file="train/reid_model_latest.pth", dest="models/")

Every call raises `ApiError` (a ReidnetError) with the server's `detail` when the server refuses.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from reidnet.contracts import METRICS_FILE, job_file
from reidnet.errors import ReidnetError

FINISHED = ("Done", "Error", "Canceled")
# The lists come in pages; the list methods read them all, this many items a request (the
# server's most) and stop at the total the server gives in TOTAL_HEADER.
PAGE_SIZE = 1000
TOTAL_HEADER = "X-Total-Count"


class ApiError(ReidnetError):
    """The service answered with an error status; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: str, method: str, path: str):
        super().__init__(f"{method} {path} failed ({status_code}): {detail}")
        self.status_code, self.detail = status_code, detail


class Client:
    """Calls to the reidnet fine-tuning service; ids are plain strings."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        _raise_for_status(response, method, path)
        return response

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def _every_page(self, path: str) -> list[dict[str, Any]]:
        """Every item of a list, page after page."""
        items: list[dict[str, Any]] = []
        while True:
            params = {"limit": PAGE_SIZE, "offset": len(items)}
            response = self._request("GET", path, params=params)
            page = response.json()
            items += page
            # An empty page ends it even if the total, counted a moment before, said more.
            if not page or len(items) >= int(response.headers[TOTAL_HEADER]):
                return items

    @staticmethod
    def _job_path(experiment_id: str, job_id: str | None = None) -> str:
        path = f"/api/v1/experiments/{experiment_id}/jobs"
        return f"{path}/{job_id}" if job_id else path

    def health(self) -> dict[str, Any]:
        """The server's status and version (needs no key: checks the URL only)."""
        return self._json("GET", "/api/v1/health")

    # -- datasets ----------------------------------------------------------------------------

    def upload_dataset(self, path: str | Path, name: str | None = None) -> str:
        """Upload a dataset folder (packed as tar.gz on the fly) or archive; returns its id."""
        path = Path(path)
        if path.is_dir():
            with tempfile.TemporaryDirectory() as scratch:
                archive = Path(scratch) / f"{path.name}.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    for child in sorted(path.iterdir()):
                        tar.add(child, arcname=child.name)
                return self.upload_dataset(archive, name or path.name)
        with open(path, "rb") as stream:
            created = self._json(
                "POST",
                "/api/v1/datasets",
                files={"file": (path.name, stream, "application/octet-stream")},
                data={"name": name or path.name},
                timeout=None,
            )
        return created["id"]

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/datasets/{dataset_id}")

    def datasets(self) -> list[dict[str, Any]]:
        return self._every_page("/api/v1/datasets")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/api/v1/datasets/{dataset_id}")

    def wait_for_dataset(
        self, dataset_id: str, timeout: float = 3600, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """Wait until extraction and validation end; raises ReidnetError if it is invalid."""
        deadline = time.monotonic() + timeout
        while True:
            dataset = self.dataset(dataset_id)
            if dataset["status"] == "pull_complete":
                return dataset
            if dataset["status"] == "invalid":
                raise ReidnetError(f"dataset {dataset_id} is invalid: {_dataset_problems(dataset)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {dataset_id} still processing after {timeout} s")
            time.sleep(poll_seconds)

    # -- experiments -------------------------------------------------------------------------

    def create_experiment(
        self,
        name: str,
        train_datasets: list[str],
        eval_dataset: str | None = None,
        base_experiment: str | None = None,
    ) -> str:
        body = {
            "name": name,
            "train_datasets": list(train_datasets),
            "eval_dataset": eval_dataset,
            "base_experiment": base_experiment,
        }
        return self._json("POST", "/api/v1/experiments", json=body)["id"]

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/experiments/{experiment_id}")

    def experiments(self) -> list[dict[str, Any]]:
        return self._every_page("/api/v1/experiments")

    def update_experiment(self, experiment_id: str, **fields: Any) -> dict[str, Any]:
        return self._json("PATCH", f"/api/v1/experiments/{experiment_id}", json=fields)

    def delete_experiment(self, experiment_id: str) -> None:
        self._request("DELETE", f"/api/v1/experiments/{experiment_id}")

    def spec_schema(self, experiment_id: str, action: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/experiments/{experiment_id}/specs/{action}/schema")

    def spec_defaults(self, experiment_id: str, action: str = "train") -> dict[str, Any]:
        """Every spec key with its default (path keys are the server's and left out)."""
        return self.spec_schema(experiment_id, action)["default"]

    # -- jobs --------------------------------------------------------------------------------

    def submit_job(
        self,
        experiment_id: str,
        action: str,
        specs: dict[str, Any] | None = None,
        parent_job_id: str | None = None,
    ) -> str:
        """Queue a job; `specs` holds only the keys to change. Returns the job id."""
        body = {"action": action, "specs": specs, "parent_job_id": parent_job_id}
        return self._json("POST", self._job_path(experiment_id), json=body)["id"]

    def job(self, experiment_id: str, job_id: str) -> dict[str, Any]:
        return self._json("GET", self._job_path(experiment_id, job_id))

    def jobs(self, experiment_id: str) -> list[dict[str, Any]]:
        return self._every_page(self._job_path(experiment_id))

    def wait(
        self,
        experiment_id: str,
        job_id: str,
        timeout: float | None = None,
        poll_seconds: float = 2.0,
        progress: bool = True,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Poll until the job ends, printing a progress bar; returns the final job.

        `on_update(job)` runs after every poll (plot losses as they arrive). A job that ends in
        Error raises ReidnetError with its message unless `raise_on_error` is false.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _ProgressLine() if progress else None
        while True:
            job = self.job(experiment_id, job_id)
            if bar is not None:
                bar.show(job)
            if on_update is not None:
                on_update(job)
            if job["status"] in FINISHED:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            time.sleep(poll_seconds)
        if raise_on_error and job["status"] == "Error":
            raise ReidnetError(f"{job['action']} job {job_id} failed: {job['error']}")
        return job

    def logs(self, experiment_id: str, job_id: str, tail: int | None = None) -> str:
        params = {"tail": tail} if tail else {}
        return self._request(
            "GET", self._job_path(experiment_id, job_id) + "/logs", params=params
        ).text

    def follow_logs(self, experiment_id: str, job_id: str) -> Iterator[str]:
        """The log as it is written, until the job ends."""
        path = self._job_path(experiment_id, job_id) + "/logs"
        with self._http.stream("GET", path, params={"follow": True}, timeout=None) as response:
            if response.is_error:
                response.read()
                _raise_for_status(response, "GET", path)
            yield from response.iter_text()

    def cancel(self, experiment_id: str, job_id: str) -> dict[str, Any]:
        return self._json("POST", self._job_path(experiment_id, job_id) + ":cancel")

    def resume(
        self, experiment_id: str, job_id: str, specs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue a Canceled or Error job again (a train job continues from its checkpoint)."""
        path = self._job_path(experiment_id, job_id) + ":resume"
        return self._json("POST", path, json={"specs": specs})

    def delete_job(self, experiment_id: str, job_id: str) -> None:
        self._request("DELETE", self._job_path(experiment_id, job_id))

    def list_files(self, experiment_id: str, job_id: str) -> list[dict[str, Any]]:
        return self._every_page(self._job_path(experiment_id, job_id) + ":list_files")

    def metrics(self, experiment_id: str, job_id: str) -> list[dict[str, Any]]:
        """A train job's per-epoch records (losses, lr, validation) so far."""
        path = self._job_path(experiment_id, job_id) + ":download"
        response = self._http.get(path, params={"file": job_file("train", METRICS_FILE)})
        if response.status_code == 404:
            return []
        _raise_for_status(response, "GET", path)
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]

    def download(
        self,
        experiment_id: str,
        job_id: str,
        file: str | None = None,
        dest: str | Path = ".",
    ) -> Path:
        """Save one job file (or the job folder: a tar.gz once the job has ended, a plain .tar
        while it runs) under `dest`; returns the path.

        An interrupted download continues where it stopped (HTTP Range) when called again.
        """
        dest = Path(dest)
        name = Path(file).name if file else f"{job_id}.tar.gz"
        target = dest / name if dest.is_dir() or not dest.suffix else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        path = self._job_path(experiment_id, job_id) + ":download"
        params = {"file": file} if file else {}
        done = partial.stat().st_size if partial.is_file() else 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        with self._http.stream("GET", path, params=params, headers=headers, timeout=None) as reply:
            if reply.status_code == 416:  # nothing left to send: whole, or not this file
                reply.read()
                whole = reply.headers.get("content-range", "").endswith(f"/{done}")
                if not whole:
                    partial.unlink()
                    return self.download(experiment_id, job_id, file, dest)
            else:
                if reply.is_error:
                    reply.read()
                    _raise_for_status(reply, "GET", path)
                mode = "ab" if reply.status_code == 206 else "wb"
                with open(partial, mode) as stream:
                    for chunk in reply.iter_bytes():
                        stream.write(chunk)
                streamed = reply.headers.get("content-type", "").startswith("application/x-tar")
                if file is None and streamed and target.name == f"{job_id}.tar.gz":
                    target = target.with_name(f"{job_id}.tar")  # a running job's folder
        os.replace(partial, target)
        return target


def _raise_for_status(response: httpx.Response, method: str, path: str) -> None:
    if not response.is_error:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, str(detail), method, path)


def _dataset_problems(dataset: dict[str, Any]) -> str:
    findings = (dataset.get("validation") or {}).get("findings", [])
    errors = [f"{f['code']}: {f['message']}" for f in findings if f["severity"] == "error"]
    return "; ".join([dataset.get("error") or "", *errors]).strip("; ")


class _ProgressLine:
    """A text progress bar, printed when something changes (works in notebooks and logs)."""

    def __init__(self, width: int = 24):
        self.width = width
        self.last = ""

    def show(self, job: dict[str, Any]) -> None:
        line = self.describe(job)
        if line != self.last:
            print(line, flush=True)
            self.last = line

    def describe(self, job: dict[str, Any]) -> str:
        head = f"{job['action']} {job['id'][:8]} {job['status']}"
        if job["status"] == "Pending" and job.get("queue_position"):
            return f"{head} (queue position {job['queue_position']})"
        progress = job.get("progress") or {}
        epoch, total = progress.get("epoch"), progress.get("num_epochs")
        if not epoch or not total:
            return head
        filled = round(self.width * epoch / total)
        parts = [f"[{'#' * filled}{'.' * (self.width - filled)}] epoch {epoch}/{total}"]
        if "total" in progress.get("losses", {}):
            parts.append(f"loss {progress['losses']['total']:.3f}")
        validation = progress.get("validation") or {}
        if "mAP" in validation:
            parts.append(f"mAP {validation['mAP']:.3f} rank-1 {validation['rank-1']:.3f}")
        if progress.get("images_per_second"):
            parts.append(f"{progress['images_per_second']:.0f} img/s")
        if job["status"] == "Running" and progress.get("eta_seconds"):
            parts.append(f"ETA {progress['eta_seconds'] / 60:.1f} min")
        return f"{head} " + " ".join(parts)
