"""Seeded random streams: each random decision of the generator has its own purpose and key.

Every choice comes from a PCG64 generator seeded by (seed, purpose, key...), never from global state
or hash ordering, so a seed gives byte-identical files in any process and with any number of
workers; and changing one argument (say the number of cameras) leaves the appearance of every
identity as it was.
"""

from __future__ import annotations

import numpy as np

IDENTITY_STREAM, CAMERA_STREAM, IMAGE_STREAM, PLAN_STREAM, DISTRACTOR_STREAM = 1, 2, 3, 4, 5


def seeded_rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))
