"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) with sparse neighbour sets.

Gives the numbers of the classic dense implementation (the ``re_ranking(q_g_dist, q_q_dist,
g_g_dist, k1, k2, lambda_value)`` code that torchreid and the strong baseline copy), but never
holds an N x N array for the N = Q + G images. One pass over tiles of the distance matrix (only
its upper triangle when it comes from features: it is symmetric) keeps each image's nearest
neighbours and maximum distance; the k-reciprocal encoding V is a sparse matrix with a few dozen
entries per row; and Jaccard distances are only formed for the Q x G block that is returned.
Memory grows with N * k plus the Q x G result. Runs on the input's device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch

from reidnet.errors import ReidnetError
from reidnet.evaluation.distance import ArrayLike, as_feature_pair, as_float_matrix

DEFAULT_MEMORY_BUDGET_GB = 16.0
MEMORY_BUDGET_ENV = "REIDNET_MEMORY_BUDGET_GB"

# Distances held per row block of the neighbour pass (128 MB in float32).
_BLOCK_ELEMENTS = 1 << 25
# Feature values gathered at once when computing the distances of sparse (row, column) pairs.
_PAIR_ELEMENTS = 1 << 24
# Index comparisons held at once while building the k-reciprocal sets.
_SET_ELEMENTS = 1 << 22
# Sparse entries gathered per step of the query expansion and of the Jaccard accumulation.
_SPARSE_STEP = 1 << 22


def k_reciprocal_rerank(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    memory_budget_gb: float | None = None,
) -> np.ndarray:
    """Re-ranked Q x G distances from features, as the strong baseline's ``re_ranking`` does.

    The original distance is the squared Euclidean distance of the features *as given*:
    normalise them first if your protocol does (reidnet's evaluation passes L2-normalised
    features). Equivalent to :func:`k_reciprocal_rerank_from_distances` given plain (non-squared)
    Euclidean distances, because the classic code squares its input matrices.

    Args:
        query_features: Q x D features (numpy or torch; CUDA tensors run on the GPU).
        gallery_features: G x D features on the same device.
        k1: size of the k-reciprocal neighbourhoods (paper default 20).
        k2: size of the local query expansion (default 6; 1 disables it).
        lambda_value: weight of the original distance in the result (default 0.3).
        memory_budget_gb: refuse to start when the estimated peak memory exceeds this many GB.
            Default: the ``REIDNET_MEMORY_BUDGET_GB`` environment variable, else 16.

    Returns:
        The Q x G re-ranked distance matrix as a numpy float32 array (always on the CPU); the
        computation runs in float32 like the classic code's.
    """
    query, gallery = as_feature_pair(query_features, gallery_features)
    query, gallery = query.detach(), gallery.detach()
    _check_parameters(k1, k2, lambda_value, len(query), len(gallery))
    _check_memory(len(query), len(gallery), query.shape[1], k1, k2, memory_budget_gb)
    features = torch.cat([query, gallery]).to(torch.float32)
    return _rerank(_FeatureDistances(features, len(query)), k1, k2, lambda_value)


def k_reciprocal_rerank_from_distances(
    q_g_dist: ArrayLike,
    q_q_dist: ArrayLike,
    g_g_dist: ArrayLike,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    memory_budget_gb: float | None = None,
) -> np.ndarray:
    """Re-ranked Q x G distances from the three distance matrices, as the classic code takes them.

    Like the classic implementation, the given distances are squared before use (so pass plain
    Euclidean distances to reproduce the feature-based variant), and row i of the normalised
    matrix is column i of ``[[q_q, q_g], [q_g.T, g_g]]`` divided by its maximum.

    Args:
        q_g_dist: Q x G query-gallery distances.
        q_q_dist: Q x Q query-query distances.
        g_g_dist: G x G gallery-gallery distances.
        k1, k2, lambda_value, memory_budget_gb: as in :func:`k_reciprocal_rerank`.

    Returns:
        The Q x G re-ranked distance matrix as a numpy float32 array.
    """
    q_g = as_float_matrix(q_g_dist, "q_g_dist").detach()
    q_q = as_float_matrix(q_q_dist, "q_q_dist").detach()
    g_g = as_float_matrix(g_g_dist, "g_g_dist").detach()
    num_query, num_gallery = q_g.shape
    expected = {"q_q_dist": (num_query, num_query), "g_g_dist": (num_gallery, num_gallery)}
    for name, matrix in (("q_q_dist", q_q), ("g_g_dist", g_g)):
        if tuple(matrix.shape) != expected[name]:
            raise ReidnetError(
                f"{name} has shape {tuple(matrix.shape)} but q_g_dist is {num_query} x "
                f"{num_gallery}, so {name} must be {expected[name][0]} x {expected[name][1]}"
            )
        if matrix.device != q_g.device:
            raise ReidnetError(f"{name} is on {matrix.device} but q_g_dist on {q_g.device}")
    _check_parameters(k1, k2, lambda_value, num_query, num_gallery)
    _check_memory(num_query, num_gallery, 0, k1, k2, memory_budget_gb)
    return _rerank(_MatrixDistances(q_g, q_q, g_g), k1, k2, lambda_value)


