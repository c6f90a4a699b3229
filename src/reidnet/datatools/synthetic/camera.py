"""What a camera brings: its own scene, light, colour cast, focus, sensor noise and framing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reidnet.datatools.synthetic.streams import CAMERA_STREAM, seeded_rng


@dataclass(frozen=True)
class Camera:
    background: np.ndarray  # (H, 2W, 3) float32 scene, cropped at a random offset per image
    brightness: float
    cast: np.ndarray  # per-channel gain
    blur_passes: int
    noise: float
    scale: float
    x_bias: float
    occlusion: float


@lru_cache(maxsize=256)
def camera_of(seed: int, camera: int, height: int, width: int) -> Camera:
    rng = seeded_rng(seed, CAMERA_STREAM, camera, 0)
    return Camera(
        background=_scene(rng, height, 2 * width),
        brightness=float(rng.uniform(0.7, 1.15)),
        cast=rng.uniform(0.85, 1.15, size=3).astype(np.float32),
        blur_passes=int(rng.integers(0, 3)),
        noise=float(rng.uniform(2.0, 7.0)),
        scale=float(rng.uniform(0.8, 0.92)),
        x_bias=float(rng.uniform(-0.04, 0.04)),
        occlusion=float(rng.uniform(0.05, 0.2)),
    )


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A camera's backdrop: wall gradient, floor below a horizon, a few structures, texture."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall_top, wall_bottom, floor_far, floor_near = _muted(rng, 4, 50, 210)
    horizon = float(rng.uniform(0.55, 0.8))
    wall = wall_top + (wall_bottom - wall_top) * ys
    floor_t = np.clip((ys - horizon) / (1 - horizon), 0, 1)
    floor = floor_far + (floor_near - floor_far) * floor_t
    scene = np.where(ys < horizon, wall, floor) * np.ones((1, width, 1), np.float32)
    horizon_row = int(horizon * height)
    for colour in _muted(rng, int(rng.integers(1, 5)), 30, 230):  # poles, doors, windows
        x0 = int(rng.integers(0, width))
        x1 = x0 + int(rng.integers(2, max(3, width // 5)))
        y0 = int(rng.integers(0, max(1, horizon_row - 4)))
        scene[y0:horizon_row, x0:x1] = colour
    coarse = rng.normal(0, 10, size=(max(2, height // 8), max(2, width // 8), 3))
    scene += _upsample(coarse.astype(np.float32), height, width)
    scene += rng.normal(0, 3, size=scene.shape).astype(np.float32)
    return _blur(scene, 1)


def _muted(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """Random colours pulled towards grey: streets and walls are rarely saturated."""
    grey = rng.uniform(low, high, size=(count, 1))
    tint = rng.uniform(-40, 40, size=(count, 3))
    return np.clip(grey + tint, 0, 255).astype(np.float32)


def _upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w, 3) field, h and w >= 2, to (height, width, 3)."""
    # Elementwise on purpose: a BLAS product's summation order may vary with threads or alignment.

    def lerp(field: np.ndarray, size: int, axis: int) -> np.ndarray:
        small = field.shape[axis]
        position = np.linspace(0.0, small - 1.0, size, dtype=np.float32)
        low = np.minimum(position.astype(np.int64), small - 2)
        shape = [1, 1, 1]
        shape[axis] = size
        fraction = (position - low).astype(np.float32).reshape(shape)
        below, above = np.take(field, low, axis=axis), np.take(field, low + 1, axis=axis)
        return below + (above - below) * fraction

    return lerp(lerp(coarse.astype(np.float32), height, 0), width, 1)


def photograph(canvas: np.ndarray, scene: Camera, rng: np.random.Generator) -> np.ndarray:
    """The camera's light, colour cast, focus and sensor noise, then 8-bit pixels."""
    gain = scene.cast * np.float32(scene.brightness * rng.uniform(0.92, 1.08))
    image = _blur(canvas * gain, scene.blur_passes)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(scene.noise)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, passes: int) -> np.ndarray:
    """Separable [1, 2, 1] / 4 smoothing with edge replication, repeated: a cheap Gaussian."""
    image = image.astype(np.float32, copy=False)
    for _ in range(passes):
        for axis in (0, 1):
            image = np.moveaxis(image, axis, 0)
            smooth = image * np.float32(0.5)
            smooth[1:] += image[:-1] * np.float32(0.25)
            smooth[:-1] += image[1:] * np.float32(0.25)
            smooth[0] += image[0] * np.float32(0.25)
            smooth[-1] += image[-1] * np.float32(0.25)
            image = np.moveaxis(smooth, 0, axis)
    return np.ascontiguousarray(image)
