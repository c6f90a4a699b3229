"""The backend protocol and the preprocessing that feeds it.

A backend is a model as an embedding function: normalised images [N, 3, H, W] in, raw (not
L2-normalised) features [N, D] out, with the preprocessing that turns a crop into its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from reidnet.contracts import PIXEL_MEAN, PIXEL_STD, Architecture
from reidnet.data.transforms import Transform, build_eval_transform


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes the model's input: resize, scale to [0, 1], normalise (RGB)."""

    height: int
    width: int
    pixel_mean: tuple[float, ...] = PIXEL_MEAN
    pixel_std: tuple[float, ...] = PIXEL_STD
    source: str = "defaults"

    @classmethod
    def of(cls, architecture: Architecture, source: str = "checkpoint") -> Preprocessing:
        return cls(
            architecture.input_height,
            architecture.input_width,
            architecture.pixel_mean,
            architecture.pixel_std,
            source,
        )

    def transform(self) -> Transform:
        return build_eval_transform(self.height, self.width, self.pixel_mean, self.pixel_std)


# What a graph without reidnet metadata is fed when no spec says otherwise.
DEFAULT_PREPROCESSING = Preprocessing(256, 128, source="reidnet defaults")


def spec_preprocessing(spec) -> Preprocessing:
    """The fallback for graphs without reidnet metadata: the spec's input size and pixel stats."""
    return Preprocessing(
        spec.model.input_height,
        spec.model.input_width,
        tuple(spec.dataset.pixel_mean),
        tuple(spec.dataset.pixel_std),
        source="spec (model.input_height/input_width, dataset.pixel_mean/pixel_std)",
    )


class Backend(Protocol):
    """A model as an embedding function (see the module docstring)."""

    preprocessing: Preprocessing
    feat_dim: int | None  # None: a graph whose output size is only known once it runs
    model_file: Path | None  # None: a model built in memory
    pin_memory: bool  # whether batches should arrive in page-locked memory (CUDA copies)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Raw float32 features [N, D] of normalised images [N, 3, H, W] (any device)."""
        ...
