"""Accuracy on real data: the strong-baseline recipe vs a softmax-only baseline on CUHK03.

Trains on ../shared/data/cuhk03/bounding_box_train (743 identities) and evaluates on its
query/gallery (100 identities, disjoint cameras), printing mAP and rank-k for

* recipe:   CE with label smoothing + batch-hard triplet, BNNeck, random erasing (the reference);
* baseline: CE only, no label smoothing, no BNNeck, no random erasing, no P×K sampling.

`--feat-dims 64,128,256,512,1024,2048` trains the recipe once per embedding size and prints the
reference docs' accuracy-by-feature-dimension table for CUHK03.

On the CPU the default is a small configuration (ResNet-18 at 128x64 on a subset of the training
identities); `--preset gpu` runs ResNet-50 at 256x128 on all of them, as the reference does.
The images are read from their shared location; nothing is copied.

    python benchmarks/accuracy_cuhk03.py                     # CPU, small
    python benchmarks/accuracy_cuhk03.py --preset gpu        # GPU, the reference recipe
    python benchmarks/accuracy_cuhk03.py --feat-dims 64,256,2048 --skip-baseline
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from reidnet.config import load_spec
from reidnet.data.market import scan_folder
from reidnet.engine.trainer import train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03"

PRESETS = {
    "cpu": {
        "backbone": "resnet_18",
        "height": 128,
        "width": 64,
        "epochs": 8,
        "identities": 100,
        "batch_size": 32,
        "base_lr": 0.001,
        "warmup": 2,
        "steps": [6, 7],
        "pretrain": "none",
    },
    "gpu": {
        "backbone": "resnet_50",
        "height": 256,
        "width": 128,
        "epochs": 120,
        "identities": 0,
        "batch_size": 64,
        "base_lr": 0.00035,
        "warmup": 10,
        "steps": [40, 70],
        "pretrain": "imagenet",
    },
}


def subset_train_folder(train_dir: Path, identities: int, workdir: Path) -> Path:
    """A folder of symbolic links to the images of the first `identities` training pids."""
    if identities <= 0:
        return train_dir
    by_pid: dict[int, list[Path]] = defaultdict(list)
    for record in scan_folder(train_dir).records:
        by_pid[record.pid].append(record.path)
    subset = workdir / f"train_{identities}_ids"
    subset.mkdir(parents=True, exist_ok=True)
    for pid in sorted(by_pid)[:identities]:
        for path in by_pid[pid]:
            (subset / path.name).symlink_to(path.resolve())
    return subset


def build_spec(args, preset: dict, train_dir: Path, results: Path, variant: str, feat_dim: int):
    recipe = variant == "recipe"
    data = args.data
    raw = {
        "results_dir": str(results),
        "model": {
            "backbone": preset["backbone"],
            "pretrain_choice": args.pretrain or preset["pretrain"],
            "pretrained_model_path": args.pretrained_model_path,
            "input_height": preset["height"],
            "input_width": preset["width"],
            "feat_dim": feat_dim,
            "neck": "bnneck" if recipe else "no",
            "label_smooth": recipe,
        },
        "dataset": {
            "train_dataset_dir": str(train_dir),
            "test_dataset_dir": str(data / "bounding_box_test"),
            "query_dataset_dir": str(data / "query"),
            "batch_size": preset["batch_size"],
            "num_workers": min(8, os.cpu_count() or 1),
            "sampler": "softmax_triplet" if recipe else "softmax",
            "re_prob": 0.5 if recipe else 0.0,
        },
        "train": {
            "num_epochs": args.epochs or preset["epochs"],
            "checkpoint_interval": 1000,
            "validation_interval": 1000,
            "seed": 0,
            "optim": {
                "base_lr": preset["base_lr"],
                "warmup_iters": preset["warmup"],
                "lr_steps": preset["steps"],
            },
        },
    }
    return load_spec(data=raw)


def run(args, preset, train_dir, workdir, variant, feat_dim) -> dict:
    results = workdir / f"{variant}_{feat_dim}"
    spec = build_spec(args, preset, train_dir, results, variant, feat_dim)
    start = time.perf_counter()
    outcome = train(spec, device=args.device)
    metrics = dict(outcome.final_metrics)
    metrics["minutes"] = (time.perf_counter() - start) / 60
    metrics["images_per_second"] = outcome.history[-1]["images_per_second"]
    return metrics


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    print(f"\n{title}")
    header = f"{'':<22}{'mAP':>8}{'rank-1':>8}{'rank-5':>8}{'rank-10':>8}{'mINP':>8}{'min':>7}"
    print(header)
    print("-" * len(header))
    for name, m in rows:
        cells = "".join(
            f"{100 * m[k]:8.2f}" for k in ("mAP", "rank-1", "rank-5", "rank-10", "mINP")
        )
        print(f"{name:<22}{cells}{m['minutes']:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--identities", type=int, default=None, help="train on the first N identities (0 = all)"
    )
    parser.add_argument("--feat-dims", default="256")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--pretrain", choices=["imagenet", "none"], default=None)
    parser.add_argument("--pretrained-model-path", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    if args.identities is not None:
        preset["identities"] = args.identities
    feat_dims = [int(d) for d in args.feat_dims.split(",")]
    if not (args.data / "bounding_box_train").is_dir():
        raise SystemExit(f"{args.data} has no bounding_box_train: pass --data")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reidnet-cuhk03-"))
    train_dir = subset_train_folder(args.data / "bounding_box_train", preset["identities"], workdir)
    ids = preset["identities"] or "all"
    print(
        f"CUHK03, {preset['backbone']} at {preset['height']}x{preset['width']}, {ids} training "
        f"identities, {args.epochs or preset['epochs']} epochs, work folder {workdir}"
    )

    rows = []
    recipe_by_dim = {}
    for feat_dim in feat_dims:
        recipe_by_dim[feat_dim] = run(args, preset, train_dir, workdir, "recipe", feat_dim)
        rows.append((f"recipe (feat_dim {feat_dim})", recipe_by_dim[feat_dim]))
    if not args.skip_baseline:
        rows.append(
            (
                "softmax-only baseline",
                run(args, preset, train_dir, workdir, "baseline", feat_dims[0]),
            )
        )
    print_table("recipe vs softmax-only baseline (CUHK03 query/gallery, standard AP)", rows)
    if len(feat_dims) > 1:
        print("\nfeature dimension | mAP | rank-1 | rank-5 | rank-10")
        for feat_dim, m in recipe_by_dim.items():
            print(
                f"{feat_dim} | {100 * m['mAP']:.1f} | {100 * m['rank-1']:.1f} | "
                f"{100 * m['rank-5']:.1f} | {100 * m['rank-10']:.1f}"
            )


if __name__ == "__main__":
    main()
