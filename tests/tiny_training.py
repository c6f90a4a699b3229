"""The tiny training setup several test modules share: a synthetic dataset small enough to train
on two CPU cores in seconds, specs of a resnet_18 at 32x16 that train on it, and the mAP a
random ranking of its gallery would score.

The dataset itself is the `synthetic` fixture in tests/conftest.py; this module holds what a test
imports (a plain module: importing from a test module or a conftest is ambiguous)."""

from __future__ import annotations

import json
from pathlib import Path

from reidnet.config import ExperimentSpec, load_spec
from reidnet.data.market import ImageRecord, read_records
from reidnet.datatools.synthetic import generate_synthetic_dataset

# 24 identities (16 to train on, 8 held out for query/gallery), 3 cameras, 8 images each.
SYNTHETIC = {
    "identities": 24,
    "test_identities": 8,
    "cameras": 3,
    "images_per_identity": 8,
    "size": (64, 32),
    "seed": 1,
}

TINY = {
    "model": {
        "backbone": "resnet_18",
        "pretrain_choice": "none",
        "input_height": 32,
        "input_width": 16,
        "feat_dim": 64,
    },
    "dataset": {"batch_size": 16, "num_instances": 4, "num_workers": 0, "padding": 2},
    "train": {
        "num_epochs": 2,
        "checkpoint_interval": 1,
        "validation_interval": 1,
        "seed": 3,
        "optim": {"base_lr": 0.001, "warmup_iters": 0, "lr_steps": [50]},
    },
}


def write_synthetic(folder: Path) -> Path:
    """The tiny dataset (bounding_box_train, bounding_box_test, query) in `folder`."""
    generate_synthetic_dataset(folder, **SYNTHETIC)
    return folder


def tiny_spec(data: Path, results: Path, *overrides: str, train_dirs=None) -> ExperimentSpec:
    """TINY on the dataset in `data`, writing under `results`, with `key=value` overrides."""
    raw = json.loads(json.dumps(TINY))
    raw["results_dir"] = str(results)
    raw["dataset"].update(
        train_dataset_dir=train_dirs or str(data / "bounding_box_train"),
        test_dataset_dir=str(data / "bounding_box_test"),
        query_dataset_dir=str(data / "query"),
    )
    return load_spec(data=raw, overrides=list(overrides))


def query_and_gallery(data: Path) -> tuple[list[ImageRecord], list[ImageRecord]]:
    return read_records(data / "query"), read_records(data / "bounding_box_test")


def chance_map(query: list[ImageRecord], gallery: list[ImageRecord]) -> float:
    """The expected mAP of a random ranking under the same-camera rule (standard AP).

    A query with R true matches among N candidates: AP = (1/R) sum_k rel_k P@k with
    E[rel_k rel_j] = R(R-1) / (N(N-1)) for j < k and R/N for j = k, which sums to
    E[AP] = (H_N + (R-1)/(N-1) (N - H_N)) / N, H_N the N-th harmonic number."""
    expected = []
    for record in query:
        candidates = [g for g in gallery if not (g.pid == record.pid and g.camid == record.camid)]
        matches, size = sum(g.pid == record.pid for g in candidates), len(candidates)
        if matches == 0:
            continue
        harmonic = sum(1 / k for k in range(1, size + 1))
        spread = (matches - 1) / (size - 1) if size > 1 else 0.0
        expected.append((harmonic + spread * (size - harmonic)) / size)
    return sum(expected) / len(expected)
