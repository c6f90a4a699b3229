"""Speed and peak memory of reidnet's evaluation against straightforward references.

Synthetic Market-1501-sized data (3,368 queries x 15,913 gallery images, 750 identities seen by 2-6
of 6 cameras, one query per identity and camera, 2,798 distractors with pid 0; features = identity
centre + camera offset + noise, so mAP is neither 0 nor 1) at 256 and 2048 dimensions. Compared:

* metrics: ``pairwise_distance`` + ``rank_metrics`` against a numpy distance and a per-query numpy
  loop (stable argsort, same-camera filter, AP, CMC, mINP), the usual straightforward code;
* re-ranking: ``k_reciprocal_rerank`` against the classic dense N x N algorithm (written below
  from the paper's description and the classic code's conventions).

Every measurement runs in a fresh subprocess that loads its inputs from .npy files and warms up on
a small slice. Memory is that process's peak resident set size during the measured call (Linux
VmHWM, reset just before the call through /proc/self/clear_refs; it counts numpy and torch
allocations alike) and its growth over the RSS just before the call (ru_maxrss would not do: it
keeps the parent's size across fork and exec). With ``--device cuda`` reidnet's rows also report
``torch.cuda.max_memory_allocated``. Results must agree: mAP, mINP and CMC to 1e-6, re-ranked
distances to 1e-5. Other processes on the machine slow the timings (the load average is printed).

    python benchmarks/eval_speed.py          # full run; the classic re-ranking takes minutes
    python benchmarks/eval_speed.py --quick  # small sizes, a smoke run
    python benchmarks/eval_speed.py --skip-classic-rerank --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MARKET = {"num_query": 3368, "num_gallery": 15913, "num_ids": 750, "num_distractors": 2798}
QUICK = {"num_query": 450, "num_gallery": 2400, "num_ids": 100, "num_distractors": 400}
NUM_CAMERAS = 6
TOLERANCE = 1e-6


@dataclass
class Dataset:
    query_features: np.ndarray
    gallery_features: np.ndarray
    query_pids: np.ndarray
    gallery_pids: np.ndarray
    query_camids: np.ndarray
    gallery_camids: np.ndarray


def market_like(
    dim: int, num_query: int, num_gallery: int, num_ids: int, num_distractors: int, seed: int = 0
) -> Dataset:
    """Market-shaped ids and cameras; features L2-normalised like reidnet's evaluation's."""
    rng = np.random.default_rng(seed)
    cameras_per_id = rng.integers(2, NUM_CAMERAS + 1, num_ids)
    while cameras_per_id.sum() != num_query:  # one query per (identity, camera)
        index = rng.integers(num_ids)
        if cameras_per_id.sum() < num_query and cameras_per_id[index] < NUM_CAMERAS:
            cameras_per_id[index] += 1
        elif cameras_per_id.sum() > num_query and cameras_per_id[index] > 2:
            cameras_per_id[index] -= 1
    pairs = np.array(
        [
            (pid, camera)
            for pid, count in zip(range(1, num_ids + 1), cameras_per_id, strict=True)
            for camera in rng.choice(NUM_CAMERAS, count, replace=False) + 1
        ]
    )
    # Every (identity, camera) has a gallery image; the rest are spread at random.
    extra = rng.integers(0, len(pairs), num_gallery - num_distractors - len(pairs))
    gallery = np.concatenate([pairs, pairs[extra]])
    gallery_pids = np.concatenate([gallery[:, 0], np.zeros(num_distractors, np.int64)])
    gallery_camids = np.concatenate(
        [gallery[:, 1], rng.integers(1, NUM_CAMERAS + 1, num_distractors)]
    )
    centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    camera_offsets = 0.5 * rng.standard_normal((NUM_CAMERAS + 1, dim), dtype=np.float32)

    # Noise grows with dim so that the task stays about as hard (mAP 0.85-0.9, like a model trained
    # on Market) at 256 and 2048 dims; fitted by measurement.
    noise = 1.4 * (dim / 256) ** 0.32

    def features(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
        values = centres[pids] + camera_offsets[camids]
        values += noise * rng.standard_normal(values.shape, dtype=np.float32)
        distractor = pids == 0  # no identity: a random direction
        values[distractor] = rng.standard_normal((distractor.sum(), dim), dtype=np.float32)
        return values / np.linalg.norm(values, axis=1, keepdims=True)

    order = rng.permutation(num_gallery)
    return Dataset(
        features(pairs[:, 0], pairs[:, 1]),
        features(gallery_pids, gallery_camids)[order],
        pairs[:, 0],
        gallery_pids[order],
        pairs[:, 1],
        gallery_camids[order],
    )


# ----------------------------------------------------------------------------- references


def reference_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances in numpy, as most re-id code computes them."""
    squared = (query**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :]
    return np.maximum(squared - 2 * query @ gallery.T, 0)


