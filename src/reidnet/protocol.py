"""Which gallery images a query ignores under the Market-1501 evaluation protocol.

One rule for the metrics (evaluation/rank.py), the match plots (evaluation/plots.py) and the
dataset check (datatools/validate.py), so the three cannot drift apart:

* with the same-camera filter on (the protocol's default), a gallery image of the query's
  identity taken by the query's camera is neither a hit nor a miss;
* with it off, only the query image itself is ignored, when the gallery holds it too.

Torch-free (the dataset check runs in the service without torch); `same_camera_ignored` uses
only `==` and `&`, so it works elementwise on ints, numpy arrays and torch tensors alike.
"""

from __future__ import annotations

import os


def same_camera_ignored(query_pid, query_camid, gallery_pid, gallery_camid):
    """True where a gallery image shows the query's identity through the query's camera."""
    return (gallery_pid == query_pid) & (gallery_camid == query_camid)


def image_key(path: str | os.PathLike) -> str:
    """The name by which a gallery entry is recognised as the query image itself."""
    return os.path.normpath(os.fspath(path))
