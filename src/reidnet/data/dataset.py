"""A torch Dataset over image records: decode, transform, and return the label or the index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from reidnet.data.transforms import read_image_rgb


class ImageDataset(Dataset):
    """Images read from `paths`, transformed; items are `(image, target)`.

    The target is the class label when `labels` is given (training), else the item's index
    (feature extraction keeps its own record list). `read` turns an item into an RGB image: by
    default items are file paths (the `Embedder` also passes in-memory images).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        transform: Callable,
        labels: Sequence[int] | None = None,
        read: Callable = read_image_rgb,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.labels = list(labels) if labels is not None else None
        self.read = read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(self.read(self.paths[index]))
        target = self.labels[index] if self.labels is not None else index
        return image, target