def reference_metrics(
    distmat: np.ndarray,
    query_pids: np.ndarray,
    gallery_pids: np.ndarray,
    query_camids: np.ndarray,
    gallery_camids: np.ndarray,
    max_rank: int = 50,
) -> dict:
    """The per-query loop of the Market-1501 protocol (standard AP, mINP as fast-reid)."""
    average_precisions, inverse_penalties, cmcs = [], [], []
    for index in range(len(distmat)):
        order = np.argsort(distmat[index], kind="stable")
        same_pid = gallery_pids[order] == query_pids[index]
        keep = ~(same_pid & (gallery_camids[order] == query_camids[index]))
        hits = same_pid[keep]
        if not hits.any():
            continue
        hit_ranks = np.flatnonzero(hits) + 1
        average_precisions.append(np.mean(np.arange(1, len(hit_ranks) + 1) / hit_ranks))
        inverse_penalties.append(len(hit_ranks) / hit_ranks[-1])
        cmc = np.zeros(max_rank)
        cmc[hit_ranks[0] - 1 :] = 1
        cmcs.append(cmc)
    return {
        "mAP": float(np.mean(average_precisions)),
        "cmc": np.mean(cmcs, axis=0).tolist(),
        "mINP": float(np.mean(inverse_penalties)),
    }


def _reciprocal(rank: np.ndarray, index: int, k: int) -> np.ndarray:
    """The k-reciprocal neighbours of `index`: its k nearest that also have it among theirs."""
    forward = rank[index, :k]
    return forward[np.nonzero((rank[forward, :k] == index).any(axis=1))[0]]


