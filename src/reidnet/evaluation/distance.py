"""Query-gallery distance matrices for retrieval evaluation.

One matrix product on the features' own device: CUDA features give a CUDA distance matrix, which
`rank_metrics` then evaluates on the GPU without a copy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from reidnet.errors import ReidnetError

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    """`values` as a torch tensor (numpy arrays are shared, not copied)."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise ReidnetError(
                f"{name} must be a numpy array or a torch tensor; got {type(values).__name__}"
            ) from error
    return tensor


def as_float_matrix(values: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D floating tensor: float32 and float64 stay as they are, other types become float32."""
    tensor = as_tensor(values, name)
    if tensor.ndim != 2:
        raise ReidnetError(f"{name} must be a 2-D array; got shape {tuple(tensor.shape)}")
    if tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(torch.float32)
    return tensor


def pairwise_distance(
    query_features: ArrayLike,
    gallery_features: ArrayLike,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    normalize: bool = True,
) -> torch.Tensor:
    """Distance between every query and every gallery feature, as a Q x G tensor.

    Args:
        query_features: Q x D features (numpy array or torch tensor, any device).
        gallery_features: G x D features, same device as the queries.
        metric: ``"euclidean"`` gives the *squared* Euclidean distance
            ``||q||^2 + ||g||^2 - 2 q.g`` clamped at 0 (torchreid's ``euclidean_squared_distance``;
            it ranks exactly like the plain Euclidean distance). ``"cosine"`` gives
            ``1 - cos(q, g)``.
        normalize: L2-normalise the features first (the Market-1501 protocol does). With
            normalised features the squared Euclidean distance equals ``2 - 2 cos``.

    Returns:
        A Q x G tensor on the features' device: float64 when either input is float64, otherwise
        float32 (half-precision features are computed in float32).
    """
    query, gallery = as_feature_pair(query_features, gallery_features)
    dtype = torch.promote_types(query.dtype, gallery.dtype)
    query, gallery = query.to(dtype), gallery.to(dtype)
    if normalize or metric == "cosine":
        query = torch.nn.functional.normalize(query, dim=1)
        gallery = torch.nn.functional.normalize(gallery, dim=1)
    if metric == "euclidean":
        # [q, |q|^2, 1] . [-2g, 1, |g|^2] = |q - g|^2: one matrix product, no Q x G temporaries.
        query_norms, gallery_norms = (
            query.pow(2).sum(1, keepdim=True),
            gallery.pow(2).sum(1, keepdim=True),
        )
        left = torch.cat([query, query_norms, torch.ones_like(query_norms)], dim=1)
        right = torch.cat([-2 * gallery, torch.ones_like(gallery_norms), gallery_norms], dim=1)
        return torch.mm(left, right.T).clamp_min_(0)
    if metric == "cosine":
        return torch.mm(query, gallery.T).neg_().add_(1)
    raise ReidnetError(f"unknown distance metric {metric!r}: use 'euclidean' or 'cosine'")


def as_feature_pair(query_features: ArrayLike, gallery_features: ArrayLike):
    """Query and gallery features as float matrices of one width on one device, else an error."""
    query = as_float_matrix(query_features, "query_features")
    gallery = as_float_matrix(gallery_features, "gallery_features")
    if query.shape[1] != gallery.shape[1]:
        raise ReidnetError(
            f"query features have {query.shape[1]} dimensions but gallery features have "
            f"{gallery.shape[1]}: both must come from the same model"
        )
    if query.device != gallery.device:
        raise ReidnetError(
            f"query features are on {query.device} but gallery features on {gallery.device}; "
            "move both to the same device"
        )
    return query, gallery
