"""Retrieval evaluation: distances, Market-1501 metrics, k-reciprocal re-ranking and plots.

Importing this package loads torch and numpy only; the plot functions import matplotlib when
called.
"""

from reidnet.evaluation.distance import pairwise_distance
from reidnet.evaluation.plots import plot_cmc, plot_sampled_matches, plot_training_curves
from reidnet.evaluation.rank import RankResult, rank_metrics
from reidnet.evaluation.rerank import (
    estimate_rerank_memory_gb,
    k_reciprocal_rerank,
    k_reciprocal_rerank_from_distances,
)

__all__ = [
    "RankResult",
    "estimate_rerank_memory_gb",
    "k_reciprocal_rerank",
    "k_reciprocal_rerank_from_distances",
    "pairwise_distance",
    "plot_cmc",
    "plot_sampled_matches",
    "plot_training_curves",
    "rank_metrics",
]
