"""Market-1501 retrieval metrics (mAP, CMC, mINP) from a query x gallery distance matrix.

The metrics are those of torchreid, fast-reid and the strong-baseline code: per query, rank the
gallery by ascending distance (ties in gallery order), drop the gallery entries with the query's
identity *and* camera, skip the query if no true match is left, and average over the rest.

No Q x G argsort is ever held. A query's ranks only depend on the gallery entries placed before its
last true match: each chunk of queries takes one comparison pass to select them, and when they are
few (a good model) they are compared with the query's true matches directly; when they are many,
the chunk's rows are sorted by value and the true matches located by binary search. Ranks are exact
integers (ties broken by gallery order), the metrics are accumulated in float64, and everything
runs on the distance matrix's device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from reidnet.errors import ReidnetError
from reidnet.evaluation.distance import ArrayLike, as_float_matrix, as_tensor
from reidnet.protocol import image_key, same_camera_ignored

logger = logging.getLogger(__name__)

APMethod = Literal["standard", "trapezoid"]

# Distances per chunk of queries: bounds the boolean mask and the selected entries to ~100 MB.
_CHUNK_ELEMENTS = 1 << 23
# (selected entry x true match) comparisons held at once.
_COMPARE_ELEMENTS = 1 << 22
# Above this many (selected entry x hit) comparisons per distance of a chunk, sorting its rows
# is cheaper than comparing the selected entries with every hit.
_COMPARISONS_PER_DISTANCE = 0.5


@dataclass(frozen=True, eq=False)
class RankResult:
    """Retrieval metrics averaged over the valid queries (those with a true match left).

    Attributes:
        mAP: mean average precision, in [0, 1].
        cmc: CMC curve as float64, ``cmc[k - 1]`` = fraction of valid queries with a true match in
            the top k; length ``max_rank``.
        mINP: mean inverse negative penalty (fast-reid): true matches / rank of the hardest one.
        num_valid_queries: queries that entered the averages.
        num_skipped_queries: queries without any true match left after the filtering.
        ap_method: ``"standard"`` (non-interpolated) or ``"trapezoid"`` (official Market MATLAB).
    """

    mAP: float
    cmc: np.ndarray
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    ap_method: str = "standard"

    def rank(self, k: int) -> float:
        """CMC at rank ``k`` (1-based), e.g. ``result.rank(1)`` is rank-1 accuracy."""
        if not 1 <= k <= len(self.cmc):
            raise ReidnetError(
                f"rank-{k} is outside the CMC curve, which covers ranks 1..{len(self.cmc)}; "
                "evaluate with a larger max_rank"
            )
        return float(self.cmc[k - 1])

    def as_dict(self) -> dict[str, float | int]:
        """mAP, rank-1/5/10 (those within max_rank), mINP as floats in [0, 1], plus the counts."""
        metrics: dict[str, float | int] = {"mAP": float(self.mAP)}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                metrics[f"rank-{k}"] = self.rank(k)
        metrics["mINP"] = float(self.mINP)
        metrics["num_valid_queries"] = int(self.num_valid_queries)
        metrics["num_skipped_queries"] = int(self.num_skipped_queries)
        return metrics


def rank_metrics(
    distmat: ArrayLike,
    query_pids: ArrayLike,
    gallery_pids: ArrayLike,
    query_camids: ArrayLike | None,
    gallery_camids: ArrayLike | None,
    max_rank: int = 50,
    same_camera_filter: bool = True,
    ap: APMethod = "standard",
    query_paths: Sequence[str | os.PathLike] | None = None,
    gallery_paths: Sequence[str | os.PathLike] | None = None,
    chunk_size: int | None = None,
) -> RankResult:
    """mAP, CMC and mINP of a Q x G distance matrix under the Market-1501 protocol.

    Args:
        distmat: Q x G distances (numpy or torch, CPU or CUDA); smaller is more similar. float64
            input is ranked in float64. NaN is refused; infinities rank first or last.
        query_pids, gallery_pids: identity of each row / column. Gallery distractors (pid 0) are
            ordinary negatives; junk images (pid -1) must be dropped before.
        query_camids, gallery_camids: camera of each row / column; required when
            ``same_camera_filter`` is on, unused otherwise.
        max_rank: length of the returned CMC curve; padded with its last value (1.0) when it
            exceeds the gallery size.
        same_camera_filter: drop gallery entries with the query's identity and camera (the
            Market-1501 rule). Off, nothing is dropped except the query image itself when it also
            sits in the gallery, which needs ``query_paths`` and ``gallery_paths``.
        ap: ``"standard"`` non-interpolated AP (torchreid, fast-reid: mean precision at each true
            match) or ``"trapezoid"`` (the official Market-1501 MATLAB ``compute_AP``, which
            averages the precision before and at each true match; 0.5-1 points lower).
        query_paths, gallery_paths: image paths, only used to find the query's own image when
            ``same_camera_filter`` is off.
        chunk_size: queries evaluated at once; default keeps each chunk near 8M distances.

    Returns:
        A :class:`RankResult`.

    Raises:
        ReidnetError: inconsistent shapes, NaN distances, or no query with a true match left.
    """
    distances = as_float_matrix(distmat, "distmat").detach()
    num_query, num_gallery = distances.shape
    device = distances.device
    if max_rank < 1:
        raise ReidnetError(f"max_rank must be at least 1; got {max_rank}")
    if ap not in ("standard", "trapezoid"):
        raise ReidnetError(f"unknown AP method {ap!r}: use 'standard' or 'trapezoid'")
    if chunk_size is not None and chunk_size < 1:
        raise ReidnetError(f"chunk_size must be at least 1; got {chunk_size}")
    q_pids = _as_ids(query_pids, num_query, "query_pids", device)
    g_pids = _as_ids(gallery_pids, num_gallery, "gallery_pids", device)
    if same_camera_filter:
        if query_camids is None or gallery_camids is None:
            raise ReidnetError(
                "same_camera_filter=True needs query_camids and gallery_camids; pass them, or "
                "set same_camera_filter=False to evaluate without the camera rule"
            )
        cameras = (
            _as_ids(query_camids, num_query, "query_camids", device),
            _as_ids(gallery_camids, num_gallery, "gallery_camids", device),
        )
        self_keys = None
    else:
        cameras = None
        self_keys = _self_pair_keys(query_paths, gallery_paths, num_query, num_gallery, device)
    if max_rank > num_gallery:
        logger.debug(
            "the CMC curve has %d ranks but the gallery %d images: ranks beyond %d repeat "
            "the last value",
            max_rank,
            num_gallery,
            num_gallery,
        )

    matches = _MatchIndex(g_pids)
    chunk = chunk_size or max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))
    first_rank = torch.zeros(num_query, dtype=torch.int64, device=device)
    average_precision = torch.zeros(num_query, dtype=torch.float64, device=device)
    inverse_penalty = torch.zeros(num_query, dtype=torch.float64, device=device)
    for start in range(0, num_query, chunk):
        rows = slice(start, min(start + chunk, num_query))
        first_rank[rows], average_precision[rows], inverse_penalty[rows] = _chunk_metrics(
            distances[rows], start, q_pids[rows], matches, cameras, self_keys, ap
        )

    valid = (first_rank > 0).cpu().numpy()
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise _no_valid_query_error(q_pids, g_pids, same_camera_filter)
    first = first_rank.cpu().numpy()[valid]
    hits_within = np.bincount(np.minimum(first, max_rank + 1), minlength=max_rank + 2)
    cmc = np.cumsum(hits_within[1 : max_rank + 1]) / num_valid
    return RankResult(
        mAP=float(np.mean(average_precision.cpu().numpy()[valid])),
        cmc=cmc.astype(np.float64),
        mINP=float(np.mean(inverse_penalty.cpu().numpy()[valid])),
        num_valid_queries=num_valid,
        num_skipped_queries=num_query - num_valid,
        ap_method=ap,
    )


class _MatchIndex:
    """The gallery columns of each identity, found by binary search in the sorted gallery pids."""

    def __init__(self, gallery_pids: torch.Tensor) -> None:
        self.pids = gallery_pids
        self.order = torch.argsort(gallery_pids, stable=True)
        self.sorted_pids = gallery_pids[self.order]

    def lookup(self, query_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of every true match of the given queries, columns ascending per row."""
        low = torch.searchsorted(self.sorted_pids, query_pids)
        counts = torch.searchsorted(self.sorted_pids, query_pids, right=True) - low
        rows = torch.repeat_interleave(torch.arange(len(query_pids), device=low.device), counts)
        offsets = torch.arange(len(rows), device=low.device) - (counts.cumsum(0) - counts)[rows]
        return rows, self.order[low[rows] + offsets]


