"""The one embedding loop: `embed_images` runs any `Backend` (runtime.base) over a list of images,
`embed_batches` over batches already made. Evaluate, inference, validation and the `Embedder` all
embed through them, so they agree to float precision."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from reidnet.data.dataset import ImageDataset
from reidnet.data.transforms import read_image_rgb
from reidnet.runtime.base import Backend, Preprocessing
from reidnet.runtime.torch_backend import TorchBackend
from reidnet.utils.devices import loader_workers


def embed_batches(backend: Backend, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The one embedding loop: features [N, D] (float32, on the CPU, in order) of every batch.

    Each batch's features move to the CPU as they come, so a large gallery never holds the
    device's memory (training keeps its state there during validation).
    """
    features = [backend(images).cpu() for images in batches]
    if not features:
        return torch.empty(0, backend.feat_dim or 0)
    return torch.cat(features)


def embed_images(
    backend: Backend,
    images: Sequence[Any],
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    read: Callable[[Any], Any] = read_image_rgb,
) -> torch.Tensor:
    """Features [N, D] (float32, CPU, in the order of `images`) of image files, or of anything
    `read` turns into an RGB PIL image, preprocessed as the backend's model expects."""
    loader = DataLoader(
        ImageDataset(images, backend.preprocessing.transform(), read=read),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(num_workers),
        pin_memory=backend.pin_memory,
    )
    return embed_batches(backend, (batch for batch, _ in loader))


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
    """`embed_images` of a network in memory (validation during training): eval mode for the
    loop, the model's previous mode after it."""
    device = device or next(model.parameters()).device
    preprocessing = Preprocessing(height, width, tuple(pixel_mean), tuple(pixel_std), "caller")
    backend = TorchBackend(model, device, preprocessing, amp, getattr(model, "feat_dim", None))
    return embed_images(backend, paths, batch_size=batch_size, num_workers=num_workers)
