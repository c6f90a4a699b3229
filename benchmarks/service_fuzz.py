"""Fuzz every operation of `reidnet serve`'s OpenAPI schema with schemathesis, many examples each.

Starts a server on a temporary data folder with one user, one dataset, one experiment and one
finished train job (their ids are fed to the fuzzer next to generated ones), then prints, per
operation, the requests sent and the failures (5xx, or a documented status whose body breaks its
schema). Exit status 1 if there is any failure. tests/service/test_fuzz.py runs the same bounded.

    PYTHONPATH=src python benchmarks/service_fuzz.py --examples 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_api import fuzz_api
from live_server import (
    TINY_TRAIN,
    LiveServer,
    create_user,
    make_archive,
    upload,
    wait_for_dataset,
    wait_for_job,
)


def prepare(server: LiveServer, root: Path) -> tuple[str, dict[str, str]]:
    from reidnet.datatools.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(
        root / "synthetic", identities=24, test_identities=8, cameras=3,
        images_per_identity=6, size=(64, 32), seed=1,
    )  # fmt: skip
    archive = make_archive(root / "synthetic", root / "synthetic.tar.gz")
    key = create_user(server.data_dir, "fuzzer")
    with server.client(key) as client:
        dataset = wait_for_dataset(client, upload(client, archive).json()["id"])["id"]
        experiment = client.post(
            "/api/v1/experiments", json={"name": "fuzz", "train_datasets": [dataset]}
        ).json()["id"]
        jobs = f"/api/v1/experiments/{experiment}/jobs"
        job = client.post(jobs, json={"action": "train", "specs": TINY_TRAIN}).json()["id"]
        wait_for_job(client, experiment, job)
    ids = {"dataset_id": dataset, "experiment_id": experiment, "job_id": job, "action": "train"}
    return key, ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="examples per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = LiveServer(root / "data", "--max-upload-mb", "2", "--cancel-grace", "5").start()
        try:
            key, ids = prepare(server, root)
            start = time.perf_counter()
            report = fuzz_api(server.url, key, ids, args.examples)
            elapsed = time.perf_counter() - start
        finally:
            server.stop()
        logged = server.log().count("unexpected error")
    failures = Counter(line.split(" -> ")[0] for line in report.failures)
    print("| operation | requests | failures |\n| --- | ---: | ---: |")
    for label in sorted(report.calls):
        print(f"| `{label}` | {report.calls[label]} | {failures[label]} |")
    total = sum(report.calls.values())
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses.items()))
    print(
        f"\n{total} requests in {elapsed:.0f} s ({args.examples} examples per operation and id set)"
    )
    print(f"statuses: {statuses}")
    by_check = Counter(line.split(": ")[1] for line in report.failures)
    print(f"server errors (5xx): {report.server_errors}; failures by check: {dict(by_check)}")
    print(f"500s in the server log: {logged}")
    for line in sorted(set(report.failures))[:40]:
        print("  ", line)
    return 1 if report.failures or logged else 0


if __name__ == "__main__":
    sys.exit(main())
