"""Where tensors run: the device to use, data-loader workers, autocast."""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch


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
