"""pairwise_distance: squared Euclidean and cosine distances on hand-checked vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reidnet.errors import ReidnetError
from reidnet.evaluation import pairwise_distance


def test_squared_euclidean_without_normalisation():
    query = np.array([[0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    gallery = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    distances = pairwise_distance(query, gallery, normalize=False)
    # |(0,0)-(3,4)|^2 = 25, |(0,0)-(1,0)|^2 = 1, |(1,1)-(3,4)|^2 = 4 + 9, |(1,1)-(1,0)|^2 = 1
    torch.testing.assert_close(distances, torch.tensor([[25.0, 1.0], [13.0, 1.0]]))
    assert distances.dtype == torch.float32


def test_normalised_euclidean_is_two_minus_two_cosine():
    query = torch.tensor([[2.0, 0.0]])
    gallery = torch.tensor([[0.0, 5.0], [1.0, 0.0], [-3.0, 0.0]])
    distances = pairwise_distance(query, gallery)  # normalize=True by default
    torch.testing.assert_close(distances, torch.tensor([[2.0, 0.0, 4.0]]))


def test_cosine_distance():
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[0.0, 3.0], [-2.0, 0.0], [1.0, 1.0]])
    distances = pairwise_distance(query, gallery, metric="cosine", normalize=False)
    assert distances.dtype == torch.float64  # float64 in, float64 out
    torch.testing.assert_close(
        distances, torch.tensor([[1.0, 2.0, 1 - 1 / math.sqrt(2)]], dtype=torch.float64)
    )


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(0)
    query, gallery = rng.random((4, 8), dtype=np.float32), rng.random((6, 8), dtype=np.float32)
    torch.testing.assert_close(
        pairwise_distance(query, gallery),
        pairwise_distance(torch.from_numpy(query), torch.from_numpy(gallery)),
    )


def test_user_errors_are_explained():
    with pytest.raises(ReidnetError, match="same model"):
        pairwise_distance(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ReidnetError, match="unknown distance metric"):
        pairwise_distance(np.ones((2, 3)), np.ones((2, 3)), metric="manhattan")
    with pytest.raises(ReidnetError, match="2-D"):
        pairwise_distance(np.ones(3), np.ones((2, 3)))