def estimate_rerank_memory_gb(
    num_query: int, num_gallery: int, feature_dim: int = 0, k1: int = 20, k2: int = 6
) -> float:
    """Upper estimate of the peak memory (GB, 1e9 bytes) of a re-ranking run, on its device.

    Counts the Q x G result, three copies of the features (stacked, and the two augmented
    operands of the distance tiles), the tiles being ranked, the neighbour lists, and the sparse
    encodings at the largest size the algorithm allows (every expansion accepted, no overlap;
    real runs hold 5-20 times fewer entries). The distance matrices given to the
    ``from_distances`` variant belong to the caller and are not counted.
    """
    num_all = num_query + num_gallery
    forward_k = k1 + 1
    half_k = int(np.around(k1 / 2)) + 1
    set_size = min(num_all, forward_k * (1 + half_k))
    expanded_size = min(num_all, max(k2, 1) * set_size)
    entry_bytes = 8 + 8 + 4  # row, column, value
    total = (
        4 * num_query * num_gallery
        + 3 * 4 * num_all * (feature_dim + 2)
        + 3 * 4 * min(_BLOCK_ELEMENTS, num_all * num_all)
        + 2 * 12 * num_all * max(forward_k, half_k, k2)
        + entry_bytes * num_all * set_size
        + 2 * entry_bytes * num_all * expanded_size
        + 10 * 8 * _SPARSE_STEP
    )
    return total / 1e9


