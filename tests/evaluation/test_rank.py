"""rank_metrics: the Market-1501 protocol on hand-checked examples and against a per-query loop."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import reidnet.evaluation.rank as rank_module
from reidnet.errors import ReidnetError
from reidnet.evaluation import RankResult, rank_metrics

# Three queries x six gallery images, worked out on paper.
#
# gallery  g0      g1      g2      g3           g4      g5
# pid      1       1       2       0 (distr.)   1       3
# camera   1       2       2       3            3       1
#
# q0 (pid 1, cam 1): distances 0.1 0.4 0.3 0.2 0.6 0.5
#   by distance: g0 .1, g3 .2, g2 .3, g1 .4, g5 .5, g4 .6
#   g0 has pid 1 and camera 1 -> removed. Kept: g3 -, g2 -, g1 +, g5 -, g4 +
#   hits at ranks 3 and 5: AP = (1/3 + 2/5) / 2 = 11/30, INP = 2/5, first hit at rank 3
#   trapezoid: hit 0 at rank 3: (0/2 + 1/3) / 2 = 1/6; hit 1 at rank 5: (1/4 + 2/5) / 2 = 13/40
#              AP = (1/6 + 13/40) / 2 = 59/240
# q1 (pid 2, cam 1): distances 0.5 0.6 0.1 0.2 0.3 0.4
#   g2 (pid 2, camera 2) is nearest: AP = 1, INP = 1, rank 1; trapezoid (1 + 1) / 2 = 1
# q2 (pid 3, cam 2): distances 0.2 0.1 0.4 0.5 0.6 0.3
#   by distance: g1 -, g0 -, g5 + (pid 3, camera 1): AP = 1/3, INP = 1/3, first hit at rank 3
#   trapezoid: (0/2 + 1/3) / 2 = 1/6
#
# mAP = (11/30 + 1 + 1/3) / 3 = 51/90      mINP = (2/5 + 1 + 1/3) / 3 = 26/45
# CMC: first hits at ranks 3, 1, 3 -> rank-1 = rank-2 = 1/3, rank-3.. = 1
# trapezoid mAP = (59/240 + 1 + 1/6) / 3 = 339/720
GALLERY_PIDS = np.array([1, 1, 2, 0, 1, 3])
GALLERY_CAMS = np.array([1, 2, 2, 3, 3, 1])
QUERY_PIDS = np.array([1, 2, 3])
QUERY_CAMS = np.array([1, 1, 2])
DISTMAT = np.array(
    [
        [0.1, 0.4, 0.3, 0.2, 0.6, 0.5],
        [0.5, 0.6, 0.1, 0.2, 0.3, 0.4],
        [0.2, 0.1, 0.4, 0.5, 0.6, 0.3],
    ]
)


def evaluate(distmat=DISTMAT, **options) -> RankResult:
    options.setdefault("max_rank", 5)
    return rank_metrics(distmat, QUERY_PIDS, GALLERY_PIDS, QUERY_CAMS, GALLERY_CAMS, **options)


def test_hand_computed_example():
    result = evaluate()
    assert result.mAP == pytest.approx(51 / 90, abs=1e-12)
    assert result.mINP == pytest.approx(26 / 45, abs=1e-12)
    np.testing.assert_allclose(result.cmc, [1 / 3, 1 / 3, 1, 1, 1], atol=1e-12)
    assert (result.num_valid_queries, result.num_skipped_queries) == (3, 0)
    assert result.cmc.dtype == np.float64 and len(result.cmc) == 5


def test_trapezoid_ap_is_the_official_market_value():
    result = evaluate(ap="trapezoid")
    assert result.mAP == pytest.approx(339 / 720, abs=1e-12)
    assert result.ap_method == "trapezoid"
    # CMC and mINP do not depend on the AP flavour.
    np.testing.assert_allclose(result.cmc, evaluate().cmc)
    assert result.mINP == pytest.approx(26 / 45, abs=1e-12)


def test_as_dict_and_rank():
    result = evaluate(max_rank=10)
    metrics = result.as_dict()
    assert list(metrics) == [
        "mAP",
        "rank-1",
        "rank-5",
        "rank-10",
        "mINP",
        "num_valid_queries",
        "num_skipped_queries",
    ]
    assert metrics["rank-1"] == pytest.approx(1 / 3) and metrics["rank-5"] == 1.0
    assert all(isinstance(metrics[key], float) for key in ("mAP", "rank-1", "mINP"))
    assert metrics["num_valid_queries"] == 3
    assert result.rank(3) == 1.0
    with pytest.raises(ReidnetError, match="max_rank"):
        result.rank(11)


def test_same_camera_matches_are_removed_not_counted():
    # Without the rule q0's nearest image g0 (same pid, same camera) counts as a hit:
    # q0: hits at 1, 4, 6 -> AP = (1/1 + 2/4 + 3/6) / 3 = 2/3; q1 and q2 are unchanged.
    result = evaluate(same_camera_filter=False)
    assert result.mAP == pytest.approx((2 / 3 + 1 + 1 / 3) / 3, abs=1e-12)
    np.testing.assert_allclose(result.cmc, [2 / 3, 2 / 3, 1, 1, 1], atol=1e-12)
    # q0's INP becomes 3 hits / rank 6.
    assert result.mINP == pytest.approx((3 / 6 + 1 + 1 / 3) / 3, abs=1e-12)


def test_without_camera_rule_the_query_image_itself_is_removed_by_path():
    query_paths = ["g/0.jpg", "q/1.jpg", "q/2.jpg"]  # q0 is gallery image g0
    gallery_paths = [f"g/{index}.jpg" for index in range(6)]
    result = evaluate(
        same_camera_filter=False, query_paths=query_paths, gallery_paths=gallery_paths
    )
    # Only g0 leaves q0's list, as under the camera rule: the hand-computed values again.
    assert result.mAP == pytest.approx(51 / 90, abs=1e-12)
    assert result.mINP == pytest.approx(26 / 45, abs=1e-12)


@pytest.mark.parametrize("strategy_threshold", [0.0, float("inf")])
def test_the_query_image_is_removed_even_when_its_pid_disagrees(monkeypatch, strategy_threshold):
    monkeypatch.setattr(rank_module, "_COMPARISONS_PER_DISTANCE", strategy_threshold)
    # q0's file is listed in the gallery as g3 (pid 0): only that entry leaves q0's list.
    # q0 then ranks g0 + (1), g2 - (2), g1 + (3), g5 - (4), g4 + (5): AP = (1 + 2/3 + 3/5) / 3.
    query_paths = ["g/3.jpg", "q/1.jpg", "q/2.jpg"]
    gallery_paths = [f"g/{index}.jpg" for index in range(6)]
    result = evaluate(
        same_camera_filter=False, query_paths=query_paths, gallery_paths=gallery_paths
    )
    assert result.mAP == pytest.approx((34 / 45 + 1 + 1 / 3) / 3, abs=1e-12)


def test_distractors_are_negatives():
    # A distractor (pid 0) nearest to the query pushes its true match to rank 2.
    result = rank_metrics(
        np.array([[0.1, 0.2]]),
        np.array([5]),
        np.array([0, 5]),
        np.array([1]),
        np.array([2, 2]),
        max_rank=2,
    )
    assert result.mAP == 0.5
    np.testing.assert_allclose(result.cmc, [0.0, 1.0])


def test_skipped_queries_are_counted_and_left_out_of_the_means():
    distmat = np.vstack([DISTMAT, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
    # q3: pid 4 is not in the gallery; q4: pid 3's only gallery image is in q4's camera 1.
    result = rank_metrics(
        distmat,
        np.append(QUERY_PIDS, [4, 3]),
        GALLERY_PIDS,
        np.append(QUERY_CAMS, [1, 1]),
        GALLERY_CAMS,
        max_rank=5,
    )
    assert (result.num_valid_queries, result.num_skipped_queries) == (3, 2)
    assert result.mAP == pytest.approx(51 / 90, abs=1e-12)
    assert result.as_dict()["num_skipped_queries"] == 2


def test_single_camera_data_gets_a_clear_error_and_an_option():
    cams = np.ones(6, dtype=int)
    with pytest.raises(ReidnetError, match="same_camera_filter=False") as error:
        rank_metrics(DISTMAT, QUERY_PIDS, GALLERY_PIDS, np.ones(3, dtype=int), cams)
    assert "own camera" in str(error.value)
    # The option: nothing removed -> the values of test_same_camera_matches_are_removed_not_counted.
    result = rank_metrics(
        DISTMAT, QUERY_PIDS, GALLERY_PIDS, None, None, max_rank=5, same_camera_filter=False
    )
    assert result.mAP == pytest.approx((2 / 3 + 1 + 1 / 3) / 3, abs=1e-12)


def test_no_query_identity_in_the_gallery_is_explained():
    with pytest.raises(ReidnetError, match="appears in the gallery"):
        rank_metrics(DISTMAT, np.array([7, 8, 9]), GALLERY_PIDS, QUERY_CAMS, GALLERY_CAMS)


def test_distance_ties_are_broken_by_gallery_order():
    # Equal distances: the stable order puts g0 (negative) before g1 (hit), and g2 (hit) last.
    result = rank_metrics(
        np.full((1, 3), 0.5),
        np.array([1]),
        np.array([2, 1, 1]),
        np.array([1]),
        np.array([2, 2, 2]),
        max_rank=3,
    )
    assert result.mAP == pytest.approx((1 / 2 + 2 / 3) / 2, abs=1e-12)
    assert result.mINP == pytest.approx(2 / 3, abs=1e-12)


def test_max_rank_beyond_the_gallery_pads_the_curve_and_says_so_once(caplog):
    """Padding is said once, at DEBUG: the 50-rank CMC is fixed, not a user's max_rank, so a
    warning about it misled users who had set re_ranking.max_rank."""
    with caplog.at_level(logging.DEBUG, logger="reidnet.evaluation.rank"):
        result = evaluate(max_rank=9, chunk_size=1)
    np.testing.assert_allclose(result.cmc, [1 / 3, 1 / 3] + [1.0] * 7, atol=1e-12)
    said = [r for r in caplog.records if "ranks beyond" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.DEBUG


def test_nan_distances_are_refused():
    distmat = DISTMAT.copy()
    distmat[1, 4] = np.nan
    with pytest.raises(ReidnetError, match="NaN"):
        evaluate(distmat)


def test_bad_shapes_name_the_argument():
    with pytest.raises(ReidnetError, match="gallery_pids"):
        rank_metrics(DISTMAT, QUERY_PIDS, GALLERY_PIDS[:5], QUERY_CAMS, GALLERY_CAMS)
    with pytest.raises(ReidnetError, match="query_camids"):
        rank_metrics(DISTMAT, QUERY_PIDS, GALLERY_PIDS, None, GALLERY_CAMS)


# --- agreement with a straightforward per-query loop on random data --------------------------


def loop_reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """The textbook per-query loop: stable argsort, drop same pid + camera, AP/CMC/INP."""
    aps, inps, cmcs = [], [], []
    for index in range(len(distmat)):
        order = np.argsort(distmat[index], kind="stable")
        same_pid = g_pids[order] == q_pids[index]
        hits = same_pid[~(same_pid & (g_cams[order] == q_cams[index]))]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmcs.append((np.arange(1, max_rank + 1) >= ranks[0]).astype(float))
    return np.mean(aps), np.mean(cmcs, axis=0), np.mean(inps), len(aps)


def random_case(seed, ties=False):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 50, 200
    distmat = rng.random((num_query, num_gallery))
    if ties:  # few distinct values: many ties between hits and negatives
        distmat = np.round(distmat * 4) / 4
    return (
        distmat,
        rng.integers(0, 12, num_query),
        rng.integers(0, 12, num_gallery),
        rng.integers(0, 4, num_query),
        rng.integers(0, 4, num_gallery),
    )


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("strategy", ["compare", "sort"])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_matches_the_per_query_loop_for_every_chunk_size_and_strategy(
    monkeypatch, ties, strategy, chunk_size
):
    # Both internal strategies (compare the entries before the last hit, or sort whole rows).
    threshold = float("inf") if strategy == "compare" else 0.0
    monkeypatch.setattr(rank_module, "_COMPARISONS_PER_DISTANCE", threshold)
    case = random_case(seed=3, ties=ties)
    result = rank_metrics(*case, max_rank=20, chunk_size=chunk_size)
    mean_ap, cmc, mean_inp, num_valid = loop_reference(*case, max_rank=20)
    assert result.mAP == pytest.approx(mean_ap, abs=1e-12)
    np.testing.assert_allclose(result.cmc, cmc, atol=1e-12)
    assert result.mINP == pytest.approx(mean_inp, abs=1e-12)
    assert result.num_valid_queries == num_valid


def test_float32_and_float64_distances_agree():
    distmat, *ids = random_case(seed=5)
    as_float32 = distmat.astype(np.float32)
    single = rank_metrics(as_float32, *ids)
    double = rank_metrics(as_float32.astype(np.float64), *ids)
    assert single.mAP == double.mAP and single.mINP == double.mINP
    np.testing.assert_array_equal(single.cmc, double.cmc)


def test_numpy_and_torch_inputs_agree():
    distmat, *ids = random_case(seed=6)
    from_numpy = rank_metrics(distmat, *ids)
    from_torch = rank_metrics(torch.from_numpy(distmat), *map(torch.from_numpy, ids))
    assert from_numpy.mAP == from_torch.mAP
    np.testing.assert_array_equal(from_numpy.cmc, from_torch.cmc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_distances_agree_with_cpu():
    distmat, *ids = random_case(seed=7)
    on_cpu = rank_metrics(distmat, *ids)
    on_gpu = rank_metrics(torch.from_numpy(distmat).cuda(), *ids)
    assert on_cpu.mAP == pytest.approx(on_gpu.mAP, abs=1e-12)
    np.testing.assert_allclose(on_cpu.cmc, on_gpu.cmc)
