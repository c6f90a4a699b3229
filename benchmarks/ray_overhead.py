"""What running a job on Ray costs: time from the POST of a job to its first log line, local
executor vs. Ray (`--executor ray`) on the same machine.

Starts a one-node Ray head on loopback (2 CPUs), then for each executor a `reidnet serve` on its own
data folder, uploads a small synthetic dataset and submits R one-epoch train jobs of a tiny model,
one after another. For each it measures, from the moment the POST returned: Running (the job's
`started_at`), the first line the job itself wrote to its log (the server's header line excluded;
for both executors that line comes after Python has imported torch and read the data), and Done.
Prints a table with the median and the spread over the repetitions, and the Ray minus local
difference.

    PYTHONPATH=src python benchmarks/ray_overhead.py --repetitions 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))

from ray_head import RayHead

from live_server import TINY_TRAIN, LiveServer, create_user
from reidnet.client import Client
from reidnet.datatools.synthetic import generate_synthetic_dataset


def first_job_line(log_file: Path) -> bool:
    """Whether the job wrote a line of its own (the server writes the `====` header)."""
    try:
        lines = log_file.read_text().splitlines()
    except OSError:
        return False
    return any(line and not line.startswith("==== ") for line in lines)


def time_jobs(server: LiveServer, data: Path, repetitions: int) -> list[dict[str, float]]:
    client = Client(server.url, create_user(server.data_dir, "bench"))
    dataset = client.upload_dataset(data, name="bench")
    client.wait_for_dataset(dataset)
    experiment = client.create_experiment("overhead", train_datasets=[dataset])
    specs = {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "validation_interval": 10}}
    timings = []
    for _ in range(repetitions):
        job_id = client.submit_job(experiment, "train", specs=specs)
        posted = time.monotonic()
        log_file = server.data_dir / "jobs" / job_id / "log.txt"
        running = first_line = None
        while True:
            now = time.monotonic()
            if running is None and client.job(experiment, job_id)["status"] != "Pending":
                running = now - posted
            if first_job_line(log_file):
                first_line = now - posted
                break
            time.sleep(0.02)
        job = client.wait(experiment, job_id, poll_seconds=0.1, progress=False)
        if job["status"] != "Done":
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
        done = time.monotonic() - posted
        timings.append({"running": running, "first log line": first_line, "done": done})
    client.close()
    return timings


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="reidnet-ray-bench-"))
    data = root / "synthetic"
    generate_synthetic_dataset(
        data, identities=24, test_identities=8, cameras=3, images_per_identity=6, size=(64, 32)
    )
    head = RayHead().start()
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for executor in ("local", "ray"):
            options = ("--executor", executor)
            if executor == "ray":
                options += ("--ray-address", head.address)
            server = LiveServer(root / executor / "data", *options).start()
            try:
                results[executor] = time_jobs(server, data, args.repetitions)
            finally:
                server.stop()
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nPOST -> ..., {args.repetitions} one-epoch train jobs each: median (min-max)")
    print(f"{'executor':<10}{'Running':<24}{'first log line':<24}{'Done':<24}")
    for executor, timings in results.items():
        cells = [summary([t[k] for t in timings]) for k in ("running", "first log line", "done")]
        print(f"{executor:<10}" + "".join(f"{cell:<24}" for cell in cells))
    local, ray = (
        statistics.median(t["first log line"] for t in results[name]) for name in ("local", "ray")
    )
    print(f"\nRay adds {ray - local:.2f} s to the first log line (median {ray:.2f} vs {local:.2f})")


if __name__ == "__main__":
    main()