def classic_rerank(
    query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """The classic dense k-reciprocal re-ranking over all N = Q + G images (N x N arrays)."""
    features = np.concatenate([query, gallery]).astype(np.float32)
    num_query, num_all = len(query), len(features)
    dist = reference_distance(features, features)
    dist = (dist / dist.max(axis=0)).T
    rank = np.argsort(dist, axis=1).astype(np.int32)
    half = int(np.around(k1 / 2)) + 1

    encoding = np.zeros_like(dist)
    for index in range(num_all):
        members = _reciprocal(rank, index, k1 + 1)
        expanded = [members]
        for candidate in members:
            candidate_set = _reciprocal(rank, candidate, half)
            if len(np.intersect1d(candidate_set, members)) > 2.0 / 3 * len(candidate_set):
                expanded.append(candidate_set)
        expanded = np.unique(np.concatenate(expanded))
        weight = np.exp(-dist[index, expanded])
        encoding[index, expanded] = weight / np.sum(weight)
    dist = dist[:num_query]
    if k2 != 1:
        averaged = np.zeros_like(encoding)
        for index in range(num_all):
            averaged[index] = np.mean(encoding[rank[index, :k2]], axis=0)
        encoding = averaged
    del rank
    inverted = [np.nonzero(encoding[:, column])[0] for column in range(num_all)]
    jaccard = np.zeros((num_query, num_all), dtype=np.float32)
    for index in range(num_query):
        overlap = np.zeros(num_all, dtype=np.float32)
        for column in np.nonzero(encoding[index])[0]:
            rows = inverted[column]
            overlap[rows] += np.minimum(encoding[index, column], encoding[rows, column])
        jaccard[index] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + dist * lambda_value
    return final[:, num_query:]


# ----------------------------------------------------------------------------- workers


def _memory_status() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident set size of this process, in bytes."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status if line.startswith("Vm"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def _reset_peak_rss() -> None:
    """Restart the peak RSS count at the current RSS (Linux >= 4.0), if the kernel lets us."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def run_task(task: str, query, gallery, distmat, ids: tuple) -> object:
    from reidnet.evaluation import k_reciprocal_rerank, pairwise_distance, rank_metrics

    if task == "metrics-reidnet":
        return rank_metrics(distmat, *ids)
    if task == "metrics-reference":
        return reference_metrics(distmat, *ids)
    if task == "distance-reidnet":
        return pairwise_distance(query, gallery, normalize=False)
    if task == "distance-reference":
        return reference_distance(query, gallery)
    if task == "rerank-reidnet":
        return k_reciprocal_rerank(query, gallery)
    if task == "rerank-classic":
        return classic_rerank(query, gallery)
    raise ValueError(task)


def run_worker(
    task: str, data_dir: Path, result_path: Path, device: str, threads: int | None
) -> None:
    """One measurement in this (fresh) process; writes time, memory and metrics as JSON."""
    load = {name: np.load(data_dir / f"{name}.npy") for name in Dataset.__dataclass_fields__}
    data = Dataset(**load)
    ids = (data.query_pids, data.gallery_pids, data.query_camids, data.gallery_camids)
    import torch

    if threads:
        torch.set_num_threads(threads)

    from reidnet.evaluation import rank_metrics

    distmat = np.load(data_dir / "distmat.npy") if task.startswith("metrics") else None
    query, gallery = data.query_features, data.gallery_features
    on_cuda = device == "cuda" and task.endswith("reidnet")
    if on_cuda:
        query, gallery = torch.from_numpy(query).cuda(), torch.from_numpy(gallery).cuda()
        distmat = None if distmat is None else torch.from_numpy(distmat).cuda()
    # Warm up on a small slice, so that one-time initialisation (thread pools, kernels, lazy
    # imports) is not timed for either implementation.
    warm_ids = (ids[0][:16], ids[1], ids[2][:16], ids[3])
    warm_distmat = None if distmat is None else distmat[:16]
    run_task(task, query[:50], gallery[:250], warm_distmat, warm_ids)
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    _reset_peak_rss()
    rss_before = _memory_status()["VmRSS"]
    start = time.perf_counter()
    output = run_task(task, query, gallery, distmat, ids)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = _memory_status()["VmHWM"]
    record = {"seconds": seconds, "peak_rss": peak, "rss_growth": max(0, peak - rss_before)}
    if on_cuda:
        record["cuda_peak"] = torch.cuda.max_memory_allocated()
    if task.startswith("metrics"):
        metrics = output if isinstance(output, dict) else output.__dict__
        record.update(mAP=metrics["mAP"], cmc=list(map(float, metrics["cmc"])))
        record["mINP"] = metrics["mINP"]
    elif task.startswith("rerank"):
        np.save(result_path.with_suffix(".npy"), np.asarray(output, dtype=np.float32))
        metrics = rank_metrics(np.asarray(output), *ids)
        record.update(mAP=metrics.mAP, cmc=metrics.cmc.tolist(), mINP=metrics.mINP)
    result_path.write_text(json.dumps(record))


def measure(task: str, data_dir: Path, device: str, threads: int | None) -> dict:
    result_path = data_dir / f"{task}.json"
    command = [sys.executable, __file__, "--worker", task, "--data", str(data_dir)]
    command += ["--result", str(result_path), "--device", device]
    subprocess.run(command + (["--threads", str(threads)] if threads else []), check=True)
    record = json.loads(result_path.read_text())
    if task.startswith("rerank"):
        record["distmat"] = result_path.with_suffix(".npy")
    return record


# ----------------------------------------------------------------------------- report


def check_same(name: str, ours: dict, reference: dict) -> None:
    for key in ("mAP", "mINP"):
        if abs(ours[key] - reference[key]) > TOLERANCE:
            raise SystemExit(f"{name}: {key} differs: {ours[key]} vs {reference[key]}")
    if np.max(np.abs(np.subtract(ours["cmc"], reference["cmc"]))) > TOLERANCE:
        raise SystemExit(f"{name}: CMC differs")


def row(task: str, dim: int, name: str, record: dict, baseline: dict | None) -> list[str]:
    gb = 1e9
    memory = f"{record['peak_rss'] / gb:.2f} / +{record['rss_growth'] / gb:.2f}"
    if "cuda_peak" in record:
        memory += f" (cuda {record['cuda_peak'] / gb:.2f})"
    speedup = f"{baseline['seconds'] / record['seconds']:.1f}x" if baseline else ""
    return [
        task,
        str(dim),
        name,
        f"{record['seconds']:.2f}",
        memory,
        f"{record['mAP']:.4f}" if "mAP" in record else "",
        f"{record['cmc'][0]:.4f}" if "cmc" in record else "",
        speedup,
    ]


def print_table(rows: list[list[str]]) -> None:
    header = [
        "task",
        "dim",
        "implementation",
        "time s",
        "peak RSS / growth GB",
        "mAP",
        "rank-1",
        "speed-up",
    ]
    widths = [max(len(line[col]) for line in [header, *rows]) for col in range(len(header))]
    for line in [header, ["-" * width for width in widths], *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


def run_dimension(dim: int, sizes: dict, args: argparse.Namespace, root: Path) -> list[list[str]]:
    data_dir = root / f"dim{dim}"
    data_dir.mkdir()
    data = market_like(dim, **sizes)
    for name in Dataset.__dataclass_fields__:
        np.save(data_dir / f"{name}.npy", getattr(data, name))
    np.save(
        data_dir / "distmat.npy", reference_distance(data.query_features, data.gallery_features)
    )

    rows = []
    distance_ref = measure("distance-reference", data_dir, "cpu", args.threads)
    distance_ours = measure("distance-reidnet", data_dir, args.device, args.threads)
    metrics_ref = measure("metrics-reference", data_dir, "cpu", args.threads)
    metrics_ours = measure("metrics-reidnet", data_dir, args.device, args.threads)
    check_same(f"metrics dim {dim}", metrics_ours, metrics_ref)
    rows.append(row("distance", dim, "numpy", distance_ref, None))
    rows.append(row("distance", dim, f"reidnet ({args.device})", distance_ours, distance_ref))
    rows.append(row("metrics", dim, "per-query numpy loop", metrics_ref, None))
    rows.append(row("metrics", dim, f"reidnet ({args.device})", metrics_ours, metrics_ref))
    total_ref = {**metrics_ref, "seconds": distance_ref["seconds"] + metrics_ref["seconds"]}
    total_ours = {**metrics_ours, "seconds": distance_ours["seconds"] + metrics_ours["seconds"]}
    for record, source in ((total_ref, distance_ref), (total_ours, distance_ours)):
        record["peak_rss"] = max(record["peak_rss"], source["peak_rss"])
        record["rss_growth"] = max(record["rss_growth"], source["rss_growth"])
    rows.append(row("distance+metrics", dim, "numpy + loop", total_ref, None))
    rows.append(row("distance+metrics", dim, "reidnet", total_ours, total_ref))

    rerank_ours = measure("rerank-reidnet", data_dir, args.device, args.threads)
    if args.skip_classic_rerank:
        rows.append(row("re-ranking", dim, f"reidnet ({args.device})", rerank_ours, None))
        return rows
    rerank_ref = measure("rerank-classic", data_dir, "cpu", args.threads)
    check_same(f"re-ranking dim {dim}", rerank_ours, rerank_ref)
    difference = np.abs(np.load(rerank_ours["distmat"]) - np.load(rerank_ref["distmat"])).max()
    if difference > 1e-5:
        raise SystemExit(f"re-ranking dim {dim}: distances differ by up to {difference}")
    rows.append(row("re-ranking", dim, "classic dense", rerank_ref, None))
    rows.append(row("re-ranking", dim, f"reidnet ({args.device})", rerank_ours, rerank_ref))
    print(f"dim {dim}: re-ranked distances agree to {difference:.1e}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--skip-classic-rerank", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the workers")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.data, args.result, args.device, args.threads)
        return
    sizes = QUICK if args.quick else MARKET
    dims = args.dims or ([64, 256] if args.quick else [256, 2048])
    import torch

    print(
        f"{sizes['num_query']} queries x {sizes['num_gallery']} gallery, dims {dims}, "
        f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="reidnet_eval_speed_") as root:
        for dim in dims:
            rows += run_dimension(dim, sizes, args, Path(root))
    print_table(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes slow the timings)")
    print("all results agree (mAP, mINP, CMC within 1e-6; re-ranked distances within 1e-5)")


if __name__ == "__main__":
    main()
