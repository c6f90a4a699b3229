"""Who is drawn: an identity is a stable mix of body shape, skin, hair, clothes and accessories
drawn from small palettes (RGB), so that many identities share a shirt colour, a hair tone, a bag...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reidnet.datatools.synthetic.streams import IDENTITY_STREAM, seeded_rng

SKIN_TONES = ((255, 224, 196), (234, 192, 160), (205, 150, 115), (160, 110, 80), (110, 72, 50))
HAIR_TONES = ((20, 18, 18), (70, 45, 30), (130, 90, 50), (200, 170, 110), (150, 150, 150))
UPPER_COLOURS = (
    (200, 30, 35), (30, 60, 170), (240, 240, 240), (25, 25, 28), (40, 140, 60), (245, 200, 40),
    (130, 130, 135), (110, 60, 150), (240, 130, 40), (120, 190, 230), (230, 120, 170),
    (100, 70, 45),
)  # fmt: skip
LOWER_COLOURS = (
    (35, 40, 80), (25, 25, 28), (110, 110, 115), (190, 170, 130),
    (90, 70, 50), (230, 230, 225), (60, 90, 60), (150, 40, 45),
)  # fmt: skip
SHOE_COLOURS = ((20, 20, 20), (235, 235, 235), (110, 70, 40), (60, 60, 150), (150, 30, 30))
ACCESSORY_COLOURS = ((25, 25, 25), (60, 60, 140), (170, 40, 40), (120, 100, 70), (60, 110, 70))
EYES = np.array((40, 30, 30), dtype=np.float32)
MOUTH = np.array((150, 80, 80), dtype=np.float32)
OCCLUDER_COLOURS = ((90, 90, 95), (140, 110, 80), (60, 80, 60), (180, 180, 175), (40, 40, 60))
# Body presets: (height factor, width factor, head factor, leg fraction of height).
BODY_SHAPES = (
    (1.00, 1.00, 1.00, 0.47), (1.03, 0.85, 0.96, 0.49), (0.95, 1.18, 1.03, 0.45),
    (0.92, 0.92, 1.08, 0.46), (1.02, 1.10, 0.98, 0.48),
)  # fmt: skip
PATTERNS = ("solid", "horizontal", "vertical", "checks")
LOWER_SHAPES = ("trousers", "shorts", "skirt")
HAIR_LENGTHS = ("short", "medium", "long")
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Identity:
    height: float
    width: float
    head: float
    legs: float
    skin: np.ndarray
    hair: np.ndarray
    hair_length: str
    upper: np.ndarray
    upper_second: np.ndarray
    pattern: str
    stripe_period: float
    long_sleeves: bool
    lower: np.ndarray
    lower_shape: str
    shoes: np.ndarray
    backpack: np.ndarray | None
    bag: np.ndarray | None
    bag_side: int
    hat: np.ndarray | None


@lru_cache(maxsize=4096)
def identity_of(seed: int, pid: int) -> Identity:
    return random_identity(seeded_rng(seed, IDENTITY_STREAM, pid, 0))


def pick(rng: np.random.Generator, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    return np.array(palette[int(rng.integers(len(palette)))], dtype=np.float32)


def random_identity(rng: np.random.Generator) -> Identity:
    height, width, head, legs = BODY_SHAPES[int(rng.integers(len(BODY_SHAPES)))]
    jitter = rng.uniform(-0.03, 0.03, size=3).tolist()
    upper = int(rng.integers(len(UPPER_COLOURS)))
    second = (upper + int(rng.integers(1, len(UPPER_COLOURS)))) % len(UPPER_COLOURS)
    return Identity(
        height=height * (1 + jitter[0]),
        width=width * (1 + jitter[1]),
        head=head * (1 + jitter[2]),
        legs=legs,
        skin=pick(rng, SKIN_TONES),
        hair=pick(rng, HAIR_TONES),
        hair_length=HAIR_LENGTHS[int(rng.choice(3, p=[0.45, 0.25, 0.30]))],
        upper=np.array(UPPER_COLOURS[upper], dtype=np.float32),
        upper_second=np.array(UPPER_COLOURS[second], dtype=np.float32),
        pattern=PATTERNS[int(rng.choice(4, p=[0.5, 0.2, 0.15, 0.15]))],
        stripe_period=float(rng.choice([0.035, 0.05, 0.07])),
        long_sleeves=bool(rng.random() < 0.6),
        lower=pick(rng, LOWER_COLOURS),
        lower_shape=LOWER_SHAPES[int(rng.choice(3, p=[0.65, 0.2, 0.15]))],
        shoes=pick(rng, SHOE_COLOURS),
        backpack=pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.3 else None,
        bag=pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.2 else None,
        bag_side=int(rng.choice([-1, 1])),
        hat=pick(rng, ACCESSORY_COLOURS) if rng.random() < 0.15 else None,
    )