def _chunk_metrics(
    block: torch.Tensor,
    start: int,
    query_pids: torch.Tensor,
    matches: _MatchIndex,
    cameras: tuple[torch.Tensor, torch.Tensor] | None,
    self_keys: torch.Tensor | None,
    ap: APMethod,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-hit rank (0 = skipped query), AP and INP of each query row of `block`."""
    num_rows, num_gallery = block.shape
    device = block.device
    if bool(torch.aminmax(block).min.isnan()):  # one pass; NaN propagates through min/max
        raise ReidnetError(
            "distmat contains NaN distances; check the features for NaN (e.g. a diverged "
            "model) before evaluating"
        )
    match_row, match_col = matches.lookup(query_pids)
    if cameras is not None:
        query_cams, gallery_cams = cameras
        removed = same_camera_ignored(
            query_pids[match_row],
            query_cams[start + match_row],
            matches.pids[match_col],
            gallery_cams[match_col],
        )
    elif self_keys is not None:
        removed = torch.isin((start + match_row) * num_gallery + match_col, self_keys)
    else:
        removed = torch.zeros_like(match_row, dtype=torch.bool)
    hit_row, hit_col = match_row[~removed], match_col[~removed]
    num_hits = torch.bincount(hit_row, minlength=num_rows)
    zeros = torch.zeros(num_rows, dtype=torch.float64, device=device)
    if hit_row.numel() == 0:
        return torch.zeros(num_rows, dtype=torch.int64, device=device), zeros, zeros.clone()
    hit_dist, hit_col = _sorted_hits(block, hit_row, hit_col, num_hits)
    # Entries that are not ranked at all: removed true matches and, without the camera rule, the
    # query's own image (normally a removed match too, unless its pid disagrees).
    excluded_row, excluded_col = match_row[removed], match_col[removed]
    if self_keys is not None:
        chunk_keys = self_keys[
            (self_keys >= start * num_gallery) & (self_keys < (start + num_rows) * num_gallery)
        ]
        match_keys = (start + match_row) * num_gallery + match_col
        chunk_keys = chunk_keys[~torch.isin(chunk_keys, match_keys)]
        excluded_row = torch.cat([excluded_row, chunk_keys // num_gallery - start])
        excluded_col = torch.cat([excluded_col, chunk_keys % num_gallery])
    ranks = _hit_ranks(
        block, hit_dist, hit_col, num_hits, (match_row, match_col), (excluded_row, excluded_col)
    )

    width = hit_dist.shape[1]
    hit_index = torch.arange(width, device=device)
    is_hit = hit_index < num_hits[:, None]
    hits_so_far = (hit_index + 1).to(torch.float64)
    precision = hits_so_far / ranks
    if ap == "trapezoid":
        previous = torch.where(ranks > 1, hit_index / (ranks - 1).clamp_min(1), 1.0)
        precision = (previous + precision) / 2
    count = num_hits.clamp_min(1).to(torch.float64)
    average_precision = (precision * is_hit).sum(1) / count
    last_rank = ranks.gather(1, (num_hits - 1).clamp_min(0)[:, None]).squeeze(1)
    inverse_penalty = torch.where(num_hits > 0, num_hits / last_rank, 0.0)
    first_rank = torch.where(num_hits > 0, ranks[:, 0].to(torch.int64), 0)
    return first_rank, average_precision, inverse_penalty


def _hit_ranks(
    block: torch.Tensor,
    hit_dist: torch.Tensor,
    hit_col: torch.Tensor,
    num_hits: torch.Tensor,
    matches: tuple[torch.Tensor, torch.Tensor],
    excluded: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """1-based rank among the kept gallery entries of each hit, float64 (rows x hits, padded)."""
    num_rows, width = hit_dist.shape
    # Only entries up to a row's last hit can rank before one of its hits.
    last_hit = hit_dist.gather(1, (num_hits - 1).clamp_min(0)[:, None])
    last_hit[num_hits == 0] = -torch.inf
    selected = block <= last_hit
    selected[matches] = False
    selected[excluded] = False
    num_selected = int(torch.count_nonzero(selected))
    if num_selected * width > _COMPARISONS_PER_DISTANCE * selected.numel():
        return _ranks_from_sorted_rows(block, hit_dist, hit_col, excluded)
    sel_row, sel_col = selected.nonzero(as_tuple=True)
    before = _hits_before(block[sel_row, sel_col], sel_row, sel_col, hit_dist, hit_col)
    # A selected negative precedes the k-th hit (0-based, ranking order) iff at most k hits
    # precede it, so a cumulative histogram gives the negatives before each hit.
    histogram = torch.bincount(sel_row * (width + 1) + before, minlength=num_rows * (width + 1))
    negatives_before = histogram.view(num_rows, width + 1).cumsum(1)[:, :width]
    hit_index = torch.arange(width, device=block.device)
    return (negatives_before + hit_index + 1).to(torch.float64)


def _ranks_from_sorted_rows(
    block: torch.Tensor,
    hit_dist: torch.Tensor,
    hit_col: torch.Tensor,
    excluded: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Hit ranks by binary search in each row's sorted distances: for rows ranking most entries."""
    if block.is_cuda:
        sorted_rows = torch.sort(block, dim=1).values
    else:  # numpy's vectorised sort is several times faster than torch's on CPU
        sorted_rows = torch.from_numpy(np.sort(block.numpy(), axis=1))
    below = torch.searchsorted(sorted_rows, hit_dist)
    ties = torch.searchsorted(sorted_rows, hit_dist, right=True) - below > 1
    before = below
    # Entries at exactly a hit's distance precede it only if they come earlier in the gallery.
    tie_row, tie_slot = ties.nonzero(as_tuple=True)
    step = max(1, _COMPARE_ELEMENTS // block.shape[1])
    columns = torch.arange(block.shape[1], device=block.device)
    for start in range(0, len(tie_row), step):
        row, slot = tie_row[start : start + step], tie_slot[start : start + step]
        equal = block[row] == hit_dist[row, slot, None]
        before[row, slot] += (equal & (columns < hit_col[row, slot, None])).sum(1)
    # Excluded entries were counted above but take no rank.
    excluded_row, excluded_col = excluded
    before -= _entries_before_hits(
        block[excluded_row, excluded_col], excluded_row, excluded_col, hit_dist, hit_col
    )
    return (before + 1).to(torch.float64)


def _sorted_hits(
    block: torch.Tensor, hit_row: torch.Tensor, hit_col: torch.Tensor, num_hits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's hit distances and columns in ranking order, padded with (+inf, num_gallery)."""
    num_rows, num_gallery = block.shape
    width = int(num_hits.max())
    slot = (
        torch.arange(len(hit_row), device=block.device) - (num_hits.cumsum(0) - num_hits)[hit_row]
    )
    distance = torch.full((num_rows, width), torch.inf, dtype=block.dtype, device=block.device)
    column = torch.full((num_rows, width), num_gallery, dtype=torch.int64, device=block.device)
    distance[hit_row, slot] = block[hit_row, hit_col]
    column[hit_row, slot] = hit_col
    # Columns are ascending within a row, so a stable sort breaks distance ties by gallery order.
    distance, order = torch.sort(distance, dim=1, stable=True)
    return distance, column.gather(1, order)


def _hits_before(
    distance: torch.Tensor,
    row: torch.Tensor,
    column: torch.Tensor,
    hit_dist: torch.Tensor,
    hit_col: torch.Tensor,
) -> torch.Tensor:
    """How many hits of its row rank before each selected entry (distance, then gallery order)."""
    counts = torch.empty_like(row)
    step = max(1, _COMPARE_ELEMENTS // hit_dist.shape[1])
    for start in range(0, len(row), step):
        part = slice(start, start + step)
        before = _precedes(
            hit_dist, hit_col, row[part], distance[part, None], column[part, None], hits_first=True
        )
        counts[part] = before.sum(1, dtype=torch.int32)
    return counts


def _entries_before_hits(
    distance: torch.Tensor,
    row: torch.Tensor,
    column: torch.Tensor,
    hit_dist: torch.Tensor,
    hit_col: torch.Tensor,
) -> torch.Tensor:
    """For each hit (rows x hits), how many of the given entries of its row rank before it."""
    counts = torch.zeros_like(hit_col)
    step = max(1, _COMPARE_ELEMENTS // hit_dist.shape[1])
    for start in range(0, len(row), step):
        part = slice(start, start + step)
        before = _precedes(
            hit_dist, hit_col, row[part], distance[part, None], column[part, None], hits_first=False
        )
        counts.index_add_(0, row[part], before.to(counts.dtype))
    return counts


def _precedes(
    hit_dist: torch.Tensor,
    hit_col: torch.Tensor,
    row: torch.Tensor,
    value: torch.Tensor,
    value_col: torch.Tensor,
    hits_first: bool,
) -> torch.Tensor:
    """entries x hits: whether the hit ranks before the entry (or the entry before the hit)."""
    threshold = hit_dist.index_select(0, row)
    before = threshold < value if hits_first else value < threshold
    tie = threshold == value
    if bool(tie.any()):  # distance ties are rare; gallery order decides them
        threshold_col = hit_col.index_select(0, row)
        before |= tie & (threshold_col < value_col if hits_first else value_col < threshold_col)
    return before


def _as_ids(values: ArrayLike, length: int, name: str, device: torch.device) -> torch.Tensor:
    ids = as_tensor(values, name).to(device)
    if ids.ndim != 1 or len(ids) != length:
        raise ReidnetError(
            f"{name} must be a 1-D array with one entry per distance-matrix "
            f"{'row' if name.startswith('query') else 'column'} ({length}); "
            f"got shape {tuple(ids.shape)}"
        )
    if ids.dtype.is_floating_point and not bool((ids == ids.round()).all()):
        raise ReidnetError(f"{name} must hold integer ids; got non-integer values")
    return ids.to(torch.int64).contiguous()


def _self_pair_keys(
    query_paths: Sequence[str | os.PathLike] | None,
    gallery_paths: Sequence[str | os.PathLike] | None,
    num_query: int,
    num_gallery: int,
    device: torch.device,
) -> torch.Tensor | None:
    """Sorted keys ``query * num_gallery + gallery`` of gallery entries that are the query image."""
    if query_paths is None and gallery_paths is None:
        return None
    if query_paths is None or gallery_paths is None:
        raise ReidnetError("pass both query_paths and gallery_paths, or neither")
    if len(query_paths) != num_query or len(gallery_paths) != num_gallery:
        raise ReidnetError(
            f"got {len(query_paths)} query paths and {len(gallery_paths)} gallery paths for a "
            f"{num_query} x {num_gallery} distance matrix; pass one path per row and column"
        )
    by_path: dict[str, list[int]] = {}
    for index, path in enumerate(gallery_paths):
        by_path.setdefault(image_key(path), []).append(index)
    keys = [
        query * num_gallery + gallery
        for query, path in enumerate(query_paths)
        for gallery in by_path.get(image_key(path), ())
    ]
    return torch.tensor(sorted(keys), dtype=torch.int64, device=device)


def _no_valid_query_error(
    query_pids: torch.Tensor, gallery_pids: torch.Tensor, same_camera_filter: bool
) -> ReidnetError:
    in_gallery = int(torch.isin(query_pids, gallery_pids).sum())
    if in_gallery == 0:
        return ReidnetError(
            f"no query has a true match: none of the {len(query_pids)} query identities appears "
            "in the gallery. Check that the query and gallery folders hold the same people (pids "
            "parsed from the file names) and that they are not swapped with the training folder"
        )
    if same_camera_filter:
        return ReidnetError(
            f"no query has a true match left: {in_gallery} queries have their identity in the "
            "gallery, but only from the query's own camera, and the Market-1501 protocol drops "
            "same-camera matches. For single-camera data set same_camera_filter=False (spec key "
            "evaluate.same_camera_filter=false), which only removes the query image itself"
        )
    return ReidnetError(
        "no query has a true match left: the only gallery image of each query identity is the "
        "query image itself. Add other images of these identities to the gallery"
    )
