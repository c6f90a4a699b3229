"""Procedural synthetic pedestrians, written as a Market-1501-layout dataset.

The newcomer's dataset: no download, seconds to make, and a real re-identification task. An identity
is a stable mix of body shape, skin, hair, clothes and accessories drawn from small palettes (so
identities share attributes); a camera brings its own scene, light, colour cast, blur and framing;
each image adds a viewpoint, a pose, maybe an occluder, and sensor noise.

Every random choice comes from a PCG64 generator seeded by (seed, purpose, key...), never from
global state or hash ordering, so a seed gives byte-identical files in any process and with any
number of workers.
"""

from reidnet.data.market import SubsetCounts
from reidnet.datatools.synthetic.generate import (
    SUBSETS,
    SyntheticSummary,
    generate_synthetic_dataset,
)
from reidnet.datatools.synthetic.render import render_image
from reidnet.datatools.synthetic.request import SyntheticRequest

__all__ = [
    "SUBSETS",
    "SubsetCounts",
    "SyntheticRequest",
    "SyntheticSummary",
    "generate_synthetic_dataset",
    "render_image",
]
