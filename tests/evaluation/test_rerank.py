"""k-reciprocal re-ranking gives the numbers of a small dense implementation of the classic code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reidnet.evaluation.rerank as rerank_module
from reidnet.errors import ReidnetError
from reidnet.evaluation import (
    estimate_rerank_memory_gb,
    k_reciprocal_rerank,
    k_reciprocal_rerank_from_distances,
    rank_metrics,
)


def dense_classic_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    """Zhong et al.'s re-ranking with dense N x N arrays, as the classic code computes it.

    The three matrices are squared, cast to float32, and row i of the working matrix is column i
    of [[q_q, q_g], [q_g.T, g_g]] divided by that column's maximum.
    """
    num_query = len(q_q)
    full = np.power(np.block([[q_q, q_g], [q_g.T, g_g]]), 2).astype(np.float32)
    dist = (full / full.max(axis=0)).T
    num_all = len(dist)
    rank = np.argsort(dist, axis=1)
    half = int(np.around(k1 / 2)) + 1

    def reciprocal(index, k):
        return [j for j in rank[index, :k] if index in rank[j, :k]]

    encoding = np.zeros_like(dist)
    for index in range(num_all):
        members = reciprocal(index, k1 + 1)
        expanded = list(members)
        for candidate in members:
            candidate_set = reciprocal(candidate, half)
            if len(set(candidate_set) & set(members)) > 2.0 / 3 * len(candidate_set):
                expanded += candidate_set
        expanded = np.unique(expanded)
        weight = np.exp(-dist[index, expanded])
        encoding[index, expanded] = weight / weight.sum()
    if k2 != 1:
        encoding = np.stack([encoding[rank[index, :k2]].mean(axis=0) for index in range(num_all)])
    jaccard = np.empty((num_query, num_all), dtype=np.float32)
    for index in range(num_query):
        shared = np.minimum(encoding[index], encoding).sum(axis=1)  # over columns, all rows
        jaccard[index] = 1 - shared / (2 - shared)
    final = jaccard * (1 - lambda_value) + dist[:num_query] * lambda_value
    return final[:, num_query:]


def euclidean(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0))


@pytest.fixture(scope="module")
def clustered():
    """60 queries and 240 gallery images around 40 identity centres (N = 300)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    query_pids, gallery_pids = rng.integers(0, 40, 60), rng.integers(0, 40, 240)
    query = (centres[query_pids] + 0.7 * rng.standard_normal((60, 32))).astype(np.float32)
    gallery = (centres[gallery_pids] + 0.7 * rng.standard_normal((240, 32))).astype(np.float32)
    distances = (euclidean(query, gallery), euclidean(query, query), euclidean(gallery, gallery))
    return query, gallery, query_pids, gallery_pids, distances


@pytest.fixture(scope="module")
def classic_default(clustered):
    *_, distances = clustered
    return dense_classic_rerank(*distances, k1=20, k2=6, lambda_value=0.3)


PARAMETERS = [(20, 6, 0.3), (10, 3, 0.5), (5, 1, 0.0), (7, 2, 1.0), (1, 1, 0.3)]


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), PARAMETERS)
def test_features_variant_equals_the_classic_algorithm(clustered, k1, k2, lambda_value):
    query, gallery, *_, distances = clustered
    expected = dense_classic_rerank(*distances, k1, k2, lambda_value)
    result = k_reciprocal_rerank(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value)
    assert result.dtype == np.float32 and result.shape == (60, 240)
    np.testing.assert_allclose(result, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), PARAMETERS[:3])
def test_distances_variant_equals_the_classic_algorithm(clustered, k1, k2, lambda_value):
    *_, distances = clustered
    expected = dense_classic_rerank(*distances, k1, k2, lambda_value)
    result = k_reciprocal_rerank_from_distances(*distances, k1=k1, k2=k2, lambda_value=lambda_value)
    np.testing.assert_allclose(result, expected, rtol=0, atol=2e-6)


def test_same_metrics_as_the_classic_algorithm(clustered, classic_default):
    query, gallery, query_pids, gallery_pids, _ = clustered
    ours = k_reciprocal_rerank(torch.from_numpy(query), torch.from_numpy(gallery))
    # One camera per side so that every match counts.
    ids = (query_pids, gallery_pids, np.zeros(60, dtype=int), np.ones(240, dtype=int))
    expected, result = rank_metrics(classic_default, *ids), rank_metrics(ours, *ids)
    assert result.mAP == pytest.approx(expected.mAP, abs=1e-6)
    np.testing.assert_allclose(result.cmc, expected.cmc, atol=1e-6)
    # Re-ranking this clustered data helps, as it should.
    plain = rank_metrics(euclidean(query, gallery), *ids)
    assert result.mAP > plain.mAP


def test_small_blocks_and_steps_give_the_same_result(monkeypatch, clustered, classic_default):
    # Many distance tiles (mirrored ones straddling the query/gallery border) and many sparse
    # steps exercise the chunk boundaries.
    monkeypatch.setattr(rerank_module, "_BLOCK_ELEMENTS", 97 * 97)
    monkeypatch.setattr(rerank_module, "_SET_ELEMENTS", 5000)
    monkeypatch.setattr(rerank_module, "_SPARSE_STEP", 3000)
    monkeypatch.setattr(rerank_module, "_PAIR_ELEMENTS", 32 * 10)
    query, gallery, *_ = clustered
    np.testing.assert_allclose(k_reciprocal_rerank(query, gallery), classic_default, atol=2e-6)


def test_memory_budget_is_checked_before_starting(clustered, monkeypatch):
    query, gallery, *_ = clustered
    with pytest.raises(ReidnetError, match=r"memory budget of 0\.0001 GB"):
        k_reciprocal_rerank(query, gallery, memory_budget_gb=0.0001)
    monkeypatch.setenv("REIDNET_MEMORY_BUDGET_GB", "0.0001")
    with pytest.raises(ReidnetError, match="REIDNET_MEMORY_BUDGET_GB"):
        k_reciprocal_rerank_from_distances(*clustered[-1])


def test_memory_estimate_grows_with_n_k_plus_the_output():
    market = estimate_rerank_memory_gb(3368, 15913, 2048)
    msmt = estimate_rerank_memory_gb(11659, 82161, 2048)
    # Output Q x G float32: 0.21 GB for Market, 3.8 GB for MSMT17. The classic code's dense
    # N x N arrays take 8.4 GB for Market; MSMT17 must fit in the default 16 GB budget.
    assert 0.21 < market < 8.4 / 3
    assert 3.8 < msmt < 16.0


def test_parameters_are_validated(clustered):
    query, gallery, *_ = clustered
    with pytest.raises(ReidnetError, match="lambda_value"):
        k_reciprocal_rerank(query, gallery, lambda_value=1.5)
    with pytest.raises(ReidnetError, match="k1"):
        k_reciprocal_rerank(query, gallery, k1=0)
    with pytest.raises(ReidnetError, match="g_g_dist"):
        q_g, q_q, g_g = clustered[-1]
        k_reciprocal_rerank_from_distances(q_g, q_q, g_g[:10])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_give_the_cpu_result(clustered, classic_default):
    query, gallery, *_ = clustered
    on_gpu = k_reciprocal_rerank(torch.from_numpy(query).cuda(), torch.from_numpy(gallery).cuda())
    np.testing.assert_allclose(on_gpu, classic_default, atol=1e-5)
