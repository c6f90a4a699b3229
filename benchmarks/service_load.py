"""Load on `reidnet serve`: N concurrent clients for D seconds, idle server vs. one that trains.

Each client loops over a weighted mix: poll a job's status (the notebook's main call), list
datasets and jobs, read a log's tail, download a finished job's file; a few more clients hold
`?follow=true` log streams for the whole phase, and a couple download a finished job's whole
folder (a cached ~120 MB tar.gz) one after another, from a process of their own. The same
load runs twice in one server: first idle, then while a train job runs. Prints p50/p95/p99
latency per endpoint and the error count per phase (with each error's status or exception).
Target: 0 errors and a status-poll p95 under 100 ms while training.

Each client waits `--think` seconds (jittered +-50%) between its requests, as a notebook does
(`Client.wait` polls every 2 s; the default 1 s is twice that rate). `--think 0` is a closed
loop with no pause: it measures the server's saturation throughput, where latency is the queue
(50 clients / N requests per second), not the time a request takes.

    PYTHONPATH=src python benchmarks/service_load.py --clients 50 --seconds 60
    PYTHONPATH=src python benchmarks/service_load.py --clients 50 --seconds 60 --think 0
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from live_server import (
    TINY_TRAIN,
    LiveServer,
    create_user,
    make_archive,
    upload,
    wait_for_dataset,
    wait_for_job,
)

MIX = (  # endpoint, weight
    ("job status", 50),
    ("list datasets", 10),
    ("list jobs", 10),
    ("log tail", 10),
    ("download file", 20),
)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


REASONS: Counter = Counter()  # "endpoint: status or exception" -> count


async def client_loop(client, urls, deadline, latencies, errors, seed, only=(), think=0.0) -> None:
    rng = random.Random(seed)
    names = list(only) or [name for name, _ in MIX]
    weights = [1] * len(only) or [weight for _, weight in MIX]
    await asyncio.sleep(rng.uniform(0, think))  # clients do not start in step
    while time.monotonic() < deadline:
        name = rng.choices(names, weights)[0]
        start = time.perf_counter()
        try:
            response = await client.get(urls[name])
            reason = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            reason = type(error).__name__
        latencies[name].append(time.perf_counter() - start)
        if reason:
            errors[name] += 1
            REASONS[f"{name}: {reason}"] += 1
        if think:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def follower(client, url, deadline, latencies, errors) -> None:
    """Holds a followed log open; counts the time to its first bytes, reconnects if it ends."""
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            async with client.stream("GET", url, timeout=httpx.Timeout(60, read=None)) as response:
                if response.status_code != 200:
                    errors["follow log"] += 1
                    REASONS[f"follow log: HTTP {response.status_code}"] += 1
                    return
                first = True
                async for _ in response.aiter_bytes():
                    if first:
                        latencies["follow log"].append(time.perf_counter() - start)
                        first = False
                    if time.monotonic() >= deadline:
                        return
        except httpx.HTTPError as error:
            errors["follow log"] += 1
            REASONS[f"follow log: {type(error).__name__}"] += 1
        await asyncio.sleep(0.5)


async def run_clients(base_url, key, urls, deadline, seconds, clients=0, think=0.0,
                      follow_url=None, followers=0, folder_url=None, downloaders=0):  # fmt: skip
    """One process's clients until `deadline` (time.monotonic, the same clock in every
    process): pollers, log followers, folder downloaders."""
    latencies, errors = defaultdict(list), defaultdict(int)
    limits = httpx.Limits(max_connections=clients + followers + downloaders + 10)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as client:
        tasks = [
            client_loop(client, urls, deadline, latencies, errors, i, think=think)
            for i in range(clients)
        ]
        tasks += [
            follower(client, follow_url, deadline, latencies, errors) for _ in range(followers)
        ]
        folder = {"download folder": folder_url}
        tasks += [
            client_loop(client, folder, deadline, latencies, errors, -1 - i, ("download folder",))
            for i in range(downloaders)
        ]
        try:  # a request still waiting a minute after the phase ended counts as lost
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + 60)
        except asyncio.TimeoutError:
            errors["unfinished at the end"] += 1
    return latencies, errors


def _downloaders(base_url, key, folder_url, downloaders, deadline, seconds, results) -> None:
    latencies, errors = asyncio.run(
        run_clients(base_url, key, {}, deadline, seconds, folder_url=folder_url,
                    downloaders=downloaders)
    )  # fmt: skip
    results.put((dict(latencies), dict(errors), dict(REASONS)))


def run_phase(
    base_url, key, urls, follow_url, folder_url, clients, followers, downloaders, seconds, think
):
    """The phase's load. The folder downloaders run in a process of their own, as separate
    users' machines would: in the pollers' event loop, reading ~150 MB/s would delay every
    poll's response by the client's own work and charge it to the server."""
    deadline = time.monotonic() + seconds + 2  # the downloaders' process starts meanwhile
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    downloading = context.Process(
        target=_downloaders,
        args=(base_url, key, folder_url, downloaders, deadline, seconds, results),
    )
    if downloaders:
        downloading.start()
    time.sleep(max(0.0, deadline - seconds - time.monotonic()))
    latencies, errors = asyncio.run(
        run_clients(base_url, key, urls, deadline, seconds, clients, think, follow_url,
                    followers)
    )  # fmt: skip
    if downloaders:
        more_latencies, more_errors, reasons = results.get(timeout=seconds + 120)
        downloading.join()
        for name, values in more_latencies.items():
            latencies[name].extend(values)
        for name, count in more_errors.items():
            errors[name] += count
        REASONS.update(reasons)
    return latencies, errors


def prepare(server: LiveServer, root: Path):
    from reidnet.datatools.synthetic import generate_synthetic_dataset

    generate_synthetic_dataset(
        root / "synthetic", identities=24, test_identities=8, cameras=3,
        images_per_identity=6, size=(64, 32), seed=1,
    )  # fmt: skip
    archive = make_archive(root / "synthetic", root / "synthetic.tar.gz")
    key = create_user(server.data_dir, "load")
    client = server.client(key)
    dataset = wait_for_dataset(client, upload(client, archive).json()["id"])["id"]
    experiment = client.post(
        "/api/v1/experiments", json={"name": "load", "train_datasets": [dataset]}
    ).json()["id"]
    jobs = f"/api/v1/experiments/{experiment}/jobs"
    done = client.post(jobs, json={"action": "train", "specs": TINY_TRAIN}).json()["id"]
    wait_for_job(client, experiment, done)
    urls = {
        "job status": f"{jobs}/{done}",
        "list datasets": "/api/v1/datasets",
        "list jobs": jobs,
        "log tail": f"{jobs}/{done}/logs?tail=20",
        "download file": f"{jobs}/{done}:download?file=train/status.json",
    }
    folder_url = f"{jobs}/{done}:download"
    # The finished job's tar.gz is built by the first request for it, then served from the
    # cache: build it here, so the phases measure the steady state.
    client.get(folder_url, timeout=600).raise_for_status()
    return key, client, experiment, jobs, done, urls, folder_url


def report(phase: str, latencies, errors, seconds: float) -> None:
    print(f"\n{phase}")
    print("| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in [n for n, _ in MIX] + ["follow log", "download folder"]:
        values = latencies.get(name, [])
        p50, p95, p99 = (1000 * percentile(values, q) for q in (0.5, 0.95, 0.99))
        print(
            f"| {name} | {len(values)} | {len(values) / seconds:.1f} | {p50:.1f} | {p95:.1f} | "
            f"{p99:.1f} | {errors.get(name, 0)} |"
        )
    print(f"errors in all: {sum(errors.values())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--followers", type=int, default=5, help="held ?follow=true streams")
    parser.add_argument("--downloaders", type=int, default=2, help="whole-folder downloaders")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--think", type=float, default=1.0, help="seconds between a client's requests (0: none)"
    )
    parser.add_argument("--database-url", default=None, help="default: SQLite in the data dir")
    args = parser.parse_args()
    options = ("--database-url", args.database_url) if args.database_url else ()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = LiveServer(root / "data", *options).start()
        try:
            key, client, experiment, jobs, done, urls, folder_url = prepare(server, root)
            follow_url = f"{jobs}/{done}/logs?follow=true"  # ended: streams, then reconnects
            idle = run_phase(
                server.url, key, urls, follow_url, folder_url, args.clients, args.followers,
                args.downloaders, args.seconds, args.think,
            )  # fmt: skip
            specs = {**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "num_epochs": 100_000}}
            training = client.post(jobs, json={"action": "train", "specs": specs}).json()["id"]
            wait_for_job(client, experiment, training, until=lambda j: j["status"] == "Running")
            follow_url = f"{jobs}/{training}/logs?follow=true"  # live: held the whole phase
            busy = run_phase(
                server.url, key, urls, follow_url, folder_url, args.clients, args.followers,
                args.downloaders, args.seconds, args.think,
            )  # fmt: skip
            epochs = client.get(f"{jobs}/{training}").json()["progress"] or {}
            client.post(f"{jobs}/{training}:cancel")
            wait_for_job(client, experiment, training)
            client.close()
        finally:
            server.stop()
    print(f"{args.clients} clients + {args.followers} followed logs + {args.downloaders} folder "
          f"downloaders, {args.seconds:.0f} s a phase, {args.think:g} s between a client's "
          "requests; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    report("idle server", *idle, args.seconds)
    report(f"while a train job runs (epoch {epochs.get('epoch')} reached)", *busy, args.seconds)
    if REASONS:
        print("errors: " + ", ".join(f"{reason} x{n}" for reason, n in REASONS.most_common()))
    status_p95 = 1000 * percentile(busy[0]["job status"], 0.95)
    errors = sum(idle[1].values()) + sum(busy[1].values())
    verdict = "met" if errors == 0 and status_p95 < 100 else "NOT met"
    print(f"\ntarget (0 errors, status p95 < 100 ms while training): {verdict} "
          f"(p95 {status_p95:.1f} ms, {errors} errors)")  # fmt: skip
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    sys.exit(main())
