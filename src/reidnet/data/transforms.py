"""Image loading and the strong baseline's train / eval transforms (PIL image -> normalised
float32 tensor [3, H, W]).

Train: resize -> random horizontal flip -> zero padding -> random crop back to size -> [0, 1]
-> normalise -> random erasing. Eval: resize -> [0, 1] -> normalise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import v2

from reidnet.contracts import PIXEL_MEAN, PIXEL_STD
from reidnet.errors import ReidnetError

Transform = Callable[[Image.Image], torch.Tensor]


def read_image_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as RGB, decoded now (so a corrupt file fails here, by name)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ReidnetError(
            f"cannot read image {os.fspath(path)!r}: {exc}. Replace or remove the file."
        ) from exc


class RandomErasing:
    """Random erasing as the strong baseline does it (Zhong et al., 2017).

    With probability ``probability``: up to 100 attempts at a rectangle of area ratio
    U(sl, sh) and aspect ratio U(r1, 1/r1) that fits inside the image; the first that fits is
    overwritten, channel c with ``fill[c]``. The baseline passes the dataset pixel mean as
    ``fill`` and applies erasing after normalisation, so the written values are the mean
    values themselves (not the normalised mean, which would be 0). We keep that behaviour.
    Randomness comes from torch's generator, so ``torch.manual_seed`` and DataLoader worker
    seeding govern it.
    """

    def __init__(
        self,
        probability: float = 0.5,
        fill: Sequence[float] = PIXEL_MEAN,
        sl: float = 0.02,
        sh: float = 0.4,
        r1: float = 0.3,
    ) -> None:
        self.probability = probability
        self.fill = tuple(float(value) for value in fill)
        self.sl, self.sh, self.r1 = sl, sh, r1

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()).item() >= self.probability:
            return image
        height, width = image.shape[-2:]
        for _ in range(100):
            target_area = _uniform(self.sl, self.sh) * height * width
            aspect = _uniform(self.r1, 1.0 / self.r1)
            h = round(math.sqrt(target_area * aspect))
            w = round(math.sqrt(target_area / aspect))
            if h < height and w < width:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                fill = torch.tensor(self.fill, dtype=image.dtype, device=image.device)
                image = image.clone()
                image[..., top : top + h, left : left + w] = fill[:, None, None]
                return image
        return image

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(probability={self.probability}, fill={self.fill}, "
            f"sl={self.sl}, sh={self.sh}, r1={self.r1})"
        )


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def build_train_transform(
    height: int = 256,
    width: int = 128,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
    flip_prob: float = 0.5,
    padding: int = 10,
    re_prob: float = 0.5,
) -> Transform:
    """The training augmentation (DESIGN.md "Train transforms")."""
    _validate(height, width, pixel_mean, pixel_std)
    _check_probability(flip_prob, "dataset.prob")
    _check_probability(re_prob, "dataset.re_prob")
    if padding < 0:
        raise ReidnetError(f"dataset.padding must be >= 0, got {padding}.")
    geometric: list[Callable] = [v2.RandomHorizontalFlip(flip_prob)]
    if padding:
        geometric += [v2.Pad(padding, fill=0), v2.RandomCrop((height, width))]
    return v2.Compose(
        [
            v2.Resize((height, width)),
            v2.ToImage(),
            *geometric,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pixel_mean), list(pixel_std)),
            RandomErasing(re_prob, fill=pixel_mean),
        ]
    )


def build_eval_transform(
    height: int = 256,
    width: int = 128,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> Transform:
    """Deterministic preprocessing for evaluation, inference and export parity."""
    _validate(height, width, pixel_mean, pixel_std)
    return v2.Compose(
        [
            v2.Resize((height, width)),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pixel_mean), list(pixel_std)),
        ]
    )


def _validate(
    height: int, width: int, pixel_mean: Sequence[float], pixel_std: Sequence[float]
) -> None:
    if height < 1 or width < 1:
        raise ReidnetError(
            f"model.input_height and model.input_width must be positive, got {height}x{width}."
        )
    if len(pixel_mean) != 3:
        raise ReidnetError(f"dataset.pixel_mean needs 3 values (R, G, B), got {list(pixel_mean)}.")
    if len(pixel_std) != 3 or any(value <= 0 for value in pixel_std):
        raise ReidnetError(
            f"dataset.pixel_std needs 3 positive values (R, G, B), got {list(pixel_std)}."
        )


def _check_probability(value: float, key: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ReidnetError(f"{key} is a probability and must be in [0, 1], got {value}.")