class _FeatureDistances:
    """Squared Euclidean distances between the stacked query and gallery features."""

    def __init__(self, features: torch.Tensor, num_query: int) -> None:
        self.features = features
        self.squared_norms = features.pow(2).sum(1)
        # [x, |x|^2, 1] . [-2y, 1, |y|^2] = |x - y|^2: one matrix product gives a distance tile.
        ones = torch.ones_like(self.squared_norms)[:, None]
        self.left = torch.cat([features, self.squared_norms[:, None], ones], dim=1)
        self.right = torch.cat([-2 * features, ones, self.squared_norms[:, None]], dim=1)
        self.num_query = num_query
        self.num_all = len(features)
        self.device = features.device

    def tiles(self) -> Iterator[tuple[slice, slice, torch.Tensor, bool]]:
        """(rows, columns, distances, mirrored) over the upper triangle of the symmetric matrix."""
        size = max(1, min(self.num_all, math.isqrt(_BLOCK_ELEMENTS)))
        for row_start in range(0, self.num_all, size):
            rows = slice(row_start, min(row_start + size, self.num_all))
            for column_start in range(row_start, self.num_all, size):
                columns = slice(column_start, min(column_start + size, self.num_all))
                tile = torch.mm(self.left[rows], self.right[columns].T).clamp_min_(0)
                yield rows, columns, tile, column_start != row_start

    def pairs(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        distances = torch.empty(len(rows), dtype=torch.float32, device=self.device)
        step = max(1, _PAIR_ELEMENTS // self.features.shape[1])
        for start in range(0, len(rows), step):
            row, column = rows[start : start + step], columns[start : start + step]
            dot = torch.einsum(
                "ij,ij->i",
                self.features.index_select(0, row),
                self.features.index_select(0, column),
            )
            squared = self.squared_norms[row] + self.squared_norms[column] - 2 * dot
            distances[start : start + step] = squared.clamp_min_(0)
        return distances


class _MatrixDistances:
    """The classic code's inputs: its normalised row i is column i of the squared block matrix."""

    def __init__(self, q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor) -> None:
        dtype = torch.promote_types(torch.promote_types(q_g.dtype, q_q.dtype), g_g.dtype)
        self.q_g, self.q_q, self.g_g = q_g.to(dtype), q_q.to(dtype), g_g.to(dtype)
        self.num_query = len(q_q)
        self.num_all = len(q_q) + len(g_g)
        self.device = q_g.device

    def tiles(self) -> Iterator[tuple[slice, slice, torch.Tensor, bool]]:
        """(rows, all columns, distances, False) for consecutive row blocks."""
        size = max(1, min(self.num_all, _BLOCK_ELEMENTS // self.num_all))
        for start in range(0, self.num_all, size):
            rows = slice(start, min(start + size, self.num_all))
            yield rows, slice(0, self.num_all), self._rows(rows.start, rows.stop), False

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        num_query = self.num_query
        parts = []
        if start < num_query:
            columns = slice(start, min(stop, num_query))
            parts.append(torch.cat([self.q_q[:, columns].T, self.q_g[columns]], dim=1))
        if stop > num_query:
            columns = slice(max(start, num_query) - num_query, stop - num_query)
            parts.append(torch.cat([self.q_g[:, columns].T, self.g_g[:, columns].T], dim=1))
        return torch.cat(parts).square().to(torch.float32)

    def pairs(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        # Entry (row, column) of the transposed matrix is entry (column, row) of the block matrix.
        num_query = self.num_query
        row_is_query, column_is_query = rows < num_query, columns < num_query
        row_g, column_g = (rows - num_query).clamp_min(0), (columns - num_query).clamp_min(0)
        row_q, column_q = rows.clamp_max(num_query - 1), columns.clamp_max(num_query - 1)
        values = torch.where(
            column_is_query,
            torch.where(row_is_query, self.q_q[column_q, row_q], self.q_g[column_q, row_g]),
            torch.where(row_is_query, self.q_g[row_q, column_g], self.g_g[column_g, row_g]),
        )
        return values.square().to(torch.float32)


class _SparseRows:
    """A sparse matrix in row-major order: entries sorted by (row, column), with row offsets."""

    def __init__(
        self, rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, num_rows: int
    ) -> None:
        self.rows, self.columns, self.values = rows, columns, values
        counts = torch.bincount(rows, minlength=num_rows)
        self.offsets = torch.zeros(num_rows + 1, dtype=torch.int64, device=rows.device)
        self.offsets[1:] = counts.cumsum(0)

    def gather_rows(self, sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each source row, one index per entry: (position in `sources`, entry index)."""
        return _expand_ranges(self.offsets[sources], self.offsets[sources + 1])


def _rerank(
    source: _FeatureDistances | _MatrixDistances, k1: int, k2: int, lambda_value: float
) -> np.ndarray:
    num_all = source.num_all
    # The classic code slices initial_rank[:, :k], which silently shortens past N.
    forward_k = min(k1 + 1, num_all)
    half_k = min(int(np.around(k1 / 2)) + 1, num_all)
    expansion_k = min(k2, num_all)
    neighbours, nearest, row_max, result = _neighbour_pass(
        source, max(forward_k, half_k, expansion_k)
    )
    forward, half = neighbours[:, :forward_k], neighbours[:, :half_k]
    rows, columns = _expanded_sets(forward, _reciprocal(forward), half, _reciprocal(half))
    distances = _pair_distances(source, rows, columns, neighbours, nearest)
    weights = torch.exp(-(distances / row_max.index_select(0, rows)))
    row_sums = torch.zeros(num_all, dtype=weights.dtype, device=weights.device)
    row_sums.index_add_(0, rows, weights)
    encoding = _SparseRows(rows, columns, weights / row_sums.index_select(0, rows), num_all)
    if k2 != 1:
        encoding = _query_expansion(encoding, neighbours[:, :expansion_k])
    _blend_jaccard(result, encoding, source.num_query, lambda_value)
    return result.cpu().numpy()


def _neighbour_pass(
    source: _FeatureDistances | _MatrixDistances, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every image with their distances, every image's maximum distance,
    and the normalised Q x G block.

    Neighbours are ranked on the raw distances: dividing a row by its positive maximum keeps
    its order, so they are the classic code's nearest neighbours of the normalised matrix.
    """
    num_all, num_query, device = source.num_all, source.num_query, source.device
    best = torch.full((num_all, k), torch.inf, dtype=torch.float32, device=device)
    neighbours = torch.zeros((num_all, k), dtype=torch.int64, device=device)
    row_max = torch.full((num_all,), -torch.inf, dtype=torch.float32, device=device)
    original = torch.empty((num_query, num_all - num_query), dtype=torch.float32, device=device)

    def update(rows: slice, columns: slice, tile: torch.Tensor) -> None:
        row_max[rows] = torch.maximum(row_max[rows], tile.amax(1))
        nearest = tile.topk(min(k, tile.shape[1]), dim=1, largest=False, sorted=False)
        values = torch.cat([best[rows], nearest.values], dim=1)
        indices = torch.cat([neighbours[rows], nearest.indices + columns.start], dim=1)
        merged = values.topk(k, dim=1, largest=False, sorted=True)
        best[rows], neighbours[rows] = merged.values, indices.gather(1, merged.indices)
        if rows.start < num_query and columns.stop > num_query:
            query_rows = slice(rows.start, min(rows.stop, num_query))
            gallery_columns = slice(max(columns.start, num_query), columns.stop)
            original[query_rows, gallery_columns.start - num_query : columns.stop - num_query] = (
                tile[: query_rows.stop - rows.start, gallery_columns.start - columns.start :]
            )

    for rows, columns, tile, mirrored in source.tiles():
        update(rows, columns, tile)
        if mirrored:
            update(columns, rows, tile.T.contiguous())
    if not bool(torch.isfinite(row_max).all()) or bool((row_max <= 0).any()):
        raise ReidnetError(
            "re-ranking needs finite distances and, for every image, some other image at a "
            "positive distance; check the features for NaN and for all-identical vectors"
        )
    original /= row_max[:num_query, None]
    return neighbours, best, row_max, original


def _pair_distances(
    source: _FeatureDistances | _MatrixDistances,
    rows: torch.Tensor,
    columns: torch.Tensor,
    neighbours: torch.Tensor,
    nearest: torch.Tensor,
) -> torch.Tensor:
    """Distances of (row, column) pairs: from the neighbour lists, else recomputed.

    Most members of an expanded set (about 80% on Market-like data) are among the row's own
    nearest neighbours, whose distances the neighbour pass kept.
    """
    distances = torch.empty(len(rows), dtype=torch.float32, device=rows.device)
    found = torch.empty(len(rows), dtype=torch.bool, device=rows.device)
    step = max(1, _SET_ELEMENTS // neighbours.shape[1])
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        match = neighbours.index_select(0, rows[part]) == columns[part, None]
        found[part] = match.any(1)
        slot = match.to(torch.uint8).argmax(1)
        distances[part] = nearest.view(-1).index_select(0, rows[part] * nearest.shape[1] + slot)
    missing = (~found).nonzero().squeeze(1)
    if len(missing):
        distances[missing] = source.pairs(rows[missing], columns[missing])
    return distances


def _reciprocal(neighbours: torch.Tensor) -> torch.Tensor:
    """mask[i, j]: image i is also among the k nearest neighbours of its j-th neighbour."""
    num_all, k = neighbours.shape
    mask = torch.empty((num_all, k), dtype=torch.bool, device=neighbours.device)
    step = max(1, _SET_ELEMENTS // (k * k))
    for start in range(0, num_all, step):
        stop = min(start + step, num_all)
        backward = _take_rows(neighbours, neighbours[start:stop])
        own = torch.arange(start, stop, device=neighbours.device)[:, None, None]
        mask[start:stop] = (backward == own).any(2)
    return mask


def _expanded_sets(
    forward: torch.Tensor, forward_mask: torch.Tensor, half: torch.Tensor, half_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of every member of each image's expanded k-reciprocal set, sorted."""
    num_all, forward_k = forward.shape
    half_k = half.shape[1]
    step = max(1, _SET_ELEMENTS // (forward_k * half_k * forward_k))
    all_rows, all_columns = [], []
    for start in range(0, num_all, step):
        candidates, is_member = forward[start : start + step], forward_mask[start : start + step]
        members = torch.where(is_member, candidates, -1)
        # Each member's own (k1/2)-reciprocal set, joined when > 2/3 of it is already a member.
        candidate_mask = _take_rows(half_mask, candidates)
        candidate_half = _take_rows(half, candidates)
        candidate_sets = torch.where(candidate_mask, candidate_half, -2)
        overlap = (candidate_sets[..., None] == members[:, None, None, :]).any(3).sum(2)
        size = candidate_mask.sum(2).to(torch.float64)
        accepted = is_member & (overlap > 2.0 / 3 * size)
        joined = torch.where(accepted[..., None] & candidate_mask, candidate_half, -1)
        union = torch.cat([members, joined.flatten(1)], dim=1).sort(dim=1).values
        keep = union >= 0
        keep[:, 1:] &= union[:, 1:] != union[:, :-1]
        row, slot = keep.nonzero(as_tuple=True)
        all_rows.append(row + start)
        all_columns.append(union[row, slot])
    return torch.cat(all_rows), torch.cat(all_columns)


def _query_expansion(encoding: _SparseRows, nearest: torch.Tensor) -> _SparseRows:
    """Row i becomes the mean of the rows of its k2 nearest neighbours (itself included)."""
    num_all, k2 = nearest.shape
    device = nearest.device
    row_sizes = encoding.offsets[1:] - encoding.offsets[:-1]
    pieces = []
    for start, stop in _split_by_work(row_sizes[nearest].sum(1), _SPARSE_STEP):
        owner, entry = encoding.gather_rows(nearest[start:stop].reshape(-1))
        target_row = torch.div(owner, k2, rounding_mode="floor") + start
        keys, inverse = torch.unique(
            target_row * num_all + encoding.columns.index_select(0, entry),
            sorted=True,
            return_inverse=True,
        )
        sums = torch.zeros(len(keys), dtype=encoding.values.dtype, device=device)
        sums.index_add_(0, inverse, encoding.values.index_select(0, entry))
        pieces.append((keys, sums / k2))
    keys = torch.cat([piece[0] for piece in pieces])
    values = torch.cat([piece[1] for piece in pieces])
    return _SparseRows(keys // num_all, keys % num_all, values, num_all)


def _blend_jaccard(
    result: torch.Tensor, encoding: _SparseRows, num_query: int, lambda_value: float
) -> None:
    """result <- (1 - lambda) * Jaccard(V_query, V_gallery) + lambda * result, in place."""
    num_all = len(encoding.offsets) - 1
    num_gallery = num_all - num_query
    device = result.device
    # Inverted index: the gallery rows holding each column, with their values.
    first_gallery_entry = int(encoding.offsets[num_query])
    gallery_columns = encoding.columns[first_gallery_entry:]
    order = torch.argsort(gallery_columns, stable=True)
    index_rows = (encoding.rows[first_gallery_entry:] - num_query).index_select(0, order)
    index_values = encoding.values[first_gallery_entry:].index_select(0, order)
    column_offsets = torch.zeros(num_all + 1, dtype=torch.int64, device=device)
    column_offsets[1:] = torch.bincount(gallery_columns, minlength=num_all).cumsum(0)

    query_entries = slice(0, first_gallery_entry)
    query_columns = encoding.columns[query_entries]
    column_sizes = column_offsets[1:] - column_offsets[:-1]
    work = torch.zeros(num_query, dtype=torch.int64, device=device)
    work.index_add_(0, encoding.rows[query_entries], column_sizes.index_select(0, query_columns))
    max_rows = max(1, _BLOCK_ELEMENTS // (16 * max(num_gallery, 1)))
    for start, stop in _split_by_work(work, _SPARSE_STEP, max_rows):
        entries = slice(int(encoding.offsets[start]), int(encoding.offsets[stop]))
        columns = encoding.columns[entries]
        owner, position = _expand_ranges(column_offsets[columns], column_offsets[columns + 1])
        rows = encoding.rows[entries].index_select(0, owner) - start
        target = rows * num_gallery + index_rows.index_select(0, position)
        shared = torch.minimum(
            encoding.values[entries].index_select(0, owner), index_values.index_select(0, position)
        )
        overlap = torch.zeros((stop - start) * num_gallery, dtype=result.dtype, device=device)
        overlap.index_add_(0, target, shared)
        # The classic code's float32 operations, in place: 1 - o / (2 - o), then the blend.
        jaccard = overlap.div_(2 - overlap).neg_().add_(1).view(stop - start, num_gallery)
        blended = result[start:stop].mul_(lambda_value)
        blended.add_(jaccard.mul_(1 - lambda_value))


def _take_rows(matrix: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``matrix[indices]`` for a 2-D matrix and an index array of any shape (index_select is
    several times faster than advanced indexing on CPU)."""
    rows = matrix.index_select(0, indices.reshape(-1))
    return rows.view(*indices.shape, matrix.shape[1])


def _expand_ranges(begin: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten the index ranges [begin[i], end[i]): (i, index) for every index in every range."""
    lengths = end - begin
    owner = torch.repeat_interleave(torch.arange(len(begin), device=begin.device), lengths)
    skip = (lengths.cumsum(0) - lengths - begin)[owner]
    return owner, torch.arange(len(owner), device=begin.device) - skip


def _split_by_work(
    work: torch.Tensor, budget: int, max_rows: int | None = None
) -> list[tuple[int, int]]:
    """Consecutive (start, stop) row ranges whose summed work stays near `budget`."""
    cumulative = work.cpu().numpy().cumsum()
    ranges, start = [], 0
    while start < len(cumulative):
        done = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, done + budget, side="right"))
        stop = max(stop, start + 1)
        if max_rows is not None:
            stop = min(stop, start + max_rows)
        ranges.append((start, stop))
        start = stop
    return ranges


def _check_parameters(
    k1: int, k2: int, lambda_value: float, num_query: int, num_gallery: int
) -> None:
    if num_query == 0 or num_gallery == 0:
        raise ReidnetError(
            f"re-ranking needs at least one query and one gallery image; got {num_query} queries "
            f"and {num_gallery} gallery images"
        )
    if int(k1) != k1 or k1 < 1 or int(k2) != k2 or k2 < 1:
        raise ReidnetError(
            f"re_ranking.k1 and re_ranking.k2 must be positive integers; got k1={k1}, k2={k2}"
        )
    if not 0.0 <= lambda_value <= 1.0:
        raise ReidnetError(f"re_ranking.lambda_value must lie in [0, 1]; got {lambda_value}")


def _check_memory(
    num_query: int,
    num_gallery: int,
    feature_dim: int,
    k1: int,
    k2: int,
    memory_budget_gb: float | None,
) -> None:
    if memory_budget_gb is None:
        setting = os.environ.get(MEMORY_BUDGET_ENV)
        try:
            memory_budget_gb = float(setting) if setting else DEFAULT_MEMORY_BUDGET_GB
        except ValueError as error:
            raise ReidnetError(
                f"environment variable {MEMORY_BUDGET_ENV}={setting!r} is not a number of GB"
            ) from error
    needed = estimate_rerank_memory_gb(num_query, num_gallery, feature_dim, k1, k2)
    if needed > memory_budget_gb:
        raise ReidnetError(
            f"k-reciprocal re-ranking of {num_query:,} queries x {num_gallery:,} gallery images "
            f"needs up to {needed:.1f} GB, over the memory budget of {memory_budget_gb:g} GB. "
            f"Raise memory_budget_gb (or the {MEMORY_BUDGET_ENV} environment variable) if the "
            "machine has the memory, or evaluate without re-ranking (re_ranking.re_ranking=false)"
        )
