"""Training data held next to the model: every image decoded once into one uint8 tensor, and the
strong baseline's augmentations drawn per sample and applied in batched form on that device.

The same tensor code runs on the CPU (that is how the tests check its distributions against the
per-image transforms of `reidnet.data.transforms`) and on CUDA, where the data path costs a few
kernels per step and never waits on Python or on DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from reidnet.contracts import PIXEL_MEAN, PIXEL_STD
from reidnet.data.transforms import read_image_rgb

logger = logging.getLogger(__name__)

ERASE_ATTEMPTS = 100  # the strong baseline's RandomErasing tries up to 100 rectangles


# ---------------------------------------------------------------------------------------------
# Decode once


def decode_resized(
    paths: Sequence[str | Path],
    height: int,
    width: int,
    workers: int = 8,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 [N, 3, height, width] on the CPU (written into `out` when given): each image read
    as RGB and resized exactly as the per-image transforms do it (PIL bilinear), so both
    pipelines see the same pixels."""
    shape = (len(paths), 3, height, width)
    images = torch.empty(shape, dtype=torch.uint8) if out is None else out
    if tuple(images.shape) != shape or images.dtype != torch.uint8:
        raise ValueError(f"out must be uint8 {shape}, got {images.dtype} {tuple(images.shape)}")
    resize = v2.Resize((height, width))

    def decode(index: int) -> None:
        image = resize(read_image_rgb(paths[index]))
        images[index] = v2.functional.pil_to_tensor(image)

    # PIL releases the GIL while it decodes and resizes: threads scale without copying pixels
    # between processes.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(decode, range(len(paths))):
            pass
    return images


@dataclass
class DecodedImages:
    """Decoded uint8 images [N, 3, H, W] and where they live: on the compute device, or in
    (pageable) host memory, copied to the device batch by batch through a small pinned buffer.

    The store itself is never pinned: PyTorch's caching host allocator rounds a pinned block up
    to the next power of two (a 70 GB store would ask for 128 GiB), and every batch is copied
    into its own pinned buffer anyway.
    """

    images: torch.Tensor
    device: torch.device
    placement: str  # "device" or "host"

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def staged(self) -> bool:
        """Held in host memory for a CUDA device: each batch is gathered on the host."""
        return self.placement == "host" and self.device.type == "cuda"

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at `indices` (on `self.device` or on the CPU), as uint8 on the device."""
        if not self.staged:
            return self.images.index_select(0, indices.to(self.images.device))
        batch = torch.empty(
            (indices.numel(), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=True
        )
        torch.index_select(self.images, 0, indices.cpu(), out=batch)
        return batch.to(self.device, non_blocking=True)


def choose_placement(
    nbytes: int, device: torch.device, memory_share: float, free_bytes: int | None = None
) -> tuple[str, str]:
    """Where `nbytes` of decoded images go, and why: "device" when they fit in `memory_share` of
    the device's free memory (measured now: call it after the first training step, so the
    model's own memory is taken), else "host"."""
    if device.type != "cuda":
        return "host", "training on the CPU"
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    if nbytes <= memory_share * free_bytes:
        return "device", f"{device}, {free_bytes / 1e9:.1f} GB free before"
    return "host", (
        f"more than {memory_share:.0%} of the {free_bytes / 1e9:.1f} GB free on {device} "
        "(train.gpu_data_memory_share); each batch is copied over"
    )


def load_decoded(
    paths: Sequence[str | Path],
    height: int,
    width: int,
    device: torch.device,
    *,
    memory_share: float = 0.5,
    placement: str | None = None,
    workers: int = 8,
    what: str = "training images",
    verbose: bool = True,
    decode: Callable[[], torch.Tensor] | None = None,
) -> DecodedImages:
    """Decode `paths` once and keep them on `device` when they fit in `memory_share` of its free
    memory, else in host memory (`placement` "host" forces that); one log line says which.
    `decode` replaces the decoding itself (the trainer's decodes once per machine)."""
    if placement is None:
        placement, reason = choose_placement(len(paths) * 3 * height * width, device, memory_share)
    else:
        reason = "kept off the GPU between uses" if device.type == "cuda" else "training on the CPU"
    images = decode() if decode else decode_resized(paths, height, width, workers)
    if placement == "device":
        images = images.to(device)
    if verbose:
        where = "GPU memory" if placement == "device" else "host memory"
        logger.info(
            "%s %s decoded once as uint8 %dx%d (%s), held in %s (%s)",
            f"{len(paths):,}",
            what,
            height,
            width,
            _gb(images),
            where,
            reason,
        )
    return DecodedImages(images, device, placement)


def _gb(tensor: torch.Tensor) -> str:
    return f"{tensor.numel() * tensor.element_size() / 1e9:.2f} GB"


