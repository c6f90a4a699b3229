"""Embedding throughput of a ResNet-50 ReID model at 256x128: PyTorch eager against onnxruntime.

The model is reidnet's ResNet-50 (last stride 1, feat_dim 256, no flip feature: the reference
recipe) with random weights; its BatchNorm statistics come from two batches of random images so
activations have a realistic scale. It is exported with `reidnet.deploy` (the parity figures of
that export are printed), then timed at batch 1, 16 and 64 from normalised float32 images in host
memory to float32 embeddings in host memory (image decoding and resizing excluded):

* CPU: PyTorch eager fp32 (the baseline) and onnxruntime's CPU provider;
* CUDA, when present: PyTorch eager fp32 and bf16 (autocast + channels_last, as reidnet evaluates),
  bf16 + torch.compile, and onnxruntime's CUDA provider (needs the onnxruntime-gpu package).

After a warm-up batch, each backend and batch size is timed in `--rounds` interleaved rounds of
at least one batch and `--seconds`; the best round is reported.

    python benchmarks/inference_speed.py           # full run (a few minutes on a laptop CPU)
    python benchmarks/inference_speed.py --quick   # batch 1 and 16, one short round

On a GPU most of a quick run is torch.compile compiling the model for each batch size.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reidnet.contracts import INPUT_NAME, OUTPUT_NAME, Architecture, checkpoint_header
from reidnet.deploy.onnx import export_checkpoint
from reidnet.model import ReIdentificationNet
from reidnet.runtime import checkpoint as ckpt
from reidnet.utils.atomic import atomic_torch_save
from reidnet.utils.devices import autocast_for

HEIGHT, WIDTH, FEAT_DIM = 256, 128, 256
Runner = Callable[[np.ndarray], np.ndarray]
Sync = Callable[[], None]


def build_checkpoint(folder: Path) -> dict:
    """A reidnet checkpoint of a random-weight ResNet-50 with calibrated BatchNorm statistics."""
    torch.manual_seed(0)
    model = ReIdentificationNet("resnet_50", num_classes=751, feat_dim=FEAT_DIM)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, HEIGHT, WIDTH))
    architecture = Architecture(
        backbone="resnet_50",
        network="torchvision",
        feat_dim=FEAT_DIM,
        last_stride=1,
        neck="bnneck",
        neck_feat="after",
        with_flip_feature=False,
        input_height=HEIGHT,
        input_width=WIDTH,
        pixel_mean=(0.485, 0.456, 0.406),
        pixel_std=(0.226, 0.226, 0.226),
    )
    header = checkpoint_header(
        epoch=0,
        spec_dict={},
        identity_keys=[str(i) for i in range(751)],
        architecture=architecture,
    )
    path = atomic_torch_save({**header, "model": model.state_dict()}, folder / "r50.pth")
    return ckpt.load_checkpoint(path)


def torch_runner(model: torch.nn.Module, device: torch.device, bf16: bool) -> Runner:
    model = model.to(device).eval()
    if bf16:
        model = model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).to(device, non_blocking=True)
        if bf16:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, enabled=bf16):
            return model(batch).float().cpu().numpy()

    return run


def onnx_runner(onnx_file: Path, provider: str) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=[provider])
    if session.get_providers()[0] != provider:
        raise RuntimeError(f"onnxruntime fell back from {provider} to {session.get_providers()}")
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def images_per_second(run: Runner, images: np.ndarray, seconds: float, sync: Sync) -> float:
    """Throughput over at least one batch and `seconds` (the caller has warmed `run` up)."""
    count, start = 0, time.perf_counter()
    while count < 1 or time.perf_counter() - start < seconds:
        run(images)
        count += 1
    sync()
    return len(images) * count / (time.perf_counter() - start)


def measure(
    rows: dict[str, tuple[Runner, Sync]], batches: list[int], seconds: float, rounds: int
) -> dict[str, dict[int, float]]:
    """Best images/s of `rounds` interleaved rounds per backend and batch size.

    Interleaving spreads a slow spell of a shared machine over every backend instead of
    penalising whichever ran during it; the best round is the least disturbed one.
    """
    best: dict[str, dict[int, float]] = {name: {} for name in rows}
    for batch in batches:
        images = np.random.default_rng(batch).standard_normal((batch, 3, HEIGHT, WIDTH), np.float32)
        for run, sync in rows.values():  # warm-up: allocations, autotuning, compilation
            run(images)
            sync()
        for _ in range(rounds):
            for name, (run, sync) in rows.items():
                speed = images_per_second(run, images, seconds, sync)
                best[name][batch] = max(best[name].get(batch, 0.0), speed)
                print(f"  {name}, batch {batch}: {speed:.1f} img/s", flush=True)
    return best


def backends(checkpoint: dict, onnx_file: Path) -> dict[str, tuple[Runner, Sync]]:
    import onnxruntime as ort

    def cpu_sync() -> None:
        return None

    rows = {
        "PyTorch eager fp32, CPU": (
            torch_runner(ckpt.model_from_checkpoint(checkpoint), torch.device("cpu"), False),
            cpu_sync,
        ),
        "onnxruntime, CPU": (onnx_runner(onnx_file, "CPUExecutionProvider"), cpu_sync),
    }
    if not torch.cuda.is_available():
        return rows
    cuda = torch.device("cuda")

    def cuda_sync() -> None:
        torch.cuda.synchronize()

    rows["PyTorch eager fp32, CUDA"] = (
        torch_runner(ckpt.model_from_checkpoint(checkpoint), cuda, False),
        cuda_sync,
    )
    rows["PyTorch eager bf16, CUDA"] = (
        torch_runner(ckpt.model_from_checkpoint(checkpoint), cuda, True),
        cuda_sync,
    )
    compiled = torch.compile(ckpt.model_from_checkpoint(checkpoint).to(cuda), dynamic=False)
    rows["PyTorch bf16 + torch.compile, CUDA"] = (torch_runner(compiled, cuda, True), cuda_sync)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        rows["onnxruntime, CUDA"] = (onnx_runner(onnx_file, "CUDAExecutionProvider"), cuda_sync)
    else:
        print("onnxruntime has no CUDA provider here (install onnxruntime-gpu): row skipped")
    return rows


def print_table(results: dict[str, dict[int, float]], batches: list[int]) -> None:
    """A markdown table: images/s per batch size, and the speed-up over the same device's eager
    fp32 PyTorch row."""
    header = ["backend", *(f"batch {b} (img/s)" for b in batches), "vs eager fp32"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for name, by_batch in results.items():
        device = name.rsplit(", ", 1)[1]
        baseline = results[f"PyTorch eager fp32, {device}"]
        ratios = [by_batch[b] / baseline[b] for b in batches]
        speedup = " / ".join(f"{r:.2f}x" for r in ratios)
        cells = [name, *(f"{by_batch[b]:.1f}" for b in batches), speedup]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 16, one 1 s round")
    parser.add_argument("--seconds", type=float, default=None, help="time per cell and round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds, best kept")
    args = parser.parse_args()
    batches = [1, 16] if args.quick else [1, 16, 64]
    seconds = args.seconds or (1.0 if args.quick else 4.0)

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_checkpoint(Path(folder))
        start = time.perf_counter()
        exported = export_checkpoint(checkpoint, Path(folder) / "r50.onnx")
        print(
            f"ResNet-50 export (random weights) in {time.perf_counter() - start:.1f} s; parity: "
            f"{exported.parity.describe()}"
        )
        rows = backends(checkpoint, exported.onnx_file)
        results = measure(rows, batches, seconds, args.rounds or (1 if args.quick else 2))

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(
        f"\nResNet-50 {HEIGHT}x{WIDTH}, feat_dim {FEAT_DIM}; CPU: {_cpu_name()} "
        f"({os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}); GPU: {gpu}; "
        f"torch {torch.__version__}, onnxruntime {_ort_version()}\n"
    )
    print_table(results, batches)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other processes slow timings)")


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


if __name__ == "__main__":
    main()
