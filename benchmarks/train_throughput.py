"""Training throughput in images/s: a reference-style pipeline against reidnet's, in one run, on
the same synthetic JPEG files, with the same model, losses and P x K batches.

* reference: images decoded with PIL and transformed one by one (resize, flip, pad, crop,
  normalise, random erasing) in DataLoader workers, fp32 eager model, Adam (foreach): how the
  reference and most re-identification code bases train;
* reidnet: `TrainingRun.run_epoch`, the loop `reidnet train` runs, with the spec's defaults for
  the device. On CUDA: images decoded once into GPU memory and augmented there in batched form,
  bf16 autocast, channels_last, fused Adam, torch.compile. On the CPU both of reidnet's data
  pipelines run (DataLoader, and the gpu pipeline's tensor code on the CPU) without compile.

Each configuration runs warm-up steps first (DataLoader workers, cuDNN autotuning, compilation),
then timed steps, with the GPU synchronised at both ends of the timed span. Peak GPU memory is
torch.cuda.max_memory_allocated over the configuration; for reidnet it includes the decoded
training images.

    python benchmarks/train_throughput.py                 # CUDA: ResNet-50 256x128; CPU: tiny
    python benchmarks/train_throughput.py --tiny          # ResNet-18 at 32x16, 1,024 images
    python benchmarks/train_throughput.py --batches 128 --out table.md
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reidnet.config import load_spec
from reidnet.data.dataset import ImageDataset
from reidnet.data.market import build_train_set
from reidnet.data.sampler import RandomIdentitySampler
from reidnet.data.transforms import build_train_transform
from reidnet.datatools.synthetic import generate_synthetic_dataset
from reidnet.losses import ReidLoss
from reidnet.model import ReIdentificationNet
from reidnet.training.trainer import TrainingRun


@dataclass(frozen=True)
class Setup:
    backbone: str
    height: int
    width: int
    identities: int
    images_per_identity: int
    batches: tuple[int, ...]

    @property
    def images(self) -> int:
        return self.identities * self.images_per_identity


# Batch 128 first: the target configuration is measured even if a time limit cuts the run short.
FULL = Setup("resnet_50", 256, 128, identities=320, images_per_identity=16, batches=(128, 64, 256))
TINY = Setup("resnet_18", 32, 16, identities=128, images_per_identity=8, batches=(128, 64, 256))
FEAT_DIM = 256


@dataclass
class Result:
    pipeline: str
    batch: int
    images_per_second: float
    peak_gpu_gb: float | None


def make_dataset(root: Path, setup: Setup, workers: int) -> Path:
    start = time.perf_counter()
    generate_synthetic_dataset(
        root,
        identities=setup.identities + 2,
        test_identities=2,
        cameras=6,
        images_per_identity=setup.images_per_identity,
        size=(setup.height, setup.width),
        workers=workers,
    )
    print(f"{setup.images:,} synthetic training images in {time.perf_counter() - start:.1f} s")
    return root / "bounding_box_train"


def spec_for(setup: Setup, train_dir: Path, results: Path, batch: int, overrides: list[str]):
    data = {
        "results_dir": str(results),
        "model": {
            "backbone": setup.backbone,
            "pretrain_choice": "none",
            "input_height": setup.height,
            "input_width": setup.width,
            "feat_dim": FEAT_DIM,
        },
        "dataset": {
            "train_dataset_dir": str(train_dir),
            "batch_size": batch,
            "num_workers": min(16, os.cpu_count() or 1),
        },
        "train": {
            "num_epochs": 100,
            "cudnn": {"benchmark": True, "deterministic": False},
            "optim": {"warmup_iters": 0},
        },
    }
    return load_spec(data=data, overrides=overrides)


def reference_images_per_second(
    setup: Setup, train_dir: Path, batch: int, device: torch.device, min_images: int
) -> Result:
    """PIL + per-image transforms in DataLoader workers, fp32 eager, Adam: the usual loop."""
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    train_set = build_train_set([train_dir])
    sampler = RandomIdentitySampler(train_set.labels, batch, 4, seed=0)
    transform = build_train_transform(setup.height, setup.width)
    warmup = 5
    timed = max(10, -(-min_images // batch))
    batches = []
    for epoch in range(-(-(warmup + timed) // len(sampler.batches())) + 1):
        sampler.set_epoch(epoch)
        batches += sampler.batches()
    workers = min(16, os.cpu_count() or 1)
    loader = DataLoader(
        ImageDataset([r.path for r in train_set.records], transform, train_set.labels),
        batch_sampler=batches[: warmup + timed],
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    model = ReIdentificationNet(
        setup.backbone, num_classes=train_set.num_classes, feat_dim=FEAT_DIM
    ).to(device)
    criterion = ReidLoss(train_set.num_classes, FEAT_DIM).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    reset_peak(device)
    iterator = iter(loader)

    def step(images, labels):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        cls_score, global_feat = model(images)
        loss = criterion(cls_score, global_feat, labels)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for images, labels in islice(iterator, warmup):
        step(images, labels)
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for images, labels in iterator:
        step(images, labels)
        seen += labels.numel()
    synchronize(device)
    rate = seen / (time.perf_counter() - start)
    return Result("reference: PIL + DataLoader, fp32 eager", batch, rate, peak_gb(device))


def reidnet_images_per_second(
    setup: Setup, train_dir: Path, batch: int, label: str, overrides: list[str], min_images: int
) -> Result:
    """`TrainingRun.run_epoch`: one warm-up epoch (compilation), then timed epochs."""
    with tempfile.TemporaryDirectory(prefix="reidnet_throughput_") as results:
        run = TrainingRun(spec_for(setup, train_dir, Path(results), batch, overrides))
        reset_peak(run.device)
        run.run_epoch(0)
        seen, seconds, epoch = 0, 0.0, 1
        while seen < min_images or epoch < 2:
            record, _ = run.run_epoch(epoch)
            seen += record["steps"] * batch
            seconds += record["seconds"]
            epoch += 1
        result = Result(label, batch, seen / seconds, peak_gb(run.device))
        run.close()
        del run
    return result


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reidnet_variants(device: torch.device, eager_too: bool) -> list[tuple[str, list[str]]]:
    if device.type == "cuda":
        variants = [("reidnet: gpu pipeline, bf16, compile", [])]
        if eager_too:
            variants.append(("reidnet: gpu pipeline, bf16, eager", ["train.compile=false"]))
        return variants
    return [
        ("reidnet: DataLoader pipeline", ["train.data_pipeline=dataloader"]),
        ("reidnet: gpu pipeline (on the CPU)", ["train.data_pipeline=gpu"]),
    ]


def markdown_table(results: list[Result]) -> str:
    reference = {r.batch: r.images_per_second for r in results if r.pipeline.startswith("ref")}
    lines = [
        "| pipeline | batch | images/s | vs reference | peak GPU memory |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(results, key=lambda r: r.batch):  # stable: pipelines keep their order
        ratio = r.images_per_second / reference[r.batch] if r.batch in reference else None
        lines.append(
            f"| {r.pipeline} | {r.batch} | {r.images_per_second:,.0f} | "
            f"{f'{ratio:.2f}x' if ratio else ''} | "
            f"{f'{r.peak_gpu_gb:.1f} GB' if r.peak_gpu_gb is not None else 'n/a'} |"
        )
    return "\n".join(lines)


def describe(device: torch.device, setup: Setup) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return (
        f"{name or platform.machine()} ({device.type}), torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores; {setup.backbone} at {setup.height}x{setup.width}, "
        f"feat_dim {FEAT_DIM}, {setup.images:,} training images, triplet + CE, BNNeck"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="ResNet-18 at 32x16 (CPU default)")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--identities", type=int, default=None, help="training identities")
    parser.add_argument("--images-per-identity", type=int, default=None)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--min-images", type=int, default=None, help="timed images per cell")
    parser.add_argument("--eager-too", action="store_true", help="CUDA: also reidnet eager")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    setup = TINY if args.tiny or device.type != "cuda" else FULL
    setup = replace(
        setup,
        identities=args.identities or setup.identities,
        images_per_identity=args.images_per_identity or setup.images_per_identity,
    )
    batches = tuple(args.batches or setup.batches)
    min_images = args.min_images or (4000 if device.type == "cuda" else 1024)
    print(describe(device, setup), flush=True)
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        print(markdown_table([result]).splitlines()[-1], flush=True)
        if args.out:  # after every row: a run cut short by a time limit keeps what it measured
            args.out.write_text(f"{describe(device, setup)}\n\n{markdown_table(results)}\n")
            args.out.with_suffix(".json").write_text(
                json.dumps([r.__dict__ for r in results], indent=2)
            )

    with tempfile.TemporaryDirectory(prefix="reidnet_throughput_data_") as root:
        train_dir = make_dataset(Path(root) / "data", setup, min(16, os.cpu_count() or 1))
        for batch in batches:
            if not args.skip_reference:
                record(reference_images_per_second(setup, train_dir, batch, device, min_images))
            for label, overrides in reidnet_variants(device, args.eager_too):
                torch._dynamo.reset()  # each configuration compiles afresh
                record(
                    reidnet_images_per_second(setup, train_dir, batch, label, overrides, min_images)
                )
    print()
    print(describe(device, setup))
    print(markdown_table(results))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes slow the timings)")


if __name__ == "__main__":
    main()