class _PerDevice:
    """A small constant tensor with one copy per device, made once: copying it from the host at
    every step would make PyTorch wait for the GPU each time."""

    def __init__(self, values: torch.Tensor):
        self.copies = {torch.device("cpu"): values}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self.copies:
            self.copies[device] = self.copies[torch.device("cpu")].to(device)
        return self.copies[device]


# ---------------------------------------------------------------------------------------------
# Normalisation and batched augmentation


class Normalize:
    """uint8 [B, 3, H, W] -> float32 (x / 255 - mean) / std in one multiply-add, channels_last."""

    def __init__(
        self, pixel_mean: Sequence[float] = PIXEL_MEAN, pixel_std: Sequence[float] = PIXEL_STD
    ):
        std = torch.tensor(pixel_std, dtype=torch.float64)
        self.scale = _PerDevice((1.0 / (255.0 * std)).float())
        self.shift = _PerDevice((-torch.tensor(pixel_mean, dtype=torch.float64) / std).float())

    def channels_last(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise pixels laid out [B, H, W, 3] (uint8); returns the same layout, float32."""
        device = pixels.device
        # shift + pixels * scale, broadcast over the channel axis
        return torch.addcmul(self.shift.on(device), pixels.float(), self.scale.on(device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 2, 3, 1)
        return self.channels_last(pixels).permute(0, 3, 1, 2)


@dataclass
class AugmentParams:
    """Per-sample random choices of one batch, all tensors [B] on the batch's device."""

    flip: torch.Tensor  # bool: mirror the image
    crop_top: torch.Tensor  # long in 0..2*padding: crop offset inside the padded image
    crop_left: torch.Tensor
    erase: torch.Tensor  # bool: write an erasing rectangle (the draw said so and one fitted)
    erase_top: torch.Tensor  # long: the rectangle, in output pixels
    erase_left: torch.Tensor
    erase_height: torch.Tensor
    erase_width: torch.Tensor


class BatchAugment:
    """The training transforms of `build_train_transform`, for a whole uint8 batch at once.

    Per image, independently, with the same distributions as the per-image transforms: mirror
    with probability `flip_prob`; zero-pad by `padding` and crop back at a uniform offset in
    0..2*padding on each axis; normalise; with probability `re_prob` erase a rectangle of area
    ratio U(sl, sh) and aspect U(r1, 1/r1), the first of up to 100 candidates that fits (drawn
    all at once instead of in a loop), filled with the raw pixel mean values as the baseline does.
    Mirror, pad and crop are one gather; normalisation and erasing are one fused pass. The
    output is float32 [B, 3, H, W] in channels_last memory order.
    """

    def __init__(
        self,
        height: int,
        width: int,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
        *,
        flip_prob: float = 0.5,
        padding: int = 10,
        re_prob: float = 0.5,
        sl: float = 0.02,
        sh: float = 0.4,
        r1: float = 0.3,
    ) -> None:
        self.height, self.width = height, width
        self.flip_prob, self.padding, self.re_prob = flip_prob, padding, re_prob
        self.sl, self.sh, self.r1 = sl, sh, r1
        self.normalize = Normalize(pixel_mean, pixel_std)
        self.fill = _PerDevice(torch.tensor(pixel_mean, dtype=torch.float32))

    def draw(self, batch_size: int, generator: torch.Generator) -> AugmentParams:
        """Random choices for `batch_size` images from `generator` (on the batch's device)."""
        device = generator.device
        uniform = torch.rand(batch_size, 5, generator=generator, device=device)
        span = 2 * self.padding + 1
        crop = (uniform[:, 1:3] * span).long().clamp_(max=span - 1)
        height, width, found = self._erase_sizes(batch_size, generator)
        # Python's round() and torch.round() both round halves to even; the sizes match the
        # per-image transform's.
        top = (uniform[:, 3] * (self.height - height + 1)).long()
        left = (uniform[:, 4] * (self.width - width + 1)).long()
        return AugmentParams(
            flip=uniform[:, 0] < self.flip_prob,
            crop_top=crop[:, 0],
            crop_left=crop[:, 1],
            erase=(torch.rand(batch_size, generator=generator, device=device) < self.re_prob)
            & found,
            erase_top=torch.minimum(top, (self.height - height).clamp(min=0)),
            erase_left=torch.minimum(left, (self.width - width).clamp(min=0)),
            erase_height=height,
            erase_width=width,
        )

    def _erase_sizes(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Height and width of the first fitting candidate per image, and whether one fitted."""
        device = generator.device
        candidates = torch.rand(batch_size, ERASE_ATTEMPTS, 2, generator=generator, device=device)
        area = (self.sl + (self.sh - self.sl) * candidates[..., 0]) * (self.height * self.width)
        aspect = self.r1 + (1.0 / self.r1 - self.r1) * candidates[..., 1]
        heights = torch.sqrt(area * aspect).round().long()
        widths = torch.sqrt(area / aspect).round().long()
        fits = (heights < self.height) & (widths < self.width)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # argmax returns the first maximum
        return (
            heights.gather(1, first).squeeze(1),
            widths.gather(1, first).squeeze(1),
            fits.any(1),
        )

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment uint8 [B, 3, H, W] images with the given choices."""
        batch, _, height, width = images.shape
        if (height, width) != (self.height, self.width):
            raise ValueError(f"expected {self.height}x{self.width} images, got {height}x{width}")
        device, pad = images.device, self.padding
        padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
        rows = params.crop_top[:, None] + torch.arange(height, device=device)
        columns = params.crop_left[:, None] + torch.arange(width, device=device)
        # Mirroring, then padding symmetrically, then cropping at `left` reads column
        # (W + 2p - 1) - (left + j) of the unmirrored padded image.
        columns = torch.where(params.flip[:, None], width + 2 * pad - 1 - columns, columns)
        samples = torch.arange(batch, device=device)[:, None, None]
        pixels = padded.permute(0, 2, 3, 1)[samples, rows[:, :, None], columns[:, None, :]]
        normalised = self.normalize.channels_last(pixels)  # [B, H, W, 3]
        normalised = torch.where(
            self._erase_mask(params, height, width)[..., None],
            self.fill.on(device),
            normalised,
        )
        return normalised.permute(0, 3, 1, 2)

    @staticmethod
    def _erase_mask(params: AugmentParams, height: int, width: int) -> torch.Tensor:
        device = params.erase.device
        ys = torch.arange(height, device=device)[None, :]
        xs = torch.arange(width, device=device)[None, :]
        in_rows = (ys >= params.erase_top[:, None]) & (
            ys < (params.erase_top + params.erase_height)[:, None]
        )
        in_columns = (xs >= params.erase_left[:, None]) & (
            xs < (params.erase_left + params.erase_width)[:, None]
        )
        return params.erase[:, None, None] & in_rows[:, :, None] & in_columns[:, None, :]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.draw(images.shape[0], generator))


# ---------------------------------------------------------------------------------------------
# One epoch of batches on the device


def step_seed(base: int, step: int) -> int:
    """A 63-bit seed per (base, step): each step's augmentation is reproducible on its own, so a
    run resumed in the middle of an epoch draws what the uninterrupted run drew."""
    mixed = (base * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 1) % (1 << 64)
    mixed ^= mixed >> 31
    return mixed % (1 << 63)


class DeviceBatches:
    """The (images, labels) batches of one epoch, gathered and augmented on the device.

    `batches` are the sampler's index lists (all the same length); they move to the device once,
    and each step slices its row. Iteration starts at `first_step` (mid-epoch resume).
    """

    def __init__(
        self,
        store: DecodedImages,
        labels: torch.Tensor,
        batches: Sequence[Sequence[int]],
        augment: BatchAugment,
        seed: int,
        first_step: int = 0,
    ) -> None:
        self.store, self.augment, self.seed = store, augment, seed
        self.first_step = first_step
        index = torch.tensor(batches, dtype=torch.long).reshape(len(batches), -1 if batches else 0)
        # One copy per epoch; host-staged images are gathered on the CPU with the host copy.
        self.index = index.to(store.device, non_blocking=True)
        self.host_index = index if store.staged else self.index
        self.labels = labels.to(store.device)
        self.generator = torch.Generator(store.device)

    def __len__(self) -> int:
        return max(0, self.index.shape[0] - self.first_step)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(self.first_step, self.index.shape[0]):
            self.generator.manual_seed(step_seed(self.seed, step))
            images = self.augment(self.store.gather(self.host_index[step]), self.generator)
            yield images, self.labels[self.index[step]]


@torch.no_grad()
def embed_decoded(
    model: torch.nn.Module,
    store: DecodedImages,
    normalize: Normalize,
    batch_size: int,
    autocast,
) -> torch.Tensor:
    """Eval-mode embeddings [N, D] (float32, CPU) of decoded images, in order."""
    was_training = model.training
    model.eval()
    features = []
    try:
        for start in range(0, len(store), batch_size):
            indices = torch.arange(start, min(start + batch_size, len(store)))
            with autocast():
                features.append(model(normalize(store.gather(indices))).float())
    finally:
        model.train(was_training)
    if not features:
        return torch.empty(0, getattr(model, "feat_dim", 0))
    return torch.cat(features).cpu()
