"""The tiny training setup several test modules share: a synthetic dataset small enough to train
on two CPU cores in seconds, and specs of a resnet_18 at 32x16 that train on it.

The dataset itself is the `synthetic` fixture in tests/conftest.py; this module holds what a test
imports (a plain module: importing from a test module or a conftest is ambiguous)."""

from __future__ import annotations

import json
from pathlib import Path

from reidnet.config import ExperimentSpec, load_spec
from reidnet.data.synthetic import generate_synthetic_dataset

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
