"""Feature extraction: a model in eval mode over a list of images, batched, on any device."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from reidnet.data.dataset import ImageDataset
from reidnet.data.transforms import build_eval_transform


def resolve_device(device: str | torch.device | None = None, gpu_id: int = 0) -> torch.device:
    """The requested device, else CUDA (`cuda:gpu_id`) when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return torch.device("cpu")


def loader_workers(requested: int) -> int:
    """Data-loader workers: the spec's value, never more than the CPU count."""
    return max(0, min(requested, os.cpu_count() or 1))


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA where supported (fp16 otherwise); nothing on the CPU."""
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    paths: Sequence[str | Path],
    *,
    height: int,
    width: int,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    batch_size: int = 128,
    num_workers: int = 0,
    device: torch.device | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Embeddings [N, D] (float32, on the CPU, in the order of `paths`) from the eval forward.

    The model is put in eval mode (flip feature included when the model uses it). The forward
    runs in fp32, so CPU, CUDA and ONNX embeddings of one model agree; with `amp` it runs under
    bf16 autocast on CUDA (faster, slightly different); features are returned in float32.
    """
    device = device or next(model.parameters()).device
    transform = build_eval_transform(height, width, pixel_mean, pixel_std)
    loader = DataLoader(
        ImageDataset(paths, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(num_workers),
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    features = []
    try:
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, amp):
                features.append(model(images).float().cpu())
    finally:
        model.train(was_training)
    if not features:
        return torch.empty(0, getattr(model, "feat_dim", 0))
    return torch.cat(features)
